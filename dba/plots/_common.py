"""Inputs and figure helpers shared by the plot modules (internal)."""
from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..errors import DBAError
from .colors import _num, run_label


PNG_DPI = 120
"""Resolution of saved PNGs (a 10-inch-wide figure is 1200 px: sharp in the app, small on disk)."""


NO_EVALS = "no evaluations yet"


NO_STEPS = "no training steps yet"


def _records(run_or_records) -> list[dict]:
    if run_or_records is None:
        return []
    if isinstance(run_or_records, (str, os.PathLike)):
        raise DBAError(f"Plots take data: read the run folder first with dba.runs.read_run({str(run_or_records)!r}).")
    if isinstance(run_or_records, Mapping):
        return list(run_or_records.get("metrics") or [])
    recs = list(run_or_records)
    if recs and isinstance(recs[0], Mapping) and "metrics" in recs[0]:
        raise DBAError("Pass one run (or its list of step records), not a list of runs.")
    return recs


def _step_records(metrics: Iterable[Mapping]) -> list[Mapping]:
    """Step records in step order (the last one wins when a step repeats, e.g. after a resume)."""
    by_step: dict[int, Mapping] = {}
    for m in metrics or []:
        if m.get("type", "step") != "step" or m.get("step") is None:
            continue
        by_step[int(m["step"])] = m
    return [by_step[k] for k in sorted(by_step)]


def _eval_records(metrics: Iterable[Mapping]) -> list[Mapping]:
    by_step: dict[int, Mapping] = {}
    for m in metrics or []:
        if m.get("type") == "eval" and m.get("step") is not None:
            by_step[int(m["step"])] = m
    return [by_step[k] for k in sorted(by_step)]


def _series(records: Sequence[Mapping], key: str, skip_skipped: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one field, leaving out records where it is missing or not finite."""
    xs, ys = [], []
    for m in records:
        if skip_skipped and m.get("skipped"):
            continue
        v = _num(m.get(key))
        if v is not None:
            xs.append(int(m["step"]))
            ys.append(v)
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def _score_of(obj, key: str) -> float | None:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return _num(obj.get(key))
    return _num(getattr(obj, key, None))


def _read_results(results) -> list[dict]:
    """Rows of a results table: a list of dicts, a pandas DataFrame, or a CSV path."""
    if results is None:
        return []
    if isinstance(results, (str, os.PathLike)):
        p = Path(results)
        if not p.exists():
            raise DBAError(f"Results file not found: {p}")
        with open(p, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if hasattr(results, "to_dict") and hasattr(results, "columns"):  # pandas DataFrame
        return results.to_dict("records")
    return [dict(r) for r in results]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = PNG_DPI) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically: a temp file in the same folder, then ``os.replace``, so a
    reader (the app polling the folder) never sees a half-written image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png.tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _finish(fig: Figure, path) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained", facecolor="white")


def _tidy(ax, grid: bool = True) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    if grid:
        ax.grid(True, alpha=0.25, linewidth=0.6)


def _note(ax, text: str) -> None:
    """A centred grey note in an empty panel ("no evaluations yet")."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=11, color="#777777",
            style="italic", gid="note")


def _legend(ax, **kw) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, frameon=False, **kw)


def _run_legend(fig: Figure, ax, n_runs: int, loc: str = "best") -> None:
    """The legend of a multi-run plot: inside when there are few runs, beside the axes (figure widened) when many,
    so it never hides the curves."""
    if n_runs > 5:
        w, h = fig.get_size_inches()
        fig.set_size_inches(w + 1.8, h)
        _legend(ax, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        _legend(ax, loc=loc)


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average with a window shrinking at the ends (no lag, same length as ``y``)."""
    n = len(y)
    if n == 0 or window <= 1:
        return y.astype(float)
    h = window // 2
    c = np.concatenate([[0.0], np.cumsum(y, dtype=float)])
    idx = np.arange(n)
    lo, hi = np.maximum(idx - h, 0), np.minimum(idx + h + 1, n)
    return (c[hi] - c[lo]) / (hi - lo)


def _smooth_window(n: int) -> int:
    return max(1, min(25, n // 12))


def _title_of(run: Mapping) -> str:
    st = run.get("status") or {}
    parts = [run.get("_label") or run_label(run)]
    if st.get("steps"):
        parts.append(f"step {st.get('step', 0)}/{st['steps']}")
    if st.get("status"):
        parts.append(str(st["status"]))
    return " · ".join(parts)


_SCORE_NAMES = {"s_g": ("$S_G$ — general score", "$S_G$ (share correct, 0–1)"),
                "s_d": ("$S_D$ — domain score", "$S_D$ (share correct, 0–1)"),
                "nll_g": ("General held-out answer NLL", "NLL per answer token (nats; lower is better)"),
                "nll_d": ("Domain held-out answer NLL", "NLL per answer token (nats; lower is better)")}

