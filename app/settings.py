"""The Studio's settings, read once from environment variables (for tests, classrooms and Hugging Face Spaces).

| variable                   | default            | what it sets                                                     |
|----------------------------|--------------------|------------------------------------------------------------------|
| ``DBA_STUDIO_MODEL``       | ``default``        | the model the page starts with ("tiny" in tests)                 |
| ``DBA_STUDIO_PRESET``      | ``quick``          | size of the teaching preset and of the start values: ``quick``  |
|                            |                    | (about 12 min on 2 CPU cores) or ``smoke`` (seconds, tests)      |
| ``DBA_STUDIO_HOST``        | ``127.0.0.1``      | the address to listen on (``0.0.0.0`` on a Space or a LAN)       |
| ``DBA_STUDIO_PORT``        | ``7860``           | the port (``GRADIO_SERVER_PORT`` is honoured too)                |
| ``DBA_STUDIO_RUNS``        | ``runs/studio``    | where run, anchor and compare folders are written                |
| ``DBA_STUDIO_UPLOAD_MB``   | ``50``             | the largest data upload accepted, in MB                          |
| ``DBA_STUDIO_ANCHOR_MB``   | ``512``            | the largest saved-anchor upload accepted, in MB                  |
| ``DBA_STUDIO_DEVICE``      | ``auto``           | ``auto`` (CUDA when present), ``cpu``, ``cuda``                  |

On a Space (``SPACE_ID`` is set) the host defaults to ``0.0.0.0``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Preset:
    """Sizes of a run started from the teaching preset (and the start values of the forms)."""

    steps: int
    """Optimiser steps of each fine-tune."""
    batch_size: int
    """Examples per batch."""
    anchor_batches: int
    """General batches averaged into the global gradient."""
    eval_items: int
    """Items of each eval set scored before and after a run."""
    lora_rank: int
    """LoRA rank of the adapter."""
    max_length: int = 256
    """Longest example in tokens."""
    eval_scorer: str = "mean"
    """How S_G / S_D are scored: "mean" (log-likelihood and generation), "loglik" (faster) or "gen"."""
    eval_every: int = 0
    """Evaluate every N steps (0 = a third of the run), so the S_G / S_D curves have points in between."""
    lr: float | None = None
    """η_0; None = the engine's default (dba.optim.AnnealConfig)."""
    duration: str = ""
    """How long the lesson takes, as measured, for the page to tell the class before they click."""


def eval_every_for(preset: Preset) -> int:
    """The preset's evaluation interval; 0 means a third of the run, rounded up so that the last intermediate
    evaluation does not land a step or two before the final one (16 steps: 6, 12 and the final 16, not 5, 10, 15, 16)."""
    return preset.eval_every or max(1, math.ceil(preset.steps / 3))


def _quick() -> Preset:
    """``dba compare --quick``'s settings (dba.compare.QUICK, sized to finish in minutes on 2 CPU cores) — the lesson
    shows the same regime as the experiment. Whether direct fine-tuning forgets there is measured, not assumed: see
    docs/defaults.md (at these sizes it mostly does not, and the lesson's summary says so)."""
    from dba.compare import QUICK

    return Preset(steps=QUICK["steps"], batch_size=QUICK["batch_size"], anchor_batches=QUICK["anchor_batches"],
                  eval_items=QUICK["eval_items"], lora_rank=QUICK["lora_rank"], max_length=QUICK.get("max_length", 256),
                  eval_every=QUICK.get("eval_every", 0), lr=QUICK.get("lr"),
                  # measured 2026-11-29 on 2 idle CPU cores: 13.3 min with 4 evaluations per run; 3 since
                  duration="about 12 minutes on 2 CPU cores with the embedded model, a minute or two on a GPU")


PRESETS = {
    "quick": _quick(),
    # seconds on the tiny model: for the app's own tests and for checking a deployment.
    "smoke": Preset(steps=3, batch_size=4, anchor_batches=2, eval_items=4, lora_rank=4, max_length=128,
                    eval_scorer="loglik", eval_every=3),
}


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


@dataclass(frozen=True)
class StudioSettings:
    """What the environment asked for (see the module docstring)."""

    model: str = "default"
    """The model name the Model tab starts with."""
    preset_name: str = "quick"
    """Key of :data:`PRESETS`."""
    host: str = "127.0.0.1"
    port: int = 7860
    runs_root: Path = field(default_factory=lambda: REPO_ROOT / "runs" / "studio")
    """Run, anchor, compare and export folders live under here; paths from the page must stay inside it."""
    upload_mb: int = 50
    """Largest data upload in MB (checked by :mod:`app.uploads`)."""
    anchor_mb: int = 512
    """Largest saved-anchor upload in MB (an anchor of a 135M model with LoRA on every linear is tens of MB)."""
    device: str = "auto"

    @property
    def preset(self) -> Preset:
        return PRESETS[self.preset_name]

    @property
    def upload_bytes(self) -> int:
        return self.upload_mb * 2**20

    @property
    def anchor_bytes(self) -> int:
        return self.anchor_mb * 2**20

    @classmethod
    def from_env(cls) -> "StudioSettings":
        preset = os.environ.get("DBA_STUDIO_PRESET", "quick").strip().lower() or "quick"
        if preset not in PRESETS:
            raise SystemExit(f"DBA_STUDIO_PRESET must be one of {', '.join(PRESETS)}, got {preset!r}")
        on_space = bool(os.environ.get("SPACE_ID"))
        port = _int_env("DBA_STUDIO_PORT", _int_env("GRADIO_SERVER_PORT", 7860))
        runs = Path(os.environ.get("DBA_STUDIO_RUNS") or REPO_ROOT / "runs" / "studio").expanduser().resolve()
        return cls(
            model=os.environ.get("DBA_STUDIO_MODEL", "default").strip() or "default",
            preset_name=preset,
            host=os.environ.get("DBA_STUDIO_HOST") or ("0.0.0.0" if on_space else "127.0.0.1"),
            port=port,
            runs_root=runs,
            upload_mb=_int_env("DBA_STUDIO_UPLOAD_MB", 50),
            anchor_mb=_int_env("DBA_STUDIO_ANCHOR_MB", 512),
            device=os.environ.get("DBA_STUDIO_DEVICE", "auto").strip() or "auto",
        )
