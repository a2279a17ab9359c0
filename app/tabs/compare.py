"""The Compare tab: the forgetting experiment (direct, a mixture sweep, DBA and its ablations on one budget), run
live or loaded back from one of the session's comparison folders."""
from __future__ import annotations

import html
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from dba.compare import DEFAULT_METHODS, METHODS, plan_runs
from dba.data import BUNDLED_DOMAINS
from dba.errors import DBAError

from .. import limits, tasks, views
from .common import PLOT, Ctx, guard, parse_ratios


def build(ctx: Ctx) -> SimpleNamespace:
    p, lim = ctx.preset.run, ctx.settings.limits
    t = SimpleNamespace()
    with gr.Tab("4 · Compare", id="compare"):
        gr.Markdown("**The forgetting experiment**: direct, a mixture sweep, DBA and its ablations on the same "
                    "model, data, seed and budget, sharing one ĝ_G (`dba compare`). Or load one of this session's "
                    "comparisons.")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                t.domain = gr.Dropdown(list(BUNDLED_DOMAINS), value="finance", label="Domain")
                t.methods = gr.CheckboxGroup(list(METHODS), value=list(DEFAULT_METHODS), label="Methods")
                t.ratios = gr.Textbox(", ".join(f"{r:g}" for r in ctx.preset.ratios),
                                      label="Mixture ratios (general share per batch)")
                with gr.Row():
                    t.steps = gr.Number(value=p.steps, precision=0, label="Steps"
                                        + (f" (≤ {lim.max_steps})" if ctx.public else ""))
                    t.bs = gr.Number(value=p.batch_size, precision=0, label="Batch size")
                with gr.Row():
                    t.lr = gr.Number(value=p.dba.anneal.lr, label="η₀ (every method)")
                    t.eval_items = gr.Number(value=p.eval_items or (lim.max_eval_items if ctx.public else 0),
                                             precision=0, label="Quiz questions")
                if ctx.public:
                    gr.Markdown(f"On this server a comparison runs at most {lim.max_runs} fine-tunes (each "
                                "mixture ratio is one): pick fewer methods or ratios.", elem_classes=["dba-help"])
                t.run = gr.Button("▶ Run the comparison", variant="primary")
                gr.Markdown("---")
                t.folder = gr.Dropdown([], label="Past comparison of this session", allow_custom_value=True)
                with gr.Row():
                    t.refresh = gr.Button("↻ Refresh list", size="sm")
                    t.load = gr.Button("Load", size="sm", variant="secondary")
            with gr.Column(scale=2):
                t.md = gr.Markdown()
                t.table = gr.Dataframe(label="results.csv", interactive=False, wrap=True,
                                       headers=["method", "label", "ratio", "status", "s_d", "s_g", "s", "d_s_d",
                                                "d_s_g", "d_s", "tokens", "wall_seconds"])
                t.bars = gr.Plot(label="S per method, with cost", elem_id="cmp-bars", **PLOT)
                with gr.Row():
                    t.plane = gr.Plot(label="Trajectories in the (S_D, S_G) plane", elem_id="cmp-plane", **PLOT)
                t.over = gr.Plot(label="S_G and S_D over steps", elem_id="cmp-over", **PLOT)
    t.outputs = [t.md, t.table, t.bars, t.plane, t.over]
    wire(ctx, t)
    return t


def wire(ctx: Ctx, t: SimpleNamespace) -> None:
    page, s = ctx.page, ctx.settings

    @guard
    def start_compare(sid, domain, methods, ratios, steps, batch_size, lr, eval_items, request: gr.Request):
        ws = page.ws(sid, request)
        if not methods:
            raise DBAError("Choose at least one method to compare.")
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise DBAError(f"Unknown method(s) {', '.join(map(str, unknown))}; choose from {', '.join(METHODS)}.")
        cfg = tasks.compare_config(
            ws, ctx.preset, ws.new_run_dir(f"compare-{domain}"), domain=page.domain_source(ws, domain, None),
            methods=tuple(methods), ratios=parse_ratios(ratios),
            lr=limits.check_lr(s, lr) if lr not in (None, "") else None, steps=limits.check_steps(s, steps),
            batch_size=limits.check_batch(s, batch_size), eval_items=limits.check_eval_items(s, eval_items))
        limits.check_runs(s, len(plan_runs(cfg)))
        job = page.start(ws, "compare", f"Compare {len(methods)} methods on {domain}", tasks.compare_job(ws, cfg))
        return page.started(job)

    t.run.click(start_compare, [ctx.sid, t.domain, t.methods, t.ratios, t.steps, t.bs, t.lr, t.eval_items],
                [ctx.job_html], api_name="start_compare")

    @guard
    def load_compare(sid, folder, request: gr.Request):
        ws = page.ws(sid, request)
        path = page.resolve(ws, folder or ws.compare_dir, "comparison folder")
        if not views.is_compare_folder(path):
            raise DBAError(f"{page.show(ws, path)} is not a comparison folder (no results.csv or compare.json).")
        table, bars, plane, over, summary = views.compare_outputs(path)
        return summary or f"Loaded `{page.show(ws, path)}`.", table, bars, plane, over

    t.load.click(load_compare, [ctx.sid, t.folder], t.outputs, api_name="load_compare")

    def list_compares(sid, request: gr.Request):
        return gr.update(choices=page.compare_choices(page.ws(sid, request)))

    t.refresh.click(list_compares, [ctx.sid], [t.folder], api_name="list_compares")


def render(ctx: Ctx, t: SimpleNamespace, job, ws, runs: list[dict], moved: set[str]) -> dict:
    folder = job.result.get("compare_dir")
    md = f"**{html.escape(job.title)}** — {job.state}: {html.escape(job.message)}"
    out: dict = {}
    if folder and Path(folder, "results.csv").exists() and not job.active:
        if "final" in moved:
            table, bars, plane, over, summary = views.compare_outputs(folder)
            out.update({t.table: table, t.bars: bars, t.plane: plane, t.over: over})
            out[t.md] = (summary or md) + "".join(f"\n\n⚠ {w}" for w in job.result.get("warnings") or [])
        return out
    if "plane" in moved:
        out[t.plane] = views.plane_figure(runs)
    if "scores" in moved:
        out[t.over] = views.training_figures(runs, want={"scores"})["scores"]
    out[t.md] = md
    return out
