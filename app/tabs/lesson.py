"""The "Start here" tab: one click runs the teaching preset (direct vs DBA, narrated) and draws it live."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from dba.data import BUNDLED_DOMAINS
from dba.errors import DBAError

from .. import tasks, teaching, views
from .common import PLOT, Ctx, guard


def build(ctx: Ctx) -> SimpleNamespace:
    p, s = ctx.preset.run, ctx.settings
    size = f"LoRA rank {p.lora.rank}" if p.lora is not None else "full fine-tuning"
    items = f"{p.eval_items} quiz questions per set" if p.eval_items else "every quiz question"
    t = SimpleNamespace()
    with gr.Tab("Start here: see forgetting", id="teach", elem_id="tab-teach"):
        gr.Markdown(
            "**One click, one lesson.** The Studio fine-tunes the model on a domain twice — the usual way "
            "(*direct*) and with *DBA* — with the same data, seed and steps, and tells you what to look at "
            f"while it runs. Preset **{s.preset_name}**: {p.steps} steps, batch {p.batch_size}, {size}, η₀ "
            f"{p.dba.anneal.lr:g}, {items}{f' ({ctx.preset.duration})' if ctx.preset.duration else ''}. The "
            "model is the one chosen in the Model tab.")
        with gr.Row(equal_height=True):
            t.domain = gr.Dropdown(list(BUNDLED_DOMAINS), value="finance", label="Domain to learn", scale=2)
            t.run = gr.Button("▶ Run the lesson: direct vs DBA", variant="primary", scale=3, elem_id="teach-run")
        with gr.Row():
            with gr.Column(scale=2):
                t.md = gr.Markdown("Press **Run the lesson** — the story of the run appears here.",
                                   elem_id="teach-narration")
            with gr.Column(scale=3):
                t.scores = gr.Plot(label="S_G and S_D over steps", elem_id="teach-scores", **PLOT)
                t.loss = gr.Plot(label="Training loss", elem_id="teach-loss", **PLOT)
        with gr.Row():
            t.rho = gr.Plot(label="DBA: similarity ρ and step multiplier λ", elem_id="teach-rho", **PLOT)
            t.dc = gr.Plot(label="DBA: the dynamic-correction curve λ = f(ρ), current ρ marked", elem_id="teach-dc",
                           **PLOT)
        with gr.Row():
            t.plane = gr.Plot(label="The score plane (S_D → learned, S_G ↑ kept)", elem_id="teach-plane", **PLOT)
            gr.Markdown(teaching.READING_GUIDE, elem_classes=["dba-help"])
    t.outputs = [t.md, t.scores, t.plane, t.loss, t.rho, t.dc]
    wire(ctx, t)
    return t


def wire(ctx: Ctx, t: SimpleNamespace) -> None:
    page = ctx.page

    @guard
    def start_teaching(sid, domain, request: gr.Request):
        ws = page.ws(sid, request)
        if domain not in BUNDLED_DOMAINS:
            raise DBAError(f"Choose one of the bundled domains: {', '.join(BUNDLED_DOMAINS)}.")
        ws.model.check()
        job = page.start(ws, "teach", f"Lesson: direct vs DBA on {domain}", tasks.teach_job(ws, domain))
        return page.started(job), "\n\n".join(job.notes) or tasks.teach_intro(ws, domain)

    t.run.click(start_teaching, [ctx.sid, t.domain], [ctx.job_html, t.md], api_name="start_teaching")


def render(ctx: Ctx, t: SimpleNamespace, job, ws, runs: list[dict], moved: set[str]) -> dict:
    """The lesson's narration and live figures (only those whose data moved)."""
    figs = views.training_figures(runs, want=moved)
    if "plane" in moved:
        figs["plane"] = views.plane_figure(runs)
    out = {t.md: "\n\n".join(job.notes) or "starting…"}
    for name, comp in dict(loss=t.loss, rho=t.rho, dc=t.dc, scores=t.scores, plane=t.plane).items():
        if name in figs:
            out[comp] = figs[name]
    return out
