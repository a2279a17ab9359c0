"""Per-session state (the model choice, uploads, anchor, runs) and the session keys that name it.

**Keys are issued, never chosen.** At page load the server issues the browser a signed key
``<session id>.<HMAC-SHA256(server secret, session id)>`` that the page keeps in ``localStorage``
(``gr.BrowserState``), so a reload is the same session and reattaches to its job. A key the server did not sign is
ignored: the page gets a fresh session. API clients (gradio_client, raw HTTP) that never load the page are keyed by
their Gradio session hash, mapped through the same secret. The key itself appears in no file, folder name or message:
a session's folders are named by a second HMAC of its id (:meth:`Keys.folder`), which does not reveal the key.

Workspaces live in memory for the life of the process (one :class:`Sessions` per app); their temp folders are removed
at exit and, in public mode, by :meth:`Sessions.sweep` once idle for ``Limits.session_hours``.
"""
from __future__ import annotations

import atexit
import hashlib
import hmac
import re
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dba.errors import DBAError
from dba.models import LoraSettings

from .settings import StudioSettings, lora_rank_of

_TMP_ROOT = Path(tempfile.mkdtemp(prefix="dba-studio-"))
"""Parent of every session's private temp folder (uploads, exports). Gradio never serves it: it is neither in
``allowed_paths`` nor inside Gradio's upload/cache folder (see :func:`app.launch`)."""
atexit.register(shutil.rmtree, _TMP_ROOT, ignore_errors=True)

_ID = re.compile(r"^[0-9a-f]{32}$")


class Keys:
    """Issues and verifies session keys with the server's secret (HMAC-SHA256)."""

    def __init__(self, secret: str | bytes | None = None):
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        self._secret = secret or secrets.token_bytes(32)

    def _mac(self, purpose: str, value: str, n: int = 32) -> str:
        return hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()[:n]

    def issue(self, session_id: str | None = None) -> str:
        """A key for ``session_id`` (a new random session when None)."""
        sid = session_id or secrets.token_hex(16)
        return f"{sid}.{self._mac('key', sid)}"

    def verify(self, key) -> str | None:
        """The session id of a key this server issued, else None (anything else a client sends is ignored)."""
        if not isinstance(key, str) or key.count(".") != 1 or len(key) > 80:
            return None
        sid, mac = key.split(".")
        if not _ID.match(sid) or not hmac.compare_digest(mac, self._mac("key", sid)):
            return None
        return sid

    def for_hash(self, session_hash: str) -> str:
        """The session id of an API client that never loaded the page (keyed by its Gradio session hash)."""
        return self._mac("hash", str(session_hash))

    def folder(self, session_id: str) -> str:
        """The name of the session's folders: reveals neither the key nor the id."""
        return "s-" + self._mac("folder", session_id, 20)


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
        """The library's LoRA settings at this rank (α left to the library: None = 2 × rank); None = full FT."""
        return LoraSettings(rank=self.lora_rank) if self.lora_rank > 0 else None

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

    id: str
    """The session id (the signed key's first half). Never written to disk or shown."""
    folder: str
    """Name of the session's folders (:meth:`Keys.folder`)."""
    settings: StudioSettings
    tmp_root: Path = _TMP_ROOT
    model: ModelChoice = field(default_factory=ModelChoice)
    anchor_path: str | None = None
    """The global gradient the Global gradient tab computed or loaded (used by DBA runs of this session)."""
    anchor_model: dict | None = None
    """The model choice the anchor was made for / checked against."""
    runs: list[str] = field(default_factory=list)
    """Run folders this session made, oldest first."""
    compare_dir: str | None = None
    created: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    """Last request of the session (old sessions' files are removed in public mode)."""
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def tmp(self) -> Path:
        """The session's private temp folder (uploads, exports)."""
        p = self.tmp_root / self.folder
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
        return self.settings.runs_root.resolve() / self.folder

    def new_run_dir(self, label: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        label = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "run"
        base = self.runs_dir / f"{label}-{stamp}"
        path, n = base, 1
        while path.exists():
            path = base.with_name(f"{base.name}-{n}")
            n += 1
        return path

    def disk_bytes(self) -> int:
        """What the session's folders hold on disk."""
        total = 0
        for root in (self.tmp_root / self.folder, self.runs_dir):
            if root.exists():
                total += sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
        return total

    def remove_files(self) -> None:
        shutil.rmtree(self.tmp_root / self.folder, ignore_errors=True)
        shutil.rmtree(self.runs_dir, ignore_errors=True)

    def anchor_fits(self) -> bool:
        """Whether the session's anchor was made for the current model choice (name, quantisation, LoRA layout)."""
        if not self.anchor_path or not self.anchor_model:
            return False
        a, b = dict(self.anchor_model), self.model.as_dict()
        # the rank does not matter in weight space (one anchor serves any LoRA rank); full FT vs LoRA does
        return (a["name"], a["quantization"], a["lora_rank"] > 0) == (b["name"], b["quantization"], b["lora_rank"] > 0)


class Sessions:
    """The workspaces of one app, and the keys that name them."""

    def __init__(self, settings: StudioSettings, tmp_root: Path = _TMP_ROOT):
        self.settings = settings
        self.keys = Keys(settings.secret)
        self.tmp_root = tmp_root
        self._lock = threading.Lock()
        self._ws: dict[str, Workspace] = {}
        self._aliases: dict[str, str] = {}
        """Gradio session hash -> the session id its page settled on (see :meth:`settle`)."""

    def resolve(self, key, session_hash: str | None) -> str:
        """The session id of a request: the (verified) key of the page, else the id its Gradio session settled on
        at page load, else the one derived from the Gradio session hash (API clients, early clicks)."""
        sid = self.keys.verify(key)
        if sid:
            return sid
        sh = str(session_hash or "anonymous")
        with self._lock:
            return self._aliases.get(sh) or self.keys.for_hash(sh)

    def settle(self, stored, session_hash: str | None) -> str:
        """At page load: the key this page uses from now on. The browser's stored key when this server issued it
        (a reload reattaches), else a new one. When the page already acted under its Gradio session hash before
        loading finished, that session is adopted so the job it started is not lost."""
        sid = self.keys.verify(stored)
        sh = str(session_hash or "anonymous")
        with self._lock:
            early = self.keys.for_hash(sh)
            if early in self._ws and early != sid:
                sid = early
            sid = sid or self.keys.issue().split(".")[0]
            self._aliases[sh] = sid
        return self.keys.issue(sid)

    def workspace(self, sid: str) -> Workspace:
        """The session's workspace, created on first use with the Studio's start model."""
        with self._lock:
            ws = self._ws.get(sid)
            if ws is None:
                s = self.settings
                ws = Workspace(id=sid, folder=self.keys.folder(sid), settings=s, tmp_root=self.tmp_root,
                               model=ModelChoice(name=s.model, lora_rank=lora_rank_of(s.preset), device=s.device))
                self._ws[sid] = ws
            ws.last_seen = time.time()
            return ws

    def sweep(self, max_idle_s: float, busy=lambda sid: False) -> list[str]:
        """Remove the files (and the state) of sessions idle for longer than ``max_idle_s`` and not ``busy``;
        also folders under the runs root left by sessions of an earlier start. Returns the folders removed."""
        now, gone = time.time(), []
        with self._lock:
            for sid, ws in list(self._ws.items()):
                if now - ws.last_seen > max_idle_s and not busy(sid):
                    del self._ws[sid]
                    for sh in [h for h, s in self._aliases.items() if s == sid]:
                        del self._aliases[sh]
                    ws.remove_files()
                    gone.append(ws.folder)
            live = {ws.folder for ws in self._ws.values()}
        for root in (self.settings.runs_root, self.tmp_root):
            root = Path(root)
            if not root.is_dir():
                continue
            for d in root.iterdir():
                if d.is_dir() and d.name.startswith("s-") and d.name not in live:
                    newest = max((f.stat().st_mtime for f in d.rglob("*")), default=d.stat().st_mtime)
                    if now - newest > max_idle_s:
                        shutil.rmtree(d, ignore_errors=True)
                        gone.append(d.name)
        return gone
