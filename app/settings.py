"""The Studio's settings, read once from environment variables (for tests, classrooms and Hugging Face Spaces).

| variable                        | default          | what it sets                                                   |
|---------------------------------|------------------|----------------------------------------------------------------|
| ``DBA_STUDIO_MODEL``            | the preset's     | the model the page starts with (``default`` = the embedded one;|
|                                 | (``default``)    | the ``smoke`` preset's is ``tiny``)                            |
| ``DBA_STUDIO_PRESET``           | ``quick``        | the forms' start values and what a run keeps from its preset: |
|                                 |                  | :mod:`dba.config` (``smoke``, ``quick``, ``lesson``, ``study``)|
| ``DBA_STUDIO_LESSON_PRESET``    | ``lesson``       | the sizes of the "Start here" lesson (:mod:`dba.lesson`); with |
|                                 | (smoke: smoke)   | ``DBA_STUDIO_PRESET=smoke`` it is ``smoke``                    |
| ``DBA_STUDIO_LESSON``           | ``live``         | what the lesson tab opens on: ``recorded`` (the recorded       |
|                                 | (public:         | lesson shipped in app/recorded_lesson.json, drawn at once) or  |
|                                 | ``recorded``)    | ``live`` (an empty lesson, one click from running)             |
| ``DBA_STUDIO_HOST``             | ``127.0.0.1``    | the address to listen on (``0.0.0.0`` on a Space or a LAN)     |
| ``DBA_STUDIO_PORT``             | ``7860``         | the port (``GRADIO_SERVER_PORT`` is honoured too)              |
| ``DBA_STUDIO_RUNS``             | ``runs/studio``  | where the sessions' run, anchor and compare folders are written|
| ``DBA_STUDIO_UPLOAD_MB``        | 50 (public: 20)  | the largest data upload accepted, in MB                        |
| ``DBA_STUDIO_ANCHOR_MB``        | 512 (public: 100)| the largest saved-anchor upload, in MB; the larger of the two  |
|                                 |                  | is enforced by the HTTP server (Gradio ``max_file_size``)      |
| ``DBA_STUDIO_DEVICE``           | ``auto``         | ``auto`` (CUDA when present), ``cpu``, ``cuda``                |
| ``DBA_STUDIO_SECRET``           | random per start | signs the session keys the server issues; set it to keep       |
|                                 |                  | sessions (and their runs) across restarts                      |
| ``DBA_STUDIO_PUBLIC``           | 1 on a Space     | public mode: the limits below apply (``0`` turns it off)       |
|                                 | (``SPACE_ID``)   |                                                                |
| ``DBA_STUDIO_MODELS``           | (none)           | public mode: models allowed besides ``default`` and the start  |
|                                 |                  | model (comma-separated hub ids or server folders)              |
| ``DBA_STUDIO_MAX_STEPS``        | 200              | public mode: most optimiser steps of one run                   |
| ``DBA_STUDIO_MAX_BATCH``        | 16               | public mode: largest batch size                                |
| ``DBA_STUDIO_MAX_EVAL_ITEMS``   | 100              | public mode: most quiz questions per eval set ("all" refused) |
| ``DBA_STUDIO_MAX_ANCHOR_BATCHES``| 64              | public mode: most general batches of a global gradient         |
| ``DBA_STUDIO_MAX_RANK``         | 64               | public mode: largest LoRA rank (full fine-tuning, rank 0, stays|
|                                 |                  | allowed only when ``DBA_STUDIO_ALLOW_FULL=1``)                 |
| ``DBA_STUDIO_MAX_RUNS``         | 6                | public mode: most runs in one comparison (methods + ratios)    |
| ``DBA_STUDIO_LR_MIN`` / ``_MAX``| 1e-6 / 1e-2      | public mode: the learning-rate range accepted                  |
| ``DBA_STUDIO_MAX_QUEUE``        | 8                | public mode: jobs waiting for the machine, all sessions        |
|                                 |                  | together (each session has at most one job in any mode)        |
| ``DBA_STUDIO_QUOTA_MB``         | 500              | public mode: disk a session may fill (uploads, runs, exports)  |
| ``DBA_STUDIO_SESSION_HOURS``    | 24               | public mode: a session's files are removed after this many     |
|                                 |                  | hours without activity (and Gradio's cached copies too)        |

On a Space (``SPACE_ID`` is set) the host defaults to ``0.0.0.0`` and public mode is on. The limits are checked by
:mod:`app.limits`; out-of-range requests are refused with a message that names the variable to change.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from dba.config import PRESET_NAMES as LIBRARY_PRESETS
from dba.config import Preset, preset

REPO_ROOT = Path(__file__).resolve().parents[1]

PRESET_NAMES = tuple(n for n in LIBRARY_PRESETS if n != "full")
"""The presets the Studio offers (``DBA_STUDIO_PRESET``): :func:`dba.config.preset`'s, but not ``full`` (the
library defaults, sized for a GPU and a patient user rather than a page)."""


def lora_rank_of(p: Preset) -> int:
    """The preset's LoRA rank; 0 = full fine-tuning."""
    return p.run.lora.rank if p.run.lora is not None else 0


def eval_every_for(p: Preset) -> int:
    """The preset's evaluation interval for the page's live curves: the preset's own, else a third of the run,
    rounded up so that the last intermediate evaluation does not land a step or two before the final one (16 steps:
    6, 12 and the final 16, not 5, 10, 15, 16)."""
    return p.run.eval_every or max(1, math.ceil(p.run.steps / 3))


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise SystemExit(f"{name} must be a positive number, got {raw!r}")
    return value


def _bool_env(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{name} must be 1 or 0, got {raw!r}")


def _choice_env(name: str, options: tuple[str, ...]) -> str | None:
    raw = (os.environ.get(name) or "").strip().lower()
    if raw and raw not in options:
        raise SystemExit(f"{name} must be one of {', '.join(options)}, got {raw!r}")
    return raw or None


def _lesson_preset_env() -> str | None:
    raw = (os.environ.get("DBA_STUDIO_LESSON_PRESET") or "").strip().lower()
    if raw and raw not in LIBRARY_PRESETS:
        raise SystemExit(f"DBA_STUDIO_LESSON_PRESET must be one of {', '.join(LIBRARY_PRESETS)}, got {raw!r}")
    return raw or None


@dataclass(frozen=True)
class Limits:
    """What one session may ask for in public mode (see the module docstring for the variables)."""

    max_steps: int = 200
    """Most optimiser steps of one run."""
    max_batch: int = 16
    """Largest batch size (fine-tune, compare, global gradient)."""
    max_eval_items: int = 100
    """Most quiz questions per eval set; "all" (0) is refused because the bundled sets may grow."""
    max_anchor_batches: int = 64
    """Most general batches averaged into one global gradient."""
    max_rank: int = 64
    """Largest LoRA rank."""
    allow_full: bool = False
    """Whether full fine-tuning (LoRA rank 0) is allowed: it holds every weight's gradient and optimiser state."""
    max_runs: int = 6
    """Most fine-tuning runs one comparison may start (each mixture ratio is a run)."""
    lr_min: float = 1e-6
    lr_max: float = 1e-2
    """The learning rates accepted, both ends included."""
    max_queue: int = 8
    """Jobs of all sessions together that may wait for the machine (a session has at most one job)."""
    max_new_tokens: int = 256
    """Longest chat answer."""
    quota_mb: int = 500
    """Disk one session may fill: its uploads, run folders and exports."""
    session_hours: float = 24.0
    """A session's files are removed after this many hours without activity."""

    @classmethod
    def from_env(cls) -> "Limits":
        d = cls()
        return cls(
            max_steps=_int_env("DBA_STUDIO_MAX_STEPS", d.max_steps),
            max_batch=_int_env("DBA_STUDIO_MAX_BATCH", d.max_batch),
            max_eval_items=_int_env("DBA_STUDIO_MAX_EVAL_ITEMS", d.max_eval_items),
            max_anchor_batches=_int_env("DBA_STUDIO_MAX_ANCHOR_BATCHES", d.max_anchor_batches),
            max_rank=_int_env("DBA_STUDIO_MAX_RANK", d.max_rank),
            allow_full=_bool_env("DBA_STUDIO_ALLOW_FULL", d.allow_full),
            max_runs=_int_env("DBA_STUDIO_MAX_RUNS", d.max_runs),
            lr_min=_float_env("DBA_STUDIO_LR_MIN", d.lr_min),
            lr_max=_float_env("DBA_STUDIO_LR_MAX", d.lr_max),
            max_queue=_int_env("DBA_STUDIO_MAX_QUEUE", d.max_queue),
            quota_mb=_int_env("DBA_STUDIO_QUOTA_MB", d.quota_mb),
            session_hours=_float_env("DBA_STUDIO_SESSION_HOURS", d.session_hours),
        )


@dataclass(frozen=True)
class StudioSettings:
    """What the environment asked for (see the module docstring)."""

    model: str = "default"
    """The model name the Model tab starts with."""
    preset_name: str = "quick"
    """A :func:`dba.config.preset` name (:data:`PRESET_NAMES`): the lesson's sizes and every form's start values."""
    host: str = "127.0.0.1"
    port: int = 7860
    runs_root: Path = field(default_factory=lambda: REPO_ROOT / "runs" / "studio")
    """Each session's run, anchor and compare folders live in its own folder under here."""
    upload_mb: int = 50
    """Largest data upload in MB (checked by :mod:`app.uploads`)."""
    anchor_mb: int = 512
    """Largest saved-anchor upload in MB (an anchor of a 135M model with LoRA on every linear is tens of MB)."""
    device: str = "auto"
    public: bool = False
    """Public mode: many anonymous users share the server (a Space): fixed model list, :class:`Limits` enforced,
    no server paths accepted from the page, old sessions' files removed."""
    models: tuple[str, ...] = ()
    """Models allowed in public mode besides "default" and :attr:`model` (the operator's ``DBA_STUDIO_MODELS``)."""
    limits: Limits = field(default_factory=Limits)
    secret: str | None = None
    """Signs the session keys (``DBA_STUDIO_SECRET``); None = a random one per start."""
    lesson_preset: str | None = None
    """The lesson's preset (``DBA_STUDIO_LESSON_PRESET``); None = ``smoke`` with the smoke preset, else ``lesson``."""
    lesson_opens: str | None = None
    """``recorded`` or ``live`` (``DBA_STUDIO_LESSON``): what the lesson tab shows when the page opens; None =
    ``recorded`` in public mode, else ``live``."""

    @property
    def lesson_preset_name(self) -> str:
        return self.lesson_preset or ("smoke" if self.preset_name == "smoke" else "lesson")

    @property
    def lesson_opens_on_recorded(self) -> bool:
        return (self.lesson_opens or ("recorded" if self.public else "live")) == "recorded"

    @property
    def preset(self) -> Preset:
        """The library's preset (a fresh object each time: changing it changes nothing else)."""
        return preset(self.preset_name)

    @property
    def upload_bytes(self) -> int:
        return self.upload_mb * 2**20

    @property
    def anchor_bytes(self) -> int:
        return self.anchor_mb * 2**20

    @property
    def http_max_bytes(self) -> int:
        """The upload size the HTTP server refuses above (Gradio's ``max_file_size``)."""
        return max(self.upload_bytes, self.anchor_bytes)

    @property
    def allowed_models(self) -> tuple[str, ...]:
        """The model list of public mode, in order: the embedded default, the start model, the operator's."""
        return tuple(dict.fromkeys(("default", self.model, *self.models)))

    @classmethod
    def from_env(cls) -> "StudioSettings":
        name = os.environ.get("DBA_STUDIO_PRESET", "quick").strip().lower() or "quick"
        if name not in PRESET_NAMES:
            raise SystemExit(f"DBA_STUDIO_PRESET must be one of {', '.join(PRESET_NAMES)}, got {name!r}")
        on_space = bool(os.environ.get("SPACE_ID"))
        public = _bool_env("DBA_STUDIO_PUBLIC", on_space)
        port = _int_env("DBA_STUDIO_PORT", _int_env("GRADIO_SERVER_PORT", 7860))
        runs = Path(os.environ.get("DBA_STUDIO_RUNS") or REPO_ROOT / "runs" / "studio").expanduser().resolve()
        models = tuple(m.strip() for m in (os.environ.get("DBA_STUDIO_MODELS") or "").split(",") if m.strip())
        return cls(
            model=(os.environ.get("DBA_STUDIO_MODEL") or "").strip() or preset(name).run.model,
            preset_name=name,
            host=os.environ.get("DBA_STUDIO_HOST") or ("0.0.0.0" if on_space else "127.0.0.1"),
            port=port,
            runs_root=runs,
            upload_mb=_int_env("DBA_STUDIO_UPLOAD_MB", 20 if public else 50),
            anchor_mb=_int_env("DBA_STUDIO_ANCHOR_MB", 100 if public else 512),
            device=os.environ.get("DBA_STUDIO_DEVICE", "auto").strip() or "auto",
            public=public,
            models=models,
            limits=Limits.from_env(),
            secret=os.environ.get("DBA_STUDIO_SECRET") or None,
            lesson_preset=_lesson_preset_env(),
            lesson_opens=_choice_env("DBA_STUDIO_LESSON", ("recorded", "live")),
        )
