"""The header, the job bar that follows the session's background job, and the session and polling endpoints:
``init_session`` (page load), ``poll`` (every two seconds), ``job_status``, ``wait_job`` and ``cancel_job``."""
from __future__ import annotations

import html
import time
from types import SimpleNamespace

import gradio as gr
import torch

from .. import views
from ..jobs import REGISTRY
from .common import Ctx, guard

POLL_SECONDS = 2.0
"""How often the page asks for news of its job."""
REDRAW_SECONDS = 4.0
"""Live figures are redrawn at most this often while a job runs (drawing competes with training for the CPU)."""


def device_line() -> str:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        n = torch.cuda.device_count()
        return f"GPU: {name}" + (f" ×{n}" if n > 1 else "")
    return f"CPU ({torch.get_num_threads()} threads) — no GPU found; runs are CPU-sized"


def header(settings) -> None:
    mode = '<span class="dba-badge">public server: sizes are limited</span>' if settings.public else ""
    gr.HTML(f"""<div id="dba-header"><h1>DBA Studio</h1>
<p>Fine-tune a language model on a new domain <i>without forgetting</i> what it knew — Dynamic Boosted Annealing,
step by step, live.</p>
<span class="dba-badge">{html.escape(device_line())}</span>
<span class="dba-badge">start model: {html.escape(settings.model)}</span>
<span class="dba-badge">preset: {html.escape(settings.preset_name)}</span>{mode}</div>""")


def build() -> SimpleNamespace:
    """The job bar row (call inside the Blocks, above the tabs)."""
    t = SimpleNamespace()
    with gr.Row(equal_height=True):
        with gr.Column(scale=8):
            t.html = gr.HTML(views.job_bar(None), elem_id="job-bar")
        with gr.Column(scale=1, min_width=150):
            t.cancel = gr.Button("■ Cancel job", variant="stop", size="md", elem_id="cancel-job")
            t.refresh = gr.Button("↻", size="sm", visible=False)
    t.json = gr.JSON(visible=False)
    t.wait_timeout = gr.Number(value=60, visible=False)
    t.wait = gr.Button(visible=False)
    return t


def wire_session(ctx: Ctx, browser_key: gr.BrowserState, seen: gr.State, tabs: dict, demo: gr.Blocks) -> None:
    """Page load: settle the session key (a key this server issued, else a new one), fill the forms from the
    session's state."""
    page = ctx.page
    model, chat, export, compare = tabs["model"], tabs["chat"], tabs["export"], tabs["compare"]

    def init_session(stored, request: gr.Request):
        key = page.sessions.settle(stored, getattr(request, "session_hash", None))
        ws = page.ws(key, request)
        m = ws.model
        runs = page.run_choices(ws)
        first = runs[0][1] if runs else None
        return (key, key, None, m.name, m.quantization, m.lora_rank, m.device,
                gr.update(choices=runs, value=first), gr.update(choices=runs, value=first),
                gr.update(choices=page.compare_choices(ws)))

    demo.load(init_session, inputs=[browser_key],
              outputs=[ctx.sid, browser_key, seen, *model.inputs, chat.run, export.run, compare.folder],
              api_name="init_session", api_visibility="undocumented")

    def list_runs(sid, request: gr.Request):
        runs = page.run_choices(page.ws(sid, request))
        first = runs[0][1] if runs else None
        return gr.update(choices=runs, value=first), gr.update(choices=runs, value=first)

    for btn, name in ((chat.refresh, "list_runs"), (export.refresh, "list_runs_export")):
        btn.click(list_runs, [ctx.sid], [chat.run, export.run], api_name=name)


def wire_jobs(ctx: Ctx, bar: SimpleNamespace, seen: gr.State, renderers: dict, outputs: list) -> None:
    """Polling, status, wait and cancel. ``renderers`` maps a job kind to ``render(job, ws, runs, moved)``."""
    page = ctx.page
    timer = gr.Timer(POLL_SECONDS)

    def poll(sid, seen_value, request: gr.Request):
        ws = page.ws(sid, request)
        job = REGISTRY.current(ws.id)
        out = {bar.html: views.job_bar(job)}
        if job is None:
            return out
        seen_value = dict(seen_value or {})
        same = seen_value.get("id") == job.id
        version = job.version  # read before drawing: a change made while drawing is drawn by the next poll
        if same and seen_value.get("version") == version:
            return out
        now = time.time()
        if same and job.active and now - seen_value.get("t", 0) < REDRAW_SECONDS:
            return out
        try:
            runs = views.job_runs(job)
            sig = views.signatures(runs, job)
            last = seen_value.get("sig", {}) if same else {}
            moved = {k for k in sig if sig[k] != last.get(k)}
            render = renderers.get(job.kind)
            if render is not None:
                out.update(render(job, ws, runs, moved))
            seen_value["sig"] = sig
        except Exception as e:  # noqa: BLE001 -- a drawing problem must not stop the polling
            out[bar.html] = views.job_bar(job) + f'<div class="dba-error">display problem: {html.escape(str(e))}</div>'
        if not job.active and seen_value.get("ended") != job.id:
            # a pop-up only for a page that watched the job run (not on every reload afterwards); the job bar
            # keeps the error in any case
            if same and job.state == "failed" and job.error:
                gr.Warning(job.error, duration=None)
            elif same and job.state == "completed":
                gr.Info(f"{job.title}: finished")
            seen_value["ended"] = job.id
        seen_value.update(id=job.id, version=version, t=now)
        out[seen] = seen_value
        return out

    timer.tick(poll, inputs=[ctx.sid, seen], outputs=[bar.html, seen, *outputs], api_name="poll",
               show_progress="hidden", concurrency_limit=None, api_visibility="undocumented")

    def job_status(sid, request: gr.Request):
        job = REGISTRY.current(page.ws(sid, request).id)
        return job.snapshot() if job else views.EMPTY_JOB

    bar.refresh.click(job_status, [ctx.sid], [bar.json], api_name="job_status", concurrency_limit=None)

    def wait_job(sid, timeout, request: gr.Request):
        """Block until the session's job ends (or ``timeout`` seconds pass: at most 10 minutes, 1 in public mode);
        returns its status."""
        sid_ = page.ws(sid, request).id
        try:
            seconds = min(max(float(timeout or 60), 0.0), 60.0 if ctx.public else 600.0)
        except (TypeError, ValueError):
            seconds = 60.0
        REGISTRY.wait(sid_, seconds)
        job = REGISTRY.current(sid_)
        return job.snapshot() if job else views.EMPTY_JOB

    bar.wait.click(wait_job, [ctx.sid, bar.wait_timeout], [bar.json], api_name="wait_job", concurrency_limit=None)

    @guard
    def cancel_job(sid, request: gr.Request):
        job = REGISTRY.cancel(page.ws(sid, request).id)
        if job is None or not job.cancel.is_set():
            gr.Info("No job is running.")
        return views.job_bar(job)

    bar.cancel.click(cancel_job, [ctx.sid], [bar.html], api_name="cancel_job", concurrency_limit=None)
