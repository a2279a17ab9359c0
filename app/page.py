"""The page's shared machinery, one instance per app: which session a request belongs to, which run and comparison
folders it may open, its uploads, and starting its jobs. The tab modules (:mod:`app.tabs`) call it.

Isolation: a session opens only folders under its own runs folder (``<runs root>/<session folder>``); outside
public mode it may also open the CLI's runs under ``runs/`` (the machine owner's own work), never another session's.
A reference from the page is a path relative to the session's folder (absolute paths inside it are accepted too, so
API clients can pass back the ``run_dir`` a job reported). A refusal says the same whether or not the folder exists
elsewhere, so a session cannot probe for another's.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from dba.data import BUNDLED_DOMAINS
from dba.errors import DBAError
from dba.train import read_run

from . import limits, uploads
from .jobs import REGISTRY, Job
from .session import Sessions, Workspace
from .settings import REPO_ROOT, StudioSettings

UPLOAD = "my upload"
"""The data choice that means "the file uploaded beside it"."""


def file_path(value) -> str | None:
    """The local path of a gr.File value (a str in Gradio 6; tolerate objects with .name / dicts with path)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        return value.get("path") or value.get("name")
    return getattr(value, "name", None) or getattr(value, "path", None)


def _inside(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


class Page:
    """Sessions, folders, uploads and job starts for the handlers of every tab."""

    def __init__(self, settings: StudioSettings, sessions: Sessions | None = None):
        self.settings = settings
        self.public = settings.public
        self.sessions = sessions or Sessions(settings)
        self.runs_root = settings.runs_root.resolve()
        self.cli_root = (REPO_ROOT / "runs").resolve()
        """Outside public mode, the CLI's runs under runs/ (minus the Studio's own folder) can be opened too."""

    # ---- sessions -------------------------------------------------------------------------------------------------
    def ws(self, key, request: gr.Request | None) -> Workspace:
        """The workspace of a request: its verified key (from the page), else its Gradio session."""
        sid = self.sessions.resolve(key, getattr(request, "session_hash", None))
        return self.sessions.workspace(sid)

    # ---- folders ------------------------------------------------------------------------------------------------
    def _shared(self, p: Path) -> bool:
        """A CLI run folder this page may open (local mode only; never under the Studio's sessions' root)."""
        return (not self.public and _inside(p, self.cli_root) and not _inside(p, self.runs_root))

    def resolve(self, ws: Workspace, ref, what: str) -> Path:
        """The folder a page reference names, when this session may open it."""
        if not ref or not str(ref).strip():
            raise DBAError(f"No {what} chosen.")
        own = ws.runs_dir
        raw = Path(str(ref).strip()).expanduser()
        p = (raw if raw.is_absolute() else own / raw).resolve()
        if (_inside(p, own) and p != own) or self._shared(p):
            if p.is_dir():
                return p
        shown = raw.name if self.public else str(ref)
        raise DBAError(f"There is no {what} {shown!r} among this session's folders. Pick one from the list (press "
                       "↻ to refresh it).")

    def show(self, ws: Workspace, path) -> str:
        """How the page names a folder: relative to the session's folder (public mode never shows server paths)."""
        if not path:
            return ""
        p = Path(path).resolve()
        if _inside(p, ws.runs_dir) and p != ws.runs_dir:
            return str(p.relative_to(ws.runs_dir))
        return p.name if self.public else str(p)

    def _ref(self, ws: Workspace, p: Path) -> str:
        """The value a dropdown holds for a folder: relative for the session's own, absolute for CLI runs."""
        return str(p.relative_to(ws.runs_dir)) if _inside(p, ws.runs_dir) else str(p)

    def _roots(self, ws: Workspace) -> list[Path]:
        return [ws.runs_dir] + ([self.cli_root] if not self.public else [])

    def _found(self, ws: Workspace, marker: str, depth: int) -> list[Path]:
        found = set()
        for root in self._roots(ws):
            if root.is_dir():
                for f in root.glob(f"**/{marker}"):
                    d = f.parent.resolve()
                    if len(f.relative_to(root).parts) <= depth and (_inside(d, ws.runs_dir) or self._shared(d)):
                        found.add(d)
        return sorted(found, key=lambda d: d.stat().st_mtime, reverse=True)

    def run_choices(self, ws: Workspace) -> list[tuple[str, str]]:
        """Finished runs this session may open, newest first (its own; outside public mode also the CLI's)."""
        out = []
        for d in self._found(ws, "status.json", 5)[:60]:
            if not ((d / "adapter").exists() or (d / "model").exists()):
                continue
            try:
                info = read_run(d)
            except DBAError:
                continue
            method = (info.get("config") or {}).get("method", "?")
            sc = (info.get("status") or {}).get("scores") or {}
            score = f" · S {sc['s']:.2f}" if sc.get("s") is not None else ""
            out.append((f"{method} · {self.show(ws, d)}{score}", self._ref(ws, d)))
        return out

    def compare_choices(self, ws: Workspace) -> list[tuple[str, str]]:
        return [(self.show(ws, d), self._ref(ws, d)) for d in self._found(ws, "compare.json", 4)]

    def run_dir(self, ws: Workspace, ref) -> Path:
        """The run folder a Chat/Export request names (the newest finished run when none is chosen)."""
        if not ref:
            choices = self.run_choices(ws)
            if not choices:
                raise DBAError("No finished run yet: fine-tune a model first (Fine-tune tab).")
            ref = choices[0][1]
        return self.resolve(ws, ref, "run")

    # ---- uploads -------------------------------------------------------------------------------------------------
    def accept(self, ws: Workspace, kind: str, file) -> tuple[Path, dict]:
        """Store and check an upload in the session's folder: ``kind`` = "corpus" or "anchor". A refused upload is
        deleted, Gradio's own copy included."""
        src = file_path(file)
        if not src:
            raise DBAError("Choose a file to upload first.")
        try:
            size = Path(src).stat().st_size if Path(src).is_file() else 0
            limits.check_quota(self.settings, ws, adding=size)
            if kind == "anchor":
                return uploads.accept_anchor(src, ws.uploads, self.settings.anchor_bytes, Path(src).name), {}
            return uploads.accept_corpus(src, ws.uploads, self.settings.upload_bytes, Path(src).name)
        except DBAError:
            uploads.discard(src)
            raise

    def corpus_upload(self, key, file, request, note: str = "") -> tuple[str, str]:
        """The upload fields' check: (the line the page shows, the source choice "my upload"), or nothing on clear."""
        if not file:
            return "", gr.skip()
        _, info = self.accept(self.ws(key, request), "corpus", file)
        layouts = ", ".join(f"{k} {v}" for k, v in info["layouts"].items())
        return f"✓ {info['file']}: {info['rows']} rows ({layouts}){note}", UPLOAD

    def domain_source(self, ws: Workspace, choice: str, file) -> str:
        """A bundled domain name, or the checked upload's path in the session's folder."""
        if choice == UPLOAD:
            if not file_path(file):
                raise DBAError("Choose a file to upload first (or pick a bundled domain).")
            return str(self.accept(ws, "corpus", file)[0])
        if choice not in BUNDLED_DOMAINS:
            raise DBAError(f"Unknown domain {choice!r}; choose one of {', '.join(BUNDLED_DOMAINS)} or upload a file.")
        return choice

    # ---- jobs ---------------------------------------------------------------------------------------------------
    def start(self, ws: Workspace, kind: str, title: str, work) -> Job:
        """Queue a job for the session (one at a time; public mode: its model, quota and queue length checked)."""
        limits.check_model(self.settings, ws.model.name)
        limits.check_rank(self.settings, ws.model.lora_rank)
        limits.check_quota(self.settings, ws)
        return REGISTRY.start(ws.id, kind, title, work, max_queue=limits.max_queue(self.settings))

    @staticmethod
    def started(job: Job) -> str:
        from . import views

        gr.Info(f"Started: {job.title}")
        return views.job_bar(job)
