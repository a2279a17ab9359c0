"""The Fine-tune tab: one run (DBA, direct or mixture) on a bundled domain or an upload, with every DBA knob, drawn
live."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from dba.data import ACCEPTED_LAYOUTS, BUNDLED_DOMAINS
from dba.errors import DBAError

from .. import limits, tasks, uploads, views
from ..page import UPLOAD
from ..settings import eval_every_for
from .common import PLOT, Ctx, guard, optional


def build(ctx: Ctx) -> SimpleNamespace:
    p, lim = ctx.preset.run, ctx.settings.limits
    boost, corr, anneal = p.dba.boost, p.dba.correction, p.dba.anneal
    t = SimpleNamespace()
    with gr.Tab("3 · Fine-tune", id="finetune"):
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                t.domain = gr.Dropdown(list(BUNDLED_DOMAINS) + [UPLOAD], value="finance", label="Domain data")
                with gr.Accordion("Upload domain data", open=False):
                    t.file = gr.File(label=f"{' '.join(uploads.CORPUS_EXTENSIONS)}, used when Domain data = "
                                           f"“{UPLOAD}” — rows: {ACCEPTED_LAYOUTS}",
                                     file_types=list(uploads.CORPUS_EXTENSIONS), type="filepath", height=110)
                    t.check = gr.Markdown()
                t.method = gr.Radio(["dba", "direct", "mixture"], value="dba", label="Method",
                                    info="direct = domain only; mixture = domain + general share r")
                t.steps = gr.Slider(1, ctx.cap(1000, lim.max_steps), value=min(p.steps, ctx.cap(1000, lim.max_steps)),
                                    step=1, label="Steps T")
                t.bs = gr.Slider(1, ctx.cap(64, lim.max_batch), value=min(p.batch_size, ctx.cap(64, lim.max_batch)),
                                 step=1, label="Batch size")
                t.lr = gr.Number(value=anneal.lr, label="Peak learning rate η₀",
                                 info="annealed towards 0 over the run (AL)")
                with gr.Row():
                    t.eval_every = gr.Number(value=eval_every_for(ctx.preset), precision=0,
                                             label="Score every N steps", info="0 = start and end only")
                    items = p.eval_items or (lim.max_eval_items if ctx.public else 0)
                    t.eval_items = gr.Number(value=items, precision=0, label="Quiz questions",
                                             info="per eval set" + ("" if ctx.public else "; 0 = all"))
                t.ratio = gr.Slider(0.0, 1.0, value=p.mixture_ratio, step=0.125, label="Mixture: general share r",
                                    info="only for method = mixture")
                with gr.Accordion("DBA knobs (start values = the preset's)", open=False):
                    t.boost_mode = gr.Radio(["convex", "additive", "projection"], value=boost.mode,
                                            label="Boost (GGB) form", info="convex: γĝ+(1−γ)g_D (paper); "
                                            "projection: drop the conflicting part")
                    with gr.Row():
                        # text fields: empty is a value of its own here (the library's None), not "missing"
                        t.k0 = gr.Textbox("" if boost.k0 is None else f"{boost.k0:g}", label="k₀",
                                          info="empty = the rule k₀ = min(c/T, cap)")
                        t.k0_max = gr.Textbox("" if boost.k0_max is None else f"{boost.k0_max:g}",
                                              label="cap on k₀ for short runs", info="empty = no cap")
                    t.decay = gr.Radio(["linear", "constant", "cosine"], value=boost.decay, label="γ_t decay")
                    t.scale = gr.Radio(["raw", "relative"], value=boost.scale, label="Anchor scale",
                                       info="relative: rescale ĝ to ‖g_D‖ each step")
                    t.dc = gr.Radio(["paper", "conservative", "off"], value=corr.function,
                                    label="DC function λ=f(ρ)", info="paper: step grows on conflict; conservative: "
                                    "shrinks")
                    with gr.Row():
                        t.beta = gr.Number(value=corr.beta, label="DC strength β")
                        t.lam_min = gr.Number(value=corr.lam_min, label="λ min")
                        t.lam_max = gr.Number(value=corr.lam_max, label="λ max")
                    t.schedule = gr.Radio(["cosine", "linear", "constant"], value=anneal.schedule,
                                          label="Annealing schedule")
                    t.ablate = gr.CheckboxGroup(["GGB", "DC", "AL"], value=[], label="Switch off (ablation)")
                    t.seed = gr.Number(value=p.seed, precision=0, label="Seed")
                with gr.Row():
                    t.run = gr.Button("▶ Start fine-tuning", variant="primary")
            with gr.Column(scale=2):
                t.md = gr.Markdown("The live view of the run appears here once it starts.")
                t.scores = gr.Plot(label="S_G and S_D over steps", elem_id="ft-scores", **PLOT)
                with gr.Row():
                    t.loss = gr.Plot(label="Training loss", elem_id="ft-loss", **PLOT)
                    t.dcplot = gr.Plot(label="DC curve with the current ρ", elem_id="ft-dc", **PLOT)
                t.rho = gr.Plot(label="ρ_t, λ_t, γ_t and the applied learning rate", elem_id="ft-rho", **PLOT)
    t.outputs = [t.md, t.scores, t.loss, t.dcplot, t.rho]
    wire(ctx, t)
    return t


def config_from(ctx: Ctx, ws, domain, file, method, steps, batch_size, lr, eval_every, eval_items, ratio,
                boost_mode, k0, k0_max, decay, scale, dc, beta, lam_min, lam_max, schedule, ablate, seed):
    """The run's config: the preset's with the form applied; numbers checked (public mode: within the server's
    limits), the domain resolved, the rest validated by the library."""
    s, num = ctx.settings, limits.number
    if method not in ("dba", "direct", "mixture"):
        raise DBAError(f"Unknown method {method!r}; choose dba, direct or mixture.")
    run = dict(method=method, domain=ctx.page.domain_source(ws, domain, file), steps=limits.check_steps(s, steps),
               batch_size=limits.check_batch(s, batch_size),
               eval_every=limits.whole(eval_every or 0, "Score every N steps", lo=0),
               eval_items=limits.check_eval_items(s, eval_items), mixture_ratio=num(ratio, "The mixture share r"),
               seed=limits.whole(seed or 0, "The seed", lo=0))
    return tasks.train_config(
        ws, ctx.preset, ws.new_run_dir(method), ablate=tuple(ablate or ()),
        boost=dict(mode=boost_mode, k0=optional(k0, "k₀"), k0_max=optional(k0_max, "The cap on k₀"), decay=decay,
                   scale=scale),
        correction=dict(function=dc, beta=num(beta, "DC strength β"), lam_min=num(lam_min, "λ min"),
                        lam_max=num(lam_max, "λ max")),
        anneal=dict(lr=limits.check_lr(s, lr), schedule=schedule), **run)


def wire(ctx: Ctx, t: SimpleNamespace) -> None:
    page = ctx.page

    @guard
    def check_domain_upload(sid, file, request: gr.Request):
        return page.corpus_upload(sid, file, request, note="; selected as the domain data.")

    t.file.upload(check_domain_upload, [ctx.sid, t.file], [t.check, t.domain], api_name="check_domain_upload")

    @guard
    def start_finetune(sid, domain, file, method, steps, batch_size, lr, eval_every, eval_items, ratio, boost_mode,
                       k0, k0_max, decay, scale, dc, beta, lam_min, lam_max, schedule, ablate, seed,
                       request: gr.Request):
        ws = page.ws(sid, request)
        cfg = config_from(ctx, ws, domain, file, method, steps, batch_size, lr, eval_every, eval_items, ratio,
                          boost_mode, k0, k0_max, decay, scale, dc, beta, lam_min, lam_max, schedule, ablate, seed)
        note = ""
        if cfg.method == "dba":
            note = " with the session's ĝ_G" if cfg.anchor else f" (ĝ_G estimated first: {cfg.anchor_batches} batches)"
        title = f"Fine-tune {tasks.run_label(cfg)}{note} · {Path(str(cfg.domain)).stem} · {cfg.steps} steps"
        return page.started(page.start(ws, "finetune", title, tasks.finetune_job(ws, cfg)))

    inputs = [t.domain, t.file, t.method, t.steps, t.bs, t.lr, t.eval_every, t.eval_items, t.ratio, t.boost_mode,
              t.k0, t.k0_max, t.decay, t.scale, t.dc, t.beta, t.lam_min, t.lam_max, t.schedule, t.ablate, t.seed]
    t.run.click(start_finetune, [ctx.sid, *inputs], [ctx.job_html], api_name="start_finetune")


def render(ctx: Ctx, t: SimpleNamespace, job, ws, runs: list[dict], moved: set[str]) -> dict:
    figs = views.training_figures(runs, want=moved)
    out = {t.md: views.finetune_md(job, runs, show=lambda d: ctx.page.show(ws, d))}
    for name, comp in dict(loss=t.loss, rho=t.rho, dc=t.dcplot, scores=t.scores).items():
        if name in figs:
            out[comp] = figs[name]
    return out
