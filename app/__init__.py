"""DBA Studio — the Gradio app. ``python app.py`` (or ``make studio``) opens it; see :mod:`app.settings` for the
environment variables it reads.

Layout: :mod:`app.ui` (the page), :mod:`app.jobs` (background jobs, queue, cancel), :mod:`app.tasks` (what each
job asks the engine to do), :mod:`app.session` (per-session state), :mod:`app.uploads` (checked, sanitised uploads),
:mod:`app.views` (job bar, figures from :mod:`dba.plots`, tables), :mod:`app.exports` (chat and downloads),
:mod:`app.teaching` (the lesson's narration). The app holds no training logic: it calls ``dba``.
"""
from __future__ import annotations

from .settings import StudioSettings


def build_demo(settings: StudioSettings | None = None):
    """The Studio's gr.Blocks (not launched)."""
    from .ui import build_demo as _build

    return _build(settings)


def launch(settings: StudioSettings | None = None, demo=None, **kwargs):
    """Build (unless given) and launch the Studio with its theme, styles and upload limit; ``kwargs`` go to
    ``Blocks.launch`` (e.g. ``prevent_thread_lock=True``, ``server_port=...``)."""
    from .session import _TMP_ROOT
    from .ui import CSS, THEME

    settings = settings or StudioSettings.from_env()
    demo = demo or build_demo(settings)
    demo.queue(default_concurrency_limit=2)
    opts = dict(server_name=settings.host, server_port=settings.port, theme=THEME, css=CSS,
                max_file_size=max(settings.upload_bytes, settings.anchor_bytes), allowed_paths=[str(_TMP_ROOT)],
                show_error=True, footer_links=["api", "gradio"])
    opts.update(kwargs)
    return demo, demo.launch(**opts)


__all__ = ["StudioSettings", "build_demo", "launch"]
