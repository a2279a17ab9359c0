"""The Model tab: which base model, quantisation, LoRA rank and device every job of the session uses. In public mode
the model list is fixed (:attr:`StudioSettings.allowed_models`); "Load and inspect" is a job like the others."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .. import limits, tasks, views
from ..session import ModelChoice
from ..settings import lora_rank_of
from .common import Ctx, guard


def build(ctx: Ctx) -> SimpleNamespace:
    s, rank0 = ctx.settings, lora_rank_of(ctx.preset)
    t = SimpleNamespace()
    with gr.Tab("1 · Model", id="model"):
        gr.Markdown("Choose the base model and how it is trained. Every job of this session uses this "
                    "choice; **Load** shows its size and memory.")
        with gr.Row():
            if ctx.public:
                t.name = gr.Dropdown(list(s.allowed_models), value=s.model, allow_custom_value=False, label="Model",
                                     info="default = embedded SmolLM2-135M-Instruct; this server offers these "
                                          "models only")
            else:
                t.name = gr.Dropdown(["default", "tiny"], value=s.model, allow_custom_value=True, label="Model",
                                     info="default = embedded SmolLM2-135M-Instruct; tiny = a random 2-layer model "
                                          "for tests; or a Hugging Face id / local folder / .gguf file")
            t.quant = gr.Radio(["none", "4bit"], value="none", label="Quantisation",
                               info="4bit = QLoRA (NF4, bitsandbytes); needs LoRA")
        with gr.Row():
            low = 1 if ctx.public and not s.limits.allow_full else 0
            t.rank = gr.Slider(low, ctx.cap(64, s.limits.max_rank), value=max(low, rank0), step=1,
                               label="LoRA rank", info="0 = full fine-tuning (every weight trains)" if low == 0
                               else "full fine-tuning is off on this server")
            t.device = gr.Radio(["auto", "cpu", "cuda"], value=s.device, label="Device",
                                info="auto = the GPU when there is one")
        t.load = gr.Button("Load and inspect", variant="primary")
        t.md = gr.Markdown()
    t.inputs = [t.name, t.quant, t.rank, t.device]
    t.outputs = [t.md]
    wire(ctx, t)
    return t


def choose(ctx: Ctx, ws, name, quant, rank, device) -> ModelChoice:
    """Check and store the session's model choice (public mode: allowed models and ranks only)."""
    s = ctx.settings
    choice = ModelChoice(name=limits.check_model(s, name), quantization=quant or "none",
                         lora_rank=limits.check_rank(s, rank if rank not in (None, "") else 0),
                         device=device or "auto")
    choice.check()
    with ws.lock:
        ws.model = choice
    return choice


def wire(ctx: Ctx, t: SimpleNamespace) -> None:
    page = ctx.page

    @guard
    def set_model(sid, name, quant, rank, device, request: gr.Request) -> None:
        choose(ctx, page.ws(sid, request), name, quant, rank, device)

    gr.on([t.name.change, t.quant.change, t.rank.change, t.device.change], set_model,
          inputs=[ctx.sid, *t.inputs], outputs=None, api_name="set_model", show_progress="hidden")

    @guard
    def load_model(sid, name, quant, rank, device, request: gr.Request):
        ws = page.ws(sid, request)
        choice = choose(ctx, ws, name, quant, rank, device)
        job = page.start(ws, "load", f"Load {choice.describe()}", tasks.load_job(choice))
        return page.started(job), "loading… (the summary appears here when the model is loaded)"

    t.load.click(load_model, [ctx.sid, *t.inputs], [ctx.job_html, t.md], api_name="load_model")


def render(ctx: Ctx, t: SimpleNamespace, job, ws, runs, moved) -> dict:
    summary = job.result.get("summary")
    if summary:
        if ctx.public:
            summary = {**summary, "source": summary.get("name", "")}  # no server paths on a public page
        return {t.md: views.model_summary_md(summary)}
    if job.error:
        return {t.md: f"⚠ {job.error}"}
    return {t.md: f"{job.state}: {job.message}"}
