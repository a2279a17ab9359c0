"""Run tracking: forward a run's metrics records to TensorBoard, trackio, Weights & Biases or MLflow.

``dba train --report-to tensorboard|trackio|wandb|mlflow|none``. The run folder's ``metrics.jsonl`` is always
written; a tracker is a thin adapter that receives the same records (through :func:`dba.train.finetune`'s
``callback``) and forwards them:

- a step record (optimiser step t, 0-based) is logged at global step t + 1 — the number of optimiser steps done, as
  the HF Trainer counts — as ``train/<field>`` for every numeric field (``loss``, ``grad_norm``, ``anchor_norm``,
  ``rho``, ``gamma``, ``lam``, ``lr``, ``effective_lr``, ``tokens`` ...);
- an evaluation record (after ``step`` steps; 0 is the base model) as ``eval/<score>`` (``s_g``, ``s_d``, ``s`` ...),
  with ``eval/<score>_lo`` and ``_hi`` when the record carries a 95 % interval (``ci``);
- the run's config once, at the start (TensorBoard: a text summary; trackio/W&B: the run config; MLflow: params).

Where each writes: TensorBoard event files in ``<run>/tensorboard/``; trackio its local database (or a Space, through
its own ``TRACKIO_SPACE_ID``); W&B and MLflow wherever their own settings say (``WANDB_MODE=offline``,
``MLFLOW_TRACKING_URI``; MLflow defaults to ``./mlruns``). A missing package is one clear message before the run
starts. A tracker that fails in the middle of a run warns once and is switched off: the run and metrics.jsonl go on.
"""
from __future__ import annotations

import importlib.util
import json
import math
import warnings
from pathlib import Path

from .errors import DBAError

BACKENDS = ("none", "tensorboard", "trackio", "wandb", "mlflow")
"""What ``--report-to`` accepts."""

PROJECT = "dba-studio"
"""The project / experiment name the trackers file runs under."""

_PACKAGE = {"tensorboard": ("tensorboard", "tensorboard"), "trackio": ("trackio", "trackio"),
            "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
"""backend -> (module to import, package to pip install)."""


def _number(v) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def record_scalars(record: dict) -> tuple[int, dict[str, float]] | None:
    """(global step, {name: value}) of a metrics record, or None for records that are not logged (phases ...)."""
    kind = record.get("type")
    if kind == "step":
        step = int(record.get("step", 0)) + 1
        values = {f"train/{k}": _number(v) for k, v in record.items() if k not in ("type", "step")}
    elif kind == "eval":
        step = int(record.get("step", 0))
        values = {f"eval/{k}": _number(v) for k, v in record.items() if k not in ("type", "step", "ci", "detail", "n")}
        for key, ci in (record.get("ci") or {}).items():
            if isinstance(ci, (list, tuple)) and len(ci) == 2:
                values[f"eval/{key}_lo"], values[f"eval/{key}_hi"] = _number(ci[0]), _number(ci[1])
    else:
        return None
    return step, {k: v for k, v in values.items() if v is not None}


def _flat(d: dict, prefix: str = "") -> dict[str, str | float | int | bool]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (str, int, float, bool)) or v is None:
            out[key] = "None" if v is None else v
        else:
            out[key] = json.dumps(v, default=str)
    return out


class Tracker:
    """Forwards metrics records to one backend. ``log(record)`` is the ``callback`` of :func:`dba.train.finetune`."""

    name = "none"

    def __init__(self):
        self.broken = False

    def log(self, record: dict) -> None:
        if self.broken:
            return
        got = record_scalars(record)
        if got is None or not got[1]:
            return
        try:
            self._log(*got)
        except Exception as e:  # noqa: BLE001 — tracking must never stop a run
            self.broken = True
            warnings.warn(f"--report-to {self.name}: logging failed ({type(e).__name__}: {e}); tracking is off for "
                          "the rest of this run (metrics.jsonl is complete).", UserWarning, stacklevel=2)

    def close(self, status: str = "completed") -> None:
        try:
            self._close(status)
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"--report-to {self.name}: closing failed ({type(e).__name__}: {e}).", UserWarning,
                          stacklevel=2)

    def _log(self, step: int, values: dict[str, float]) -> None:
        pass

    def _close(self, status: str) -> None:
        pass


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, run_dir: Path, config: dict, run_name: str):
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.dir))
        self.writer.add_text("config", "```json\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)

    def _log(self, step, values):
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def _close(self, status):
        self.writer.close()


class TrackioTracker(Tracker):
    name = "trackio"

    def __init__(self, run_dir: Path, config: dict, run_name: str):
        super().__init__()
        import trackio

        self.trackio = trackio
        trackio.init(project=PROJECT, name=run_name, config=_flat(config))

    def _log(self, step, values):
        self.trackio.log(values, step=step)

    def _close(self, status):
        self.trackio.finish()


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, run_dir: Path, config: dict, run_name: str):
        super().__init__()
        import wandb

        self.run = wandb.init(project=PROJECT, name=run_name, config=config, dir=str(run_dir))

    def _log(self, step, values):
        self.run.log(values, step=step)

    def _close(self, status):
        self.run.finish(exit_code=0 if status == "completed" else 1)


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, run_dir: Path, config: dict, run_name: str):
        super().__init__()
        import mlflow

        self.mlflow = mlflow
        mlflow.set_experiment(PROJECT)
        self.run = mlflow.start_run(run_name=run_name)
        params = {k: str(v)[:500] for k, v in _flat(config).items()}  # MLflow caps a param value at 500 chars
        mlflow.log_params(params)

    def _log(self, step, values):
        self.mlflow.log_metrics(values, step=step)

    def _close(self, status):
        self.mlflow.end_run(status="FINISHED" if status == "completed" else "KILLED")


_CLASSES = {"tensorboard": TensorBoardTracker, "trackio": TrackioTracker, "wandb": WandbTracker,
            "mlflow": MlflowTracker}


def open_tracker(kind: str | None, run_dir: str | Path, config: dict | None = None,
                 run_name: str | None = None) -> Tracker:
    """A started tracker for ``kind`` (one of :data:`BACKENDS`; None or "none": a tracker that does nothing).

    Raises :class:`DBAError` with one line when the backend's package is not installed or it cannot start.
    """
    kind = (kind or "none").strip().lower()
    if kind not in BACKENDS:
        raise DBAError(f"Unknown --report-to {kind!r}; use one of {', '.join(BACKENDS)}.")
    if kind == "none":
        return Tracker()
    module, package = _PACKAGE[kind]
    if importlib.util.find_spec(module) is None:
        raise DBAError(f"--report-to {kind} needs the package '{package}', which is not installed: "
                       f"pip install {package} (or choose another tracker; metrics.jsonl is always written).")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _CLASSES[kind](run_dir, config or {}, run_name or run_dir.name)
    except DBAError:
        raise
    except Exception as e:  # a backend that cannot start (login, server URI ...): one line, before the run
        first = str(e).splitlines()[0] if str(e) else ""
        raise DBAError(f"--report-to {kind} could not start ({type(e).__name__}: {first}).") from None
