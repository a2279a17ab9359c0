"""The Chat tab: the base model and one of the session's fine-tuned runs answer the same question."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from dba.errors import DBAError

from .. import exports, limits
from .common import Ctx, guard

MAX_PROMPT_CHARS = 2000
"""Longest question accepted in public mode."""


def build(ctx: Ctx) -> SimpleNamespace:
    t = SimpleNamespace()
    with gr.Tab("5 · Chat", id="chat"):
        gr.Markdown("Ask the base model and the fine-tuned one the same question (greedy decoding). A LoRA "
                    "run answers twice with one copy of the weights: adapter off, adapter on.")
        with gr.Row():
            t.run = gr.Dropdown([], label="Fine-tuned run (this session's)", allow_custom_value=True, scale=4)
            t.refresh = gr.Button("↻ Refresh runs", size="sm", scale=1)
        with gr.Row():
            t.prompt = gr.Textbox("What is the capital of Japan?", label="Question", lines=2, scale=4)
            t.tokens = gr.Slider(8, ctx.settings.limits.max_new_tokens, value=64, step=8, label="Max new tokens",
                                 scale=1)
        t.ask = gr.Button("Ask both", variant="primary")
        with gr.Row():
            t.base = gr.Textbox(label="Base model", lines=6, interactive=False)
            t.tuned = gr.Textbox(label="Fine-tuned model", lines=6, interactive=False)
    wire(ctx, t)
    return t


def wire(ctx: Ctx, t: SimpleNamespace) -> None:
    page = ctx.page

    @guard
    def ask_both(sid, run, prompt, max_tokens, request: gr.Request):
        ws = page.ws(sid, request)
        if ctx.public and len(prompt or "") > MAX_PROMPT_CHARS:
            raise DBAError(f"Questions are limited to {MAX_PROMPT_CHARS} characters on this server.")
        return exports.chat(page.run_dir(ws, run), prompt, limits.check_new_tokens(ctx.settings, max_tokens))

    args = [ctx.sid, t.run, t.prompt, t.tokens]
    t.ask.click(ask_both, args, [t.base, t.tuned], api_name="chat")
    t.prompt.submit(ask_both, args, [t.base, t.tuned], api_name="chat_submit", api_visibility="undocumented")
