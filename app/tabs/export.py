"""The Export tab: one of the session's runs as a download (PEFT adapter zip, or merged standalone model zip). The
zips go through the session's private export folder; their ``dba-run/`` provenance names no server folder."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .. import exports, limits
from .common import Ctx, guard


def build(ctx: Ctx) -> SimpleNamespace:
    t = SimpleNamespace()
    with gr.Tab("6 · Export", id="export"):
        gr.Markdown("Download a run's result, with a model card (README.md) and the training config. **Adapter**: "
                    "the PEFT adapter (load it on the same base with `PeftModel.from_pretrained`). **Merged model**: "
                    "base + adapter merged into one standalone checkpoint (a 4-bit run's base is de-quantised "
                    "first).")
        with gr.Row():
            t.run = gr.Dropdown([], label="Run (this session's)", allow_custom_value=True, scale=4)
            t.refresh = gr.Button("↻ Refresh runs", size="sm", scale=1)
        with gr.Row():
            t.adapter = gr.Button("Adapter (.zip)", variant="primary")
            t.merged = gr.Button("Merged model (.zip)")
        t.file = gr.File(label="Download", interactive=False)
    wire(ctx, t)
    return t


def hidden_folders(ctx: Ctx, ws) -> dict[str, str]:
    """Server folders replaced in a download's provenance: the session's own become relative, the rest anonymous."""
    return {str(ws.runs_dir): "", str(ws.tmp): "", str(ctx.page.runs_root): "<runs>/",
            str(ctx.page.sessions.tmp_root): "<tmp>/"}


def _export(ctx: Ctx, sid, run, request, make) -> str:
    """One download: the session's earlier zips go first (Gradio already holds its copies of them), then the quota
    is checked and ``make(run_dir, out_dir, hide)`` writes the new one."""
    ws = ctx.page.ws(sid, request)
    run_dir = ctx.page.run_dir(ws, run)
    for old in ws.exports.glob("*.zip"):
        old.unlink(missing_ok=True)
    limits.check_quota(ctx.settings, ws)
    return str(make(run_dir, ws.exports, hidden_folders(ctx, ws)))


def wire(ctx: Ctx, t: SimpleNamespace) -> None:
    @guard
    def export_adapter(sid, run, request: gr.Request):
        return _export(ctx, sid, run, request, exports.export_adapter)

    @guard
    def export_merged(sid, run, request: gr.Request):
        return _export(ctx, sid, run, request, exports.export_merged)

    t.adapter.click(export_adapter, [ctx.sid, t.run], [t.file], api_name="export_adapter")
    t.merged.click(export_merged, [ctx.sid, t.run], [t.file], api_name="export_merged")
