"""DBA Studio — the Gradio app. ``python app.py`` (or ``make studio``) opens it; see :mod:`app.settings` for the
environment variables it reads.

Layout: :mod:`app.ui` assembles the page from :mod:`app.tabs` (one module per tab); :mod:`app.page` (which folders
a session may open, its uploads, starting its jobs); :mod:`app.session` (session keys and per-session state);
:mod:`app.limits` (what a request may ask for; public mode's caps); :mod:`app.jobs` (background jobs, queue,
cancel); :mod:`app.tasks` (what each job asks the engine to do); :mod:`app.uploads` (checked, sanitised uploads);
:mod:`app.views` (job bar, figures from :mod:`dba.plots`, tables); :mod:`app.exports` (chat and downloads);
:mod:`app.teaching` (the lesson's narration). The app holds no training logic: it calls ``dba``.
"""
from __future__ import annotations

from pathlib import Path

from .settings import StudioSettings


def build_demo(settings: StudioSettings | None = None):
    """The Studio's gr.Blocks (not launched)."""
    from .ui import build_demo as _build

    return _build(settings)



def _sweeper(page, every_s: float) -> None:
    """Public mode: remove the files of sessions idle for longer than ``Limits.session_hours`` (a daemon thread)."""
    import threading
    import time

    from .jobs import REGISTRY

    max_idle = page.settings.limits.session_hours * 3600

    def loop():
        while True:
            time.sleep(every_s)
            try:
                page.sessions.sweep(max_idle, busy=REGISTRY.active)
            except Exception:  # noqa: BLE001 -- a sweep problem must not take the app down
                import traceback

                traceback.print_exc()

    threading.Thread(target=loop, name="dba-studio-sweeper", daemon=True).start()


def launch(settings: StudioSettings | None = None, demo=None, **kwargs):
    """Build (unless given) and launch the Studio with its theme, styles and upload limit; ``kwargs`` go to
    ``Blocks.launch`` (e.g. ``prevent_thread_lock=True``, ``server_port=...``).

    What Gradio serves: only its own upload/cache folder (files users uploaded and files the app returned, each under
    a secret-seeded content hash) — no ``allowed_paths``. The sessions' folders (runs root and temp root) are
    checked to lie outside Gradio's folder, and are on ``blocked_paths`` where the app never returns files from them
    (the runs root: downloads are copied to the session's temp export folder first)."""
    from gradio.utils import get_upload_folder, is_in_or_equal

    from .ui import CSS, THEME

    from .limits import check_preset

    settings = settings or StudioSettings.from_env()
    check_preset(settings)
    demo = demo or build_demo(settings)
    page = demo.studio_page
    gradio_dir = Path(get_upload_folder()).resolve()
    for folder in (page.runs_root, page.sessions.tmp_root):
        if is_in_or_equal(Path(folder).resolve(), gradio_dir) or is_in_or_equal(gradio_dir, Path(folder).resolve()):
            raise SystemExit(f"{folder} and Gradio's upload folder ({gradio_dir}, GRADIO_TEMP_DIR) must not contain "
                             "one another: Gradio serves everything in its folder.")
    demo.queue(default_concurrency_limit=2)
    opts = dict(server_name=settings.host, server_port=settings.port, theme=THEME, css=CSS,
                max_file_size=settings.http_max_bytes, blocked_paths=[str(page.runs_root)],
                show_error=True, footer_links=["api", "gradio"])
    opts.update(kwargs)
    if settings.public:
        _sweeper(page, every_s=min(600.0, settings.limits.session_hours * 3600 / 4))
    return demo, demo.launch(**opts)
