"""The Studio's page, assembled from one module per tab (:mod:`app.tabs`): a teaching tab in front, then the tabs
in the order of the work (Model → Global gradient → Fine-tune → Compare → Chat → Export), and one job bar that
follows the session's background job.

Every event has an explicit ``api_name``, so everything the page does can be scripted with ``gradio_client``
(see tests/test_app_api.py). Long work runs as a background job (:mod:`app.jobs`); a ``gr.Timer`` polls it every
two seconds and the tab the job belongs to redraws its figures only when the job moved. User errors
(``dba.DBAError``) are shown as ``gr.Error`` pop-ups and in the job bar; the app keeps running.
"""
from __future__ import annotations

from functools import partial

import gradio as gr

from .page import Page
from .settings import StudioSettings
from .tabs import anchor, chat, compare, export, finetune, jobbar, lesson, model
from .tabs.common import Ctx

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="emerald", neutral_hue="slate",
                       font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"])
# (system fonts only: a classroom laptop or a test machine may be offline)

CSS = """
.gradio-container {max-width: 1320px !important; margin: auto;}
#dba-header h1 {margin-bottom: 0; font-size: 1.9rem;}
#dba-header p {margin-top: 2px; color: var(--body-text-color-subdued);}
.dba-badge {display:inline-block; padding:2px 10px; border-radius:999px; background:#eef2ff; color:#3730a3;
            font-size:0.85rem; margin-right:6px; border:1px solid #c7d2fe;}
.dba-jobbar {border:1px solid var(--border-color-primary); border-radius:10px; padding:10px 14px;
             background: var(--block-background-fill);}
.dba-jobline {font-size:0.95rem;}
.dba-dot {display:inline-block; width:9px; height:9px; border-radius:50%; background:#94a3b8; margin-right:8px;}
.dba-jobbar.running .dba-dot {background:#22c55e; animation: dbapulse 1.2s infinite;}
.dba-jobbar.queued .dba-dot {background:#f59e0b;}
.dba-jobbar.failed .dba-dot {background:#ef4444;}
.dba-jobbar.completed .dba-dot {background:#6366f1;}
@keyframes dbapulse {0% {opacity:1} 50% {opacity:.35} 100% {opacity:1}}
.dba-state {font-size:0.8rem; padding:1px 8px; border-radius:999px; background:#f1f5f9;}
.dba-state.running {background:#dcfce7; color:#166534;} .dba-state.failed {background:#fee2e2; color:#991b1b;}
.dba-state.completed {background:#e0e7ff; color:#3730a3;} .dba-state.cancelled {background:#fef3c7; color:#92400e;}
.dba-progress {height:8px; background:#e2e8f0; border-radius:999px; margin-top:8px; overflow:hidden;}
.dba-progress > div {height:100%; background:linear-gradient(90deg,#6366f1,#22c55e); transition: width .6s;}
.dba-error {margin-top:8px; color:#991b1b; background:#fef2f2; border:1px solid #fecaca; border-radius:8px;
            padding:6px 10px; font-size:0.9rem;}
.dba-jobbar.idle {color: var(--body-text-color-subdued);}
#teach-narration {min-height: 420px;}
#teach-run {min-height: 56px; font-size: 1.1rem;}
.dba-help {color: var(--body-text-color-subdued); font-size: 0.9rem;}
"""



def build_demo(settings: StudioSettings | None = None, page: Page | None = None) -> gr.Blocks:
    """The Studio as a gr.Blocks (launch it with :func:`app.launch`)."""
    settings = settings or StudioSettings.from_env()
    page = page or Page(settings)
    # delete_cache: Gradio's copies of uploads and downloads go once older than a day (public mode: once older
    # than the session lifetime), checked hourly
    max_age = int(settings.limits.session_hours * 3600) if settings.public else 86400
    with gr.Blocks(title="DBA Studio", fill_width=False, delete_cache=(min(3600, max_age), max_age)) as demo:
        sid = gr.State(None)
        seen = gr.State(None)
        browser_key = gr.BrowserState(None, storage_key="dba-studio-session")
        jobbar.header(settings)
        bar = jobbar.build()
        ctx = Ctx(settings=settings, page=page, sid=sid, job_html=bar.html)
        with gr.Tabs(elem_id="tabs"):
            tabs = {name: mod.build(ctx) for name, mod in (("lesson", lesson), ("model", model), ("anchor", anchor),
                                                            ("finetune", finetune), ("compare", compare),
                                                            ("chat", chat), ("export", export))}
        jobbar.wire_session(ctx, browser_key, seen, tabs, demo)
        by_kind = {"teach": (lesson, "lesson"), "load": (model, "model"), "anchor": (anchor, "anchor"),
                   "finetune": (finetune, "finetune"), "compare": (compare, "compare")}
        renderers = {kind: partial(mod.render, ctx, tabs[name]) for kind, (mod, name) in by_kind.items()}
        outputs = [c for _, name in by_kind.values() for c in tabs[name].outputs]
        jobbar.wire_jobs(ctx, bar, seen, renderers, outputs)
    demo.studio_page = page  # for launch() (the session sweeper) and tests
    demo.studio_tabs = tabs  # the components of each tab, for tests
    return demo
