"""The Global gradient tab: estimate ĝ_G on the bundled general corpus or an upload, or load a saved anchor."""
from __future__ import annotations

import html
import shutil
from types import SimpleNamespace

import gradio as gr

from dba.data import ACCEPTED_LAYOUTS
from dba.errors import DBAError
from dba.global_gradient import GlobalGradient

from .. import limits, tasks, uploads, views
from ..page import UPLOAD
from .common import PLOT, Ctx, guard


def build(ctx: Ctx) -> SimpleNamespace:
    p, lim = ctx.preset.run, ctx.settings.limits
    t = SimpleNamespace()
    with gr.Tab("2 · Global gradient", id="anchor"):
        gr.Markdown("**Stage 1 of DBA.** Average the gradient of the general loss over a few batches with "
                    "the weights frozen (\"zero-learning-rate training\"). The result ĝ_G is stored as a "
                    "low-rank SVD and reused by every DBA run of this model.")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                t.source = gr.Radio(["general", UPLOAD], value="general", label="General corpus",
                                    info="the bundled general set, or your own file")
                with gr.Accordion("Upload a general corpus", open=False):
                    t.file = gr.File(label=f"{' '.join(uploads.CORPUS_EXTENSIONS)} — rows: {ACCEPTED_LAYOUTS}",
                                     height=110,
                                     file_types=list(uploads.CORPUS_EXTENSIONS), type="filepath")
                    t.check = gr.Markdown()
                t.batches = gr.Slider(1, ctx.cap(128, lim.max_anchor_batches), value=p.anchor_batches, step=1,
                                      label="Batches", info="more batches = a steadier average, linear cost")
                t.bs = gr.Slider(1, ctx.cap(32, lim.max_batch), value=p.batch_size, step=1, label="Batch size")
                t.energy = gr.Slider(0.5, 1.0, value=p.anchor_energy or 1.0, step=0.01, label="Energy kept by the SVD",
                                     info="each matrix keeps the smallest rank with this share of ‖Ĝ‖²")
                t.run = gr.Button("▶ Compute the global gradient", variant="primary")
                with gr.Accordion("…or load a saved anchor", open=False):
                    t.load_file = gr.File(label="anchor .safetensors (from this page or `dba anchor`)",
                                          file_types=[".safetensors"], type="filepath", height=110)
            with gr.Column(scale=2):
                t.md = gr.Markdown("Compute (or load) a global gradient: its size, ranks and spectrum appear here.")
                t.plot = gr.Plot(label="Spectrum and energy kept", elem_id="gg-spectrum", **PLOT)
                t.download = gr.File(label="Download the anchor", interactive=False, height=80)
    t.outputs = [t.md, t.plot, t.download]
    wire(ctx, t)
    return t


def wire(ctx: Ctx, t: SimpleNamespace) -> None:
    page, s = ctx.page, ctx.settings

    @guard
    def check_general_upload(sid, file, request: gr.Request):
        return page.corpus_upload(sid, file, request)

    t.file.upload(check_general_upload, [ctx.sid, t.file], [t.check, t.source], api_name="check_general_upload")

    @guard
    def start_anchor(sid, source, file, batches, batch_size, energy, request: gr.Request):
        ws = page.ws(sid, request)
        if source == UPLOAD:
            if not file:
                raise DBAError("Choose a general corpus file to upload first (or use the bundled one).")
            corpus = str(page.accept(ws, "corpus", file)[0])
        else:
            corpus = "general"
        energy = limits.number(energy, "The energy kept")
        if not 0 < energy <= 1:
            raise DBAError(f"The energy kept is a share between 0 and 1, got {energy:g}.")
        ws.model.check()
        cfg = tasks.anchor_config(ctx.preset, corpus=corpus, batches=limits.check_anchor_batches(s, batches),
                                  batch_size=limits.check_batch(s, batch_size), energy=energy)
        job = page.start(ws, "anchor", f"Global gradient of {ws.model.name} ({cfg.batches} batches)",
                         tasks.anchor_job(ws, cfg))
        return page.started(job)

    t.run.click(start_anchor, [ctx.sid, t.source, t.file, t.batches, t.bs, t.energy], [ctx.job_html],
                api_name="start_anchor")

    @guard
    def load_anchor(sid, file, request: gr.Request):
        ws = page.ws(sid, request)
        if not file:
            raise DBAError("Choose a saved anchor (.safetensors) first.")
        stored, _ = page.accept(ws, "anchor", file)
        job = page.start(ws, "anchor", f"Check the saved anchor {stored.name} against {ws.model.name}",
                         tasks.check_anchor_job(ws, stored))
        return page.started(job), "Checking the anchor against the model… (its summary appears here)"

    t.load_file.upload(load_anchor, [ctx.sid, t.load_file], [ctx.job_html, t.md], api_name="load_anchor")


def render(ctx: Ctx, t: SimpleNamespace, job, ws, runs, moved) -> dict:
    res = job.result
    if not res.get("summary"):
        error = f"\n\n⚠ {html.escape(job.error)}" if job.error else ""
        return {t.md: f"**{html.escape(job.title)}** — {job.state}: {html.escape(job.message)}{error}"}
    if "final" not in moved:
        return {}
    out = {t.md: views.anchor_summary_md(res["summary"], res.get("anchor"))}
    try:
        out[t.plot] = views.spectrum_figure(GlobalGradient.load(res["anchor"]))
    except DBAError as e:
        out[t.md] += f"\n\n(spectrum unavailable: {e})"
    # the download is a copy in the session's export folder: Gradio hands it out from its own cache, never from
    # the runs folder
    copy = ws.exports / f"anchor-{job.id}.safetensors"
    if not copy.exists():
        shutil.copyfile(res["anchor"], copy)
    out[t.download] = str(copy)
    return out
