"""Per-session state: the model choice, the uploads folder, the anchor and the runs a session made.

A session is keyed by the string the browser keeps in ``localStorage`` (``gr.BrowserState``) — so a page reload
is the same session and reattaches to its job — or, for API clients, by their Gradio session hash. Workspaces live
in a module-level dict for the life of the process; their temp folders are removed at exit.
"""
from __future__ import annotations

import atexit
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dba.errors import DBAError
from dba.models import LoraSettings

from .settings import StudioSettings

_TMP_ROOT = Path(tempfile.mkdtemp(prefix="dba-studio-"))
atexit.register(shutil.rmtree, _TMP_ROOT, ignore_errors=True)


def clean_key(key: str | None) -> str | None:
    """A session key safe to use in a folder name, or None (keys come from the browser: never trust them)."""
    if not key or not isinstance(key, str):
        return None
    key = re.sub(r"[^A-Za-z0-9_-]", "", key)[:40]
    return key if len(key) >= 8 else None


def new_key() -> str:
    return uuid.uuid4().hex


@dataclass
class ModelChoice:
    """What the Model tab selected; every job of the session loads its model from this."""

    name: str = "default"
    """"default", "tiny", a hub id, a folder or a .gguf file."""
    quantization: str = "none"
    """"none" or "4bit" (QLoRA)."""
    lora_rank: int = 8
    """LoRA rank; 0 = full fine-tuning."""
    device: str = "auto"

    def lora(self) -> LoraSettings | None:
        # alpha = 2 x rank, as the CLI does: the adapter's scale alpha/r stays 2 whatever the rank.
        return LoraSettings(rank=self.lora_rank, alpha=2.0 * self.lora_rank) if self.lora_rank > 0 else None

    def check(self) -> None:
        if self.quantization not in ("none", "4bit", "8bit"):
            raise DBAError(f"Unknown quantization {self.quantization!r}.")
        if self.quantization != "none" and self.lora_rank <= 0:
            raise DBAError("4-bit models cannot be fully fine-tuned: choose a LoRA rank above 0 (QLoRA), or turn "
                           "4-bit off for full fine-tuning.")
        if self.lora_rank < 0:
            raise DBAError("The LoRA rank must be 0 (full fine-tuning) or more.")

    def describe(self) -> str:
        mode = f"LoRA r={self.lora_rank}" if self.lora_rank > 0 else "full fine-tuning"
        quant = ", 4-bit" if self.quantization == "4bit" else ""
        return f"{self.name} ({mode}{quant}, device {self.device})"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Workspace:
    """One session's state."""

    key: str
    settings: StudioSettings
    model: ModelChoice = field(default_factory=ModelChoice)
    anchor_path: str | None = None
    """The global gradient the Global gradient tab computed or loaded (used by DBA runs of this session)."""
    anchor_model: dict | None = None
    """The model choice the anchor was made for / checked against."""
    runs: list[str] = field(default_factory=list)
    """Run folders this session made, oldest first."""
    compare_dir: str | None = None
    created: float = field(default_factory=time.time)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def tmp(self) -> Path:
        """The session's private temp folder (uploads, exports)."""
        p = _TMP_ROOT / self.key
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def uploads(self) -> Path:
        p = self.tmp / "uploads"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def exports(self) -> Path:
        p = self.tmp / "exports"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def runs_dir(self) -> Path:
        """Where this session's run, anchor and compare folders go (under the Studio's runs root)."""
        return self.settings.runs_root / self.key[:8]

    def new_run_dir(self, label: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        label = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "run"
        base = self.runs_dir / f"{label}-{stamp}"
        path, n = base, 1
        while path.exists():
            path = base.with_name(f"{base.name}-{n}")
            n += 1
        return path

    def anchor_fits(self) -> bool:
        """Whether the session's anchor was made for the current model choice (name, quantisation, LoRA layout)."""
        if not self.anchor_path or not self.anchor_model:
            return False
        a, b = dict(self.anchor_model), self.model.as_dict()
        # the rank does not matter in weight space (one anchor serves any LoRA rank); full FT vs LoRA does
        return (a["name"], a["quantization"], a["lora_rank"] > 0) == (b["name"], b["quantization"], b["lora_rank"] > 0)


_WORKSPACES: dict[str, Workspace] = {}
_LOCK = threading.Lock()
_ALIASES: dict[str, str] = {}
"""Gradio session hash -> the session key its page settled on (see :func:`settle_key`)."""


def resolve_key(stored: str | None, session_hash: str | None) -> str:
    """The session key of a request: the key the page holds (from the browser's storage), else the key its Gradio
    session settled on at page load, else the Gradio session hash itself (API clients, or a click that came before
    the page finished loading)."""
    key = clean_key(stored)
    if key:
        return key
    sh = clean_key(session_hash)
    if sh is None:
        return "anonymous-session"
    with _LOCK:
        return _ALIASES.get(sh, sh)


def settle_key(stored: str | None, session_hash: str | None) -> str:
    """At page load: the key this page will use from now on. Normally the browser's stored key (so a reload
    reattaches); but when the page already acted under its Gradio session hash before loading finished, that
    session is adopted (and stored in the browser) so the job it started is not lost."""
    key = clean_key(stored) or new_key()
    sh = clean_key(session_hash)
    with _LOCK:
        if sh is not None:
            if sh in _WORKSPACES and sh != key:
                key = sh
            _ALIASES[sh] = key
    return key


def workspace(key: str, settings: StudioSettings) -> Workspace:
    """The session's workspace, created on first use with the Studio's start model."""
    with _LOCK:
        ws = _WORKSPACES.get(key)
        if ws is None:
            ws = Workspace(key=key, settings=settings,
                           model=ModelChoice(name=settings.model, lora_rank=settings.preset.lora_rank,
                                             device=settings.device))
            _WORKSPACES[key] = ws
        return ws
