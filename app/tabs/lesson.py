"""The "Start here" tab: the five-minute lesson (:mod:`dba.lesson`) — direct fine-tuning beside a remedy, S_G and S_D
with error bars over steps, the models' own answers side by side, and a plain-words summary. A recorded lesson
(shipped in the repo) is shown instantly, clearly labelled; the live run is one click away."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from dba.data import BUNDLED_DOMAINS
from dba.errors import DBAError
from dba.lesson import LESSON_REMEDY, answers_markdown, figures, plot_runs, remedy_choices

from .. import teaching, views
from .common import PLOT, Ctx, guard

NO_ANSWERS = "*The models' answers appear here when the lesson has run (or press **Show the recorded lesson**).*"


def recorded_outputs(record: dict) -> tuple:
    """What the tab shows for a finished lesson record (recorded or live): banner-free narration, answers and the
    five figures, all from the record (the same drawing code for both)."""
    runs = plot_runs(record)
    figs = figures(record)
    figs.update(views.training_figures(runs, want={"rho", "dc"}))
    narration = teaching.intro_of(record) + "\n\n" + ((record.get("summary") or {}).get("text") or "")
    return (narration, answers_markdown(record), figs["scores"], figs["plane"], figs["loss"], figs["rho"],
            figs["dc"])


def build(ctx: Ctx) -> SimpleNamespace:
    s = ctx.settings
    from dba.config import preset

    p = preset(s.lesson_preset_name)
    run = p.run
    size = f"LoRA rank {run.lora.rank}" if run.lora is not None else "full fine-tuning"
    items = f"{run.eval_items} quiz questions per set" if run.eval_items else "every quiz question"
    t = SimpleNamespace()
    start = None
    if s.lesson_opens_on_recorded and teaching.RECORDED_LESSON.exists():
        try:
            record = teaching.recorded_lesson()
            start = (teaching.recorded_banner(record),) + recorded_outputs(record)
        except DBAError:
            start = None
    with gr.Tab("Start here: see forgetting", id="teach", elem_id="tab-teach"):
        gr.Markdown(
            "**One click, one lesson.** The Studio fine-tunes the model on a domain twice — the usual way "
            f"(*direct*) and with a remedy (default *{LESSON_REMEDY}*, the best-scoring DBA variant measured; none "
            "held in the study — pick *l2sp* or *ewc* to see a remedy that does) — with the same data, seed and "
            "steps, scores both "
            "with error bars as they go, and asks every model the same plain questions. Lesson preset "
            f"**{s.lesson_preset_name}**: {run.steps} steps, batch {run.batch_size}, {size}, η₀ "
            f"{run.dba.anneal.lr:g}, {items}{f' ({p.duration})' if p.duration else ''}. The model is the one "
            "chosen in the Model tab. The base model's scores and the global gradient are computed once and "
            "cached, so a repeated lesson starts at the runs.")
        with gr.Row(equal_height=True):
            t.domain = gr.Dropdown(list(BUNDLED_DOMAINS), value="finance", label="Domain to learn", scale=2)
            t.remedy = gr.Dropdown(remedy_choices(), value=LESSON_REMEDY, label="Remedy beside direct", scale=2,
                                   elem_id="teach-remedy")
            t.run = gr.Button("▶ Run the lesson live", variant="primary", scale=3, elem_id="teach-run")
            t.show = gr.Button("Show the recorded lesson", variant="secondary", scale=2, elem_id="teach-recorded")
        t.banner = gr.Markdown(start[0] if start else "", elem_id="teach-banner")
        with gr.Row():
            with gr.Column(scale=2):
                t.md = gr.Markdown(start[1] if start else "Press **Run the lesson live** — the story of the run "
                                   "appears here — or **Show the recorded lesson** to see one at once.",
                                   elem_id="teach-narration")
            with gr.Column(scale=3):
                t.scores = gr.Plot(start[3] if start else None, label="S_G and S_D over steps",
                                   elem_id="teach-scores", **PLOT)
                gr.Markdown("### In its own words", elem_classes=["dba-help"])
                t.answers = gr.Markdown(start[2] if start else NO_ANSWERS, elem_id="teach-answers")
        with gr.Row():
            t.plane = gr.Plot(start[4] if start else None, label="The score plane (S_D → learned, S_G ↑ kept)",
                              elem_id="teach-plane", **PLOT)
            t.loss = gr.Plot(start[5] if start else None, label="Training loss", elem_id="teach-loss", **PLOT)
        with gr.Row():
            t.rho = gr.Plot(start[6] if start else None, label="DBA: similarity ρ and step multiplier λ",
                            elem_id="teach-rho", **PLOT)
            t.dc = gr.Plot(start[7] if start else None, label="DBA: the dynamic-correction curve λ = f(ρ)",
                           elem_id="teach-dc", **PLOT)
        gr.Markdown(teaching.READING_GUIDE, elem_classes=["dba-help"])
    t.outputs = [t.banner, t.md, t.answers, t.scores, t.plane, t.loss, t.rho, t.dc]
    wire(ctx, t)
    return t


def wire(ctx: Ctx, t: SimpleNamespace) -> None:
    page = ctx.page

    @guard
    def start_teaching(sid, domain, remedy, request: gr.Request):
        ws = page.ws(sid, request)
        if domain not in BUNDLED_DOMAINS:
            raise DBAError(f"Choose one of the bundled domains: {', '.join(BUNDLED_DOMAINS)}.")
        ws.model.check()
        work, cfg = teaching.lesson_job(ws, domain, remedy or LESSON_REMEDY)  # LessonConfig refuses a bad one
        job = page.start(ws, "teach", f"Lesson: direct vs {cfg.remedy} on {domain}", work)
        return (page.started(job), "**LIVE LESSON** — running now; the figures follow it.",
                "\n\n".join(job.notes) or teaching.intro(cfg), NO_ANSWERS)

    t.run.click(start_teaching, [ctx.sid, t.domain, t.remedy], [ctx.job_html, t.banner, t.md, t.answers],
                api_name="start_teaching")

    @guard
    def show_recorded():
        record = teaching.recorded_lesson()
        return (teaching.recorded_banner(record),) + recorded_outputs(record)

    t.show.click(show_recorded, [], t.outputs, api_name="show_recorded_lesson")


def render(ctx: Ctx, t: SimpleNamespace, job, ws, runs: list[dict], moved: set[str]) -> dict:
    """The live lesson: narration, answers and figures (only those whose data moved), from the job's live record."""
    record = job.result.get("lesson")
    out = {t.md: "\n\n".join(job.notes) or "starting…"}
    state = {"completed": "**LIVE LESSON** — finished", "failed": "**LIVE LESSON** — failed",
             "cancelled": "**LIVE LESSON** — cancelled"}.get(job.state, "**LIVE LESSON** — running now")
    line = teaching.cache_line(record) if record else ""
    out[t.banner] = state + (f" · {line}" if line else "")
    if not record:
        return out
    out[t.answers] = answers_markdown(record) if any(r.get("answers") for r in record.get("runs") or []) \
        or (record.get("base") or {}).get("answers") else NO_ANSWERS
    want = set()
    if moved & {"scores", "plane", "final"}:
        want |= {"scores", "plane"}
    if moved & {"loss", "final"}:
        want.add("loss")
    figs = figures(record, want=tuple(want)) if want else {}
    figs.update(views.training_figures(runs, want=moved & {"rho", "dc"}))
    for name, comp in dict(scores=t.scores, plane=t.plane, loss=t.loss, rho=t.rho, dc=t.dc).items():
        if name in figs:
            out[comp] = figs[name]
    return out
