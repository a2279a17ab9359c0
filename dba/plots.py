"""Plots of runs, anchors and comparisons — matplotlib figures for the app, the notebooks and ``compare``.

Every function takes plain data (a run as returned by :func:`dba.train.read_run`, lists of such runs, a
:class:`~dba.global_gradient.GlobalGradient`, rows of a results table), returns a :class:`matplotlib.figure.Figure`,
and with ``path=`` also writes a PNG there atomically (temp file beside it, then rename).

Figures are built with ``Figure()`` directly — no ``pyplot`` and no global backend or rcParams change — so they are
safe to draw from the app's worker threads and do not disturb a notebook's own matplotlib setup. (In a notebook,
a Figure shows inline once the inline backend is active, e.g. after ``%matplotlib inline`` or importing pyplot;
``display(fig)`` then works.)

The app draws these while a run is in progress, so every function copes with missing data: no runs, no evaluations
yet, a step record without a loss, a score that is ``None``. An empty panel carries a short note saying what is
missing instead of raising.

Colours are fixed per method so a method looks the same in every figure: ``direct`` red, ``mixture`` blues (darker
for a larger general share r), ``dba`` green, DBA ablations (GGB / DC / AL off) orange / purple / brown,
``projection`` teal, the "relative" variant pink, the base model grey. No formula lives here: λ = f(ρ) comes from :func:`dba.optim.step_scale`
and the iso-S curves from :func:`dba.scores.harmonic_mean`.
"""
from __future__ import annotations

import csv
import math
import os
import re
import tempfile
from collections import OrderedDict
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .errors import DBAError

__all__ = [
    "scores_over_steps", "score_plane", "similarity_and_scale", "dc_function", "dc_presets", "loss_curves",
    "spectrum", "score_bars", "live_dashboard", "run_label", "method_color", "save_figure",
]

PNG_DPI = 120
"""Resolution of saved PNGs (a 10-inch-wide figure is 1200 px: sharp in the app, small on disk)."""

NO_EVALS = "no evaluations yet"
NO_STEPS = "no training steps yet"

# --------------------------------------------------------------------------------------------------------------------
# Colours and labels (one colour per method, everywhere)

_COLORS = {
    "base": "#555555",
    "direct": "#d62728",
    "mixture": "#1f77b4",
    "dba": "#2ca02c",
    "dba-ggb-off": "#ff7f0e",
    "dba-dc-off": "#9467bd",
    "dba-al-off": "#8c564b",
    "dba-ablation": "#bcbd22",   # more than one piece switched off
    "projection": "#17becf",
    "dba-relative": "#e377c2",   # this project's variant: anchor rescaled to ‖g_D‖
}
_OTHER = ["#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39"]
_ABLATION = {c: re.compile(rf"(\bno[-_ ]?{c}\b|\b{c}[-_ ]?off\b|\bw/?o[-_ ]?{c}\b)") for c in ("ggb", "dc", "al")}


def method_kind(label: str) -> str:
    """The colour family of a run label or method name: base, direct, mixture, dba, dba-…-off, projection, other."""
    s = str(label).lower()
    if s.startswith("base"):
        return "base"
    if "projection" in s or "a-gem" in s or "agem" in s:
        return "projection"
    if "mixture" in s or s.startswith("mix"):
        return "mixture"
    if "direct" in s:
        return "direct"
    if "dba" in s or "ggb" in s:
        off = [c for c, pat in _ABLATION.items() if pat.search(s)]
        if len(off) == 1:
            return f"dba-{off[0]}-off"
        if off:
            return "dba-ablation"
        return "dba-relative" if "relative" in s else "dba"
    return "other"


def _ratio_from_label(label: str) -> float | None:
    m = re.search(r"(?:r\s*=\s*|mixture[-_ ])([0-9.]+)", str(label))   # "mixture (r=0.3)" or "mixture-0.3"
    try:
        return float(m.group(1)) if m else None
    except ValueError:
        return None


def method_color(label: str, ratio: float | None = None) -> str:
    """The colour of a method (by its label), the same in every figure. Mixture runs get a shade of blue by their
    general share r (given, or read from ``r=…`` in the label); unknown labels get a stable colour of their own."""
    kind = method_kind(label)
    if kind == "mixture":
        r = ratio if ratio is not None else _ratio_from_label(label)
        if r is None or not math.isfinite(r):
            return _COLORS["mixture"]
        return to_hex(colormaps["Blues"](0.45 + 0.5 * min(max(r, 0.0), 1.0)))
    if kind in _COLORS:
        return _COLORS[kind]
    return _OTHER[sum(map(ord, str(label))) % len(_OTHER)]


def _fmt_ratio(r) -> str:
    return f"{float(r):g}"


def run_label(run: Mapping) -> str:
    """A run's legend label: its ``label`` key, else the method from its config — ``mixture (r=0.3)``, ``dba``,
    ``dba (GGB off)``, ``projection`` — else its folder name."""
    if run.get("label"):
        return str(run["label"])
    cfg = run.get("config") or {}
    method = cfg.get("method") or (run.get("status") or {}).get("method")
    if not method:
        return Path(run["dir"]).name if run.get("dir") else "run"
    if method == "mixture":
        r = cfg.get("mixture_ratio")
        return f"mixture (r={_fmt_ratio(r)})" if r is not None else "mixture"
    if method == "dba":
        d = cfg.get("dba") or {}
        boost, corr, anneal = d.get("boost") or {}, d.get("correction") or {}, d.get("anneal") or {}
        if boost.get("mode") == "projection":
            return "projection"
        off = []
        if boost.get("enabled") is False:
            off.append("GGB")
        if corr.get("enabled") is False or corr.get("function") == "off":
            off.append("DC")
        if anneal.get("enabled") is False:
            off.append("AL")
        return f"dba ({', '.join(o + ' off' for o in off)})" if off else "dba"
    return str(method)


def _run_color(run: Mapping, label: str) -> str:
    ratio = (run.get("config") or {}).get("mixture_ratio") if method_kind(label) == "mixture" else None
    return method_color(label, _num(ratio))


# --------------------------------------------------------------------------------------------------------------------
# Inputs


def _num(x) -> float | None:
    """A finite float, or None (None, '', NaN, inf, text that is not a number)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _as_runs(runs) -> list[dict]:
    """One run, a list of runs, run folders (paths), or None -> a list of run dicts, each with ``_label`` and
    ``_color`` set (labels made unique with the seed or a counter when several runs share one)."""
    if runs is None:
        return []
    if isinstance(runs, (str, os.PathLike, Mapping)):
        runs = [runs]
    out = []
    for r in runs:
        if isinstance(r, (str, os.PathLike)):
            from .train import read_run  # lazy: plots must not need the training stack to import
            r = read_run(r)
        if not isinstance(r, Mapping):
            raise DBAError(f"A run must be a dict from dba.train.read_run(dir) or a run folder, not {type(r).__name__}.")
        out.append(dict(r))
    labels = [run_label(r) for r in out]
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    seen: dict[str, int] = {}
    for r, lab in zip(out, labels):
        shown = lab
        if counts[lab] > 1:  # e.g. several seeds of one method: keep them apart in the legend
            seen[lab] = seen.get(lab, 0) + 1
            seed = (r.get("config") or {}).get("seed")
            shown = f"{lab} seed {seed}" if seed is not None and not r.get("label") else f"{lab} #{seen[lab]}"
        r["_label"], r["_color"] = shown, _run_color(r, lab)
    return out


def _records(run_or_records) -> list[dict]:
    if run_or_records is None:
        return []
    if isinstance(run_or_records, (str, os.PathLike)):
        return _as_runs(run_or_records)[0]["metrics"]
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


# --------------------------------------------------------------------------------------------------------------------
# Figure helpers


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


# --------------------------------------------------------------------------------------------------------------------
# Scores


_SCORE_NAMES = {"s_g": ("$S_G$ — general score", "$S_G$ (share correct, 0–1)"),
                "s_d": ("$S_D$ — domain score", "$S_D$ (share correct, 0–1)")}


def _draw_scores(ax, runs: list[dict], key: str, show_base: bool = True) -> int:
    """Draw one score vs step for every run; returns how many runs had a value."""
    drawn = 0
    bases: list[tuple[float, str, str]] = []
    for r in runs:
        evals = _eval_records(r.get("metrics"))
        x, y = _series(evals, key, skip_skipped=False)
        if len(x) == 0:
            continue
        drawn += 1
        ax.plot(x, y, marker="o", markersize=4, linewidth=1.8, color=r["_color"], label=r["_label"],
                gid=f"{key}:{r['_label']}")
        if x[0] == 0:
            bases.append((float(y[0]), r["_color"], r["_label"]))
    if show_base and bases:
        values = sorted({round(b[0], 9) for b in bases})
        if len(values) == 1:  # the usual case: every run starts from the same base model
            ax.axhline(values[0], color=_COLORS["base"], linestyle=":", linewidth=1.4, label="base model",
                       gid=f"base:{key}")
        else:
            for v, c, lab in bases:
                ax.axhline(v, color=c, linestyle=":", linewidth=1.0, alpha=0.8, gid=f"base:{key}:{lab}")
    return drawn


def scores_over_steps(runs, path=None) -> Figure:
    """S_G (left) and S_D (right) against the optimiser step for each run, from its ``eval`` records; the base model
    (the step-0 evaluation) is a dotted horizontal reference."""
    runs = _as_runs(runs)
    fig = _new_figure(11, 4.2)
    axes = fig.subplots(1, 2, sharex=True)
    any_drawn = 0
    for ax, key in zip(axes, ("s_g", "s_d")):
        title, ylabel = _SCORE_NAMES[key]
        drawn = _draw_scores(ax, runs, key)
        any_drawn = max(any_drawn, drawn)
        ax.set_title(title)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _tidy(ax)
        if not drawn:
            _note(ax, NO_EVALS)
    if any_drawn:
        _run_legend(fig, axes[1], any_drawn)
    fig.suptitle("Scores during fine-tuning (dotted: base model)", fontsize=12)
    return _finish(fig, path)


def _iso_s(ax, xlim, ylim) -> None:
    """Faint contours of S = harmonic_mean(S_D, S_G) (from dba.scores) behind the trajectories."""
    from .scores import harmonic_mean

    # the grid covers the visible window only, so the contour labels land inside it
    X, Y = np.meshgrid(np.linspace(*xlim, 161), np.linspace(*ylim, 161))
    Z = np.vectorize(harmonic_mean, otypes=[float])(X, Y)
    span = float(Z.max() - Z.min())
    step = 0.05 if span < 0.35 else 0.1
    levels = np.round(np.arange(step, 1.0, step), 2)
    levels = levels[(levels > Z.min()) & (levels < Z.max())]
    if len(levels) == 0:
        return
    cs = ax.contour(X, Y, Z, levels=levels, colors="#999999", linewidths=0.7, alpha=0.6, zorder=0)
    cs.set_gid("iso-S")
    ax.clabel(cs, fmt=lambda v: f"S={v:.2f}".rstrip("0").rstrip("."), fontsize=7, inline=True, inline_spacing=3)


def score_plane(runs, base=None, path=None) -> Figure:
    """Each run's path in the (S_D, S_G) plane — x = domain score, y = general score — with arrows from one
    evaluation to the next, the base model as a star and faint iso-S curves (S = harmonic mean) behind.

    ``base``: the base model's scores, a dict or object with ``s_g`` and ``s_d`` (e.g. :class:`dba.scores.Scores`);
    default: the first step-0 evaluation among the runs.
    """
    runs = _as_runs(runs)
    fig = _new_figure(7.2, 6.0)
    ax = fig.subplots()
    pts_all: list[tuple[float, float]] = []
    ends: list[tuple[int, float, float, str]] = []
    drawn = 0
    for r in runs:
        evals = [e for e in _eval_records(r.get("metrics"))
                 if _num(e.get("s_d")) is not None and _num(e.get("s_g")) is not None]
        if not evals:
            continue
        drawn += 1
        xs = [float(e["s_d"]) for e in evals]
        ys = [float(e["s_g"]) for e in evals]
        c = r["_color"]
        ax.plot(xs, ys, marker="o", markersize=4, linewidth=0, color=c, label=r["_label"], zorder=3,
                gid=f"plane:{r['_label']}")
        for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
            if (x0, y0) != (x1, y1):
                ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=2,
                            arrowprops=dict(arrowstyle="-|>", color=c, lw=1.6, shrinkA=3, shrinkB=3,
                                            mutation_scale=11))
        ax.plot([xs[-1]], [ys[-1]], marker="o", markersize=9, markerfacecolor=c, markeredgecolor="white",
                linewidth=0, zorder=4)
        ends.append((int(evals[-1]["step"]), xs[-1], ys[-1], c))
        pts_all += list(zip(xs, ys))
        if base is None and int(evals[0]["step"]) == 0:
            base = {"s_d": xs[0], "s_g": ys[0]}
    if len({e[0] for e in ends}) > 1:  # runs at different points (live, or different budgets): say where each is
        for step, x_end, y_end, c in ends:
            ax.annotate(f"step {step}", (x_end, y_end), textcoords="offset points", xytext=(6, 5), fontsize=7,
                        color=c)
    b_d, b_g = _score_of(base, "s_d"), _score_of(base, "s_g")
    if b_d is not None and b_g is not None:
        ax.plot([b_d], [b_g], marker="*", markersize=17, color="#222222", markeredgecolor="white", linewidth=0,
                label="base model", zorder=5, gid="base")
        pts_all.append((b_d, b_g))
    if pts_all:
        arr = np.asarray(pts_all)
        lo, hi = arr.min(axis=0), arr.max(axis=0)
        pad = np.maximum(0.06, 0.15 * (hi - lo))
        lo, hi = np.clip(lo - pad, 0.0, 1.0), np.clip(hi + pad, 0.0, 1.0)
        xlim, ylim = (lo[0], hi[0]), (lo[1], hi[1])
    else:
        xlim = ylim = (0.0, 1.0)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    _iso_s(ax, xlim, ylim)
    ax.set_xlabel("$S_D$ — domain score (share correct, 0–1)  →  learned the domain")
    ax.set_ylabel("$S_G$ — general score (share correct, 0–1)  →  kept general ability")
    ax.set_title("Runs in the score plane (grey curves: equal $S$ = harmonic mean)")
    _tidy(ax, grid=False)
    if not drawn:
        _note(ax, NO_EVALS)
    _run_legend(fig, ax, drawn)
    if ends and len({e[0] for e in ends}) == 1:
        ax.text(0.99, 0.01, f"● = step {ends[0][0]}", transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
                color="#555555")
    return _finish(fig, path)


# --------------------------------------------------------------------------------------------------------------------
# The DBA step: similarity, step scale, boost weight, learning rate

_RHO_C, _LAM_C, _GAMMA_C, _LR_C = "#1f77b4", "#d95f02", "#2ca02c", "#7570b3"


def _draw_rho_lam(ax, steps: list[Mapping]) -> tuple[Any, bool]:
    """ρ_t on ``ax`` (left) and λ_t on a twin axis (right). Returns (twin axis or None, anything drawn)."""
    x_r, rho = _series(steps, "rho")
    x_l, lam = _series(steps, "lam")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(r"$\rho_t$ = cos($g_D$, $\hat g_G$)", color=_RHO_C)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _tidy(ax)
    if len(x_r) == 0 and len(x_l) == 0:
        _note(ax, NO_STEPS)
        return None, False
    # λ_t is a function of the raw ρ_t, so both are drawn raw; long runs get a moving average on top to stay legible
    long_run = max(len(x_r), len(x_l)) > 100
    ax.axhline(0.0, color="#bbbbbb", linewidth=0.8)
    ax.plot(x_r, rho, color=_RHO_C, linewidth=0.7 if long_run else 1.5, alpha=0.3 if long_run else 1.0,
            marker=None if long_run else ".", markersize=4, label=None if long_run else r"$\rho_t$", gid="rho-raw")
    if long_run:
        ax.plot(x_r, _smooth(rho, _smooth_window(len(rho))), color=_RHO_C, linewidth=1.8,
                label=r"$\rho_t$ (moving average)", gid="rho")
    anchor = [_num(m.get("anchor_norm")) for m in steps]
    no_anchor = bool(anchor) and all(a in (None, 0.0) for a in anchor)
    if no_anchor or (len(rho) and np.abs(rho).max() > 0.5):  # else zoom in: real cosines are often small
        ax.set_ylim(-1.05, 1.05)
    ax.tick_params(axis="y", colors=_RHO_C)
    tw = ax.twinx()
    tw.plot(x_l, lam, color=_LAM_C, linewidth=0.7 if long_run else 1.5, alpha=0.3 if long_run else 1.0,
            label=None if long_run else r"$\lambda_t$ (DC step multiplier)", gid="lam")
    if long_run:
        tw.plot(x_l, _smooth(lam, _smooth_window(len(lam))), color=_LAM_C, linewidth=1.8,
                label=r"$\lambda_t$ (moving average)", gid="lam-smooth")
    tw.set_ylabel(r"$\lambda_t$ (× learning rate)", color=_LAM_C)
    tw.tick_params(axis="y", colors=_LAM_C)
    tw.spines["top"].set_visible(False)
    if len(lam):  # keep λ = 1 (no correction) in view as the reference level
        lo, hi = min(float(lam.min()), 1.0), max(float(lam.max()), 1.0)
        pad = max(0.05, 0.1 * (hi - lo))
        tw.set_ylim(lo - pad, hi + pad)
    if no_anchor:
        ax.text(0.01, 0.02, "no anchor in this run: ρ = 0, λ = 1", transform=ax.transAxes, fontsize=8,
                color="#777777")
    lines = [ln for ln in ax.get_lines() + tw.get_lines() if not ln.get_label().startswith("_")]
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, frameon=False, loc="upper right", ncol=2)
    return tw, True


def similarity_and_scale(run_or_records, path=None) -> Figure:
    """ρ_t (gradient similarity) and λ_t (DC step multiplier) over the steps of one run (top, twin axes); below, when
    the records have them, γ_t (GGB weight) and the applied learning rate lr_t·λ_t (twin axes).

    Accepts a run dict, a run folder, or the list of its step records (e.g. the app's live buffer)."""
    steps = _step_records(_records(run_or_records))
    has_lower = any(_num(m.get("gamma")) is not None or _num(m.get("effective_lr")) is not None
                    or _num(m.get("lr")) is not None for m in steps)
    fig = _new_figure(10, 6.2 if has_lower else 4.0)
    if has_lower:
        ax, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    else:
        ax, ax2 = fig.subplots(), None
    _draw_rho_lam(ax, steps)
    ax.set_title("Gradient similarity and the step it sets")
    if ax2 is not None:
        ax.set_xlabel("")
        _draw_gamma_lr(ax2, steps)
    name = run_or_records.get("label") or run_label(run_or_records) if isinstance(run_or_records, Mapping) else None
    if name:
        fig.suptitle(name, fontsize=12)
    return _finish(fig, path)


def _draw_gamma_lr(ax, steps: list[Mapping]) -> None:
    x_g, gamma = _series(steps, "gamma")
    x_e, eff = _series(steps, "effective_lr")
    if len(x_e) == 0:  # older records: the applied lr is lr_t·λ_t
        pairs = [(int(m["step"]), _num(m.get("lr")), _num(m.get("lam"))) for m in steps if not m.get("skipped")]
        pairs = [(s, a * (b if b is not None else 1.0)) for s, a, b in pairs if a is not None]
        x_e = np.asarray([p[0] for p in pairs], dtype=float)
        eff = np.asarray([p[1] for p in pairs], dtype=float)
    x_l, lr = _series(steps, "lr")
    ax.plot(x_g, gamma, color=_GAMMA_C, linewidth=1.6, label=r"$\gamma_t$ (GGB weight)", gid="gamma")
    ax.set_ylabel(r"$\gamma_t$", color=_GAMMA_C)
    ax.tick_params(axis="y", colors=_GAMMA_C)
    ax.set_xlabel("optimiser step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _tidy(ax)
    if len(gamma) and gamma.max() <= 0:
        ax.set_ylim(-0.05, 1.0)
    tw = ax.twinx()
    tw.plot(x_e, eff, color=_LR_C, linewidth=1.6, label=r"lr$_t\cdot\lambda_t$ (applied)", gid="effective_lr")
    if len(x_l):
        tw.plot(x_l, lr, color=_LR_C, linewidth=1.0, linestyle="--", alpha=0.7, label=r"lr$_t$ (annealed)",
                gid="lr")
    tw.set_ylabel("learning rate", color=_LR_C)
    tw.tick_params(axis="y", colors=_LR_C)
    tw.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    tw.spines["top"].set_visible(False)
    if len(x_g) == 0 and len(x_e) == 0:
        _note(ax, NO_STEPS)
        return
    lines = ax.get_lines() + tw.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, frameon=False, loc="upper right")


def dc_presets() -> "OrderedDict[str, Any]":
    """The built-in DC functions side by side: paper (the default reconstruction), conservative, off."""
    from .optim import CorrectionConfig

    return OrderedDict(paper=CorrectionConfig(), conservative=CorrectionConfig(function="conservative"),
                       off=CorrectionConfig(function="off"))


def _correction_from(obj):
    """A CorrectionConfig from a CorrectionConfig, DBAConfig, FinetuneConfig, or their dicts (config.json)."""
    from .optim import CorrectionConfig

    if obj is None:
        return CorrectionConfig()
    if isinstance(obj, CorrectionConfig):
        return obj
    if hasattr(obj, "correction"):          # DBAConfig
        return obj.correction
    if hasattr(obj, "dba") and hasattr(obj.dba, "correction"):  # FinetuneConfig
        return obj.dba.correction
    if isinstance(obj, Mapping):
        if "config" in obj and isinstance(obj["config"], Mapping):   # a run dict
            return _correction_from(obj["config"])
        if "dba" in obj:
            return _correction_from(obj["dba"] or {})
        if "correction" in obj:
            return _correction_from(obj["correction"] or {})
        known = {f.name for f in fields(CorrectionConfig)}
        return CorrectionConfig(**{k: v for k, v in obj.items() if k in known})
    raise DBAError(f"Cannot read a DC config from {type(obj).__name__}.")


def _correction_label(cfg) -> str:
    f = cfg.function if not callable(cfg.function) else getattr(cfg.function, "__name__", "custom")
    if not cfg.enabled or f == "off":
        return "off (λ = 1)"
    return f"{f} (β={cfg.beta:g}, λ∈[{cfg.lam_min:g}, {cfg.lam_max:g}])"


def _named_corrections(correction_config) -> list[tuple[str, Any]]:
    from .optim import CorrectionConfig

    if isinstance(correction_config, Mapping) and correction_config and all(
            isinstance(v, (CorrectionConfig, Mapping)) or is_dataclass(v) for v in correction_config.values()) \
            and not ({"config", "dba", "correction"} & set(correction_config)) \
            and not ({f.name for f in fields(CorrectionConfig)} & set(correction_config)):
        return [(str(k), _correction_from(v)) for k, v in correction_config.items()]
    if isinstance(correction_config, (list, tuple)):
        cfgs = [_correction_from(c) for c in correction_config]
        return [(_correction_label(c), c) for c in cfgs]
    cfg = _correction_from(correction_config)
    return [(_correction_label(cfg), cfg)]


_DC_LINE_COLORS = ["#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e"]


def dc_function(correction_config=None, observed_rho=None, current_rho=None, path=None) -> Figure:
    """The DC step multiplier λ = f(ρ) over ρ ∈ [−1, 1], computed by :func:`dba.optim.step_scale`.

    - ``correction_config``: a CorrectionConfig (default: the paper reconstruction), a DBAConfig / FinetuneConfig /
      run dict / config.json dict, a list of configs, or a dict ``{name: config}`` to overlay several (see
      :func:`dc_presets`).
    - ``observed_rho``: the ρ_t seen so far (a list of floats, or a run / step records to read them from), drawn as a
      rug along the x axis.
    - ``current_rho``: the latest ρ_t, marked on the (first) curve.
    """
    from .optim import step_scale

    named = _named_corrections(correction_config)
    fig = _new_figure(7.5, 4.6)
    ax = fig.subplots()
    rho = np.linspace(-1.0, 1.0, 401)
    ax.axvspan(-1.0, 0.0, color="#d62728", alpha=0.04, zorder=0)
    ax.axvspan(0.0, 1.0, color="#2ca02c", alpha=0.04, zorder=0)
    ax.axhline(1.0, color="#aaaaaa", linewidth=0.8, linestyle="--", gid="lambda=1")
    first = None
    for i, (name, cfg) in enumerate(named):
        try:
            lam = np.asarray([step_scale(float(r), cfg) for r in rho])
        except DBAError as e:  # e.g. a custom callable saved by name only in config.json
            ax.text(0.02, 0.95 - 0.07 * i, f"{name}: {e}", transform=ax.transAxes, fontsize=8, color="#aa0000")
            continue
        ax.plot(rho, lam, color=_DC_LINE_COLORS[i % len(_DC_LINE_COLORS)], linewidth=2.0 if i == 0 else 1.5,
                linestyle="-" if i == 0 else ["--", "-.", ":"][(i - 1) % 3], label=name, gid=f"dc:{name}")
        if first is None:
            first = cfg
    if observed_rho is not None and not isinstance(observed_rho, (list, tuple, np.ndarray)):
        observed_rho = _series(_step_records(_records(observed_rho)), "rho")[1]
    obs = np.asarray([v for v in (_num(x) for x in (observed_rho if observed_rho is not None else [])) if v is not None])
    if len(obs):
        ax.vlines(obs, 0.0, 0.06, transform=ax.get_xaxis_transform(), color="#1f77b4",
                  alpha=max(0.08, min(0.8, 8.0 / len(obs))), linewidth=1.0, gid="rug",
                  label=f"observed $\\rho_t$ ({len(obs)} steps)")
    cur = _num(current_rho)
    if cur is not None and first is not None:
        lam_c = step_scale(cur, first)
        ax.axvline(cur, color="#222222", linewidth=0.8, linestyle=":")
        ax.plot([cur], [lam_c], marker="o", markersize=9, color="#222222", markeredgecolor="white", linewidth=0,
                zorder=5, gid="current")
        ax.annotate(f"now: ρ={cur:+.2f}, λ={lam_c:.2f}", (cur, lam_c), textcoords="offset points",
                    xytext=(8 if cur < 0.4 else -8, 10), ha="left" if cur < 0.4 else "right", fontsize=9)
    sim = first.similarity if first is not None else "cosine"
    ax.set_xlabel(r"$\rho$ = cos($g_D$, $\hat g_G$)" if sim == "cosine"
                  else r"$\rho$ = $\langle g_D, \hat g_G\rangle / \|\hat g_G\|^2$")
    ax.set_ylabel(r"$\lambda = f(\rho)$  (step multiplier, × learning rate)")
    ax.set_xlim(-1.0, 1.0)
    lo = min([line.get_ydata().min() for line in ax.get_lines() if (line.get_gid() or "").startswith("dc:")],
             default=0.5)
    hi = max([line.get_ydata().max() for line in ax.get_lines() if (line.get_gid() or "").startswith("dc:")],
             default=2.0)
    ax.set_ylim(min(lo, 1.0) - 0.15, max(hi, 1.0) + 0.15)
    ax.text(0.02, 0.97, "gradients conflict", transform=ax.transAxes, fontsize=8, color="#a33", va="top")
    ax.text(0.98, 0.97, "gradients agree", transform=ax.transAxes, fontsize=8, color="#383", va="top", ha="right")
    ax.set_title("Dynamic correction: step multiplier vs gradient similarity")
    _tidy(ax)
    _legend(ax, loc="lower left" if cur is None or cur > -0.3 else "lower right")
    return _finish(fig, path)


# --------------------------------------------------------------------------------------------------------------------
# Loss


def _draw_losses(ax, runs: list[dict]) -> int:
    drawn = 0
    ymin, ymax = math.inf, 0.0
    for r in runs:
        x, y = _series(_step_records(r.get("metrics")), "loss", skip_skipped=False)
        if len(x) == 0:
            continue
        drawn += 1
        c = r["_color"]
        ax.plot(x, y, color=c, linewidth=0.8, alpha=0.3, gid=f"loss-raw:{r['_label']}")
        ax.plot(x, _smooth(y, _smooth_window(len(y))), color=c, linewidth=1.9, label=r["_label"],
                gid=f"loss:{r['_label']}")
        if (y > 0).any():
            ymin, ymax = min(ymin, float(y[y > 0].min())), max(ymax, float(y.max()))
    if drawn and ymin > 0 and ymax / ymin > 30:  # losses that fall by orders of magnitude read better in log
        ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss (nats / token)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _tidy(ax)
    if not drawn:
        _note(ax, NO_STEPS)
    return drawn


def loss_curves(runs, path=None) -> Figure:
    """Training (domain batch) loss against the step for each run: the raw curve faint, a centred moving average
    over it."""
    runs = _as_runs(runs)
    fig = _new_figure(8.5, 4.6)
    ax = fig.subplots()
    drawn = _draw_losses(ax, runs)
    if drawn:
        _run_legend(fig, ax, drawn, loc="upper right")
    ax.set_title("Training loss (faint: per step; bold: moving average)")
    return _finish(fig, path)


# --------------------------------------------------------------------------------------------------------------------
# The anchor's spectrum


def _short_name(name: str) -> str:
    """model.layers.3.self_attn.q_proj -> L3 self_attn.q_proj"""
    m = re.search(r"layers?\.(\d+)\.(.*)$", name)
    if m:
        return f"L{m.group(1)} {m.group(2)}"
    return name.split("model.")[-1]


def _pick_evenly(names: list[str], k: int) -> list[str]:
    if len(names) <= k:
        return names
    idx = np.unique(np.round(np.linspace(0, len(names) - 1, k)).astype(int))
    return [names[i] for i in idx]


def spectrum(global_gradient, path=None, max_layers: int = 8) -> Figure:
    """The anchor's compression: normalised singular values σ_i/σ_1 (log scale) of up to ``max_layers`` matrices
    spread over the model, each with its kept rank marked (left), and the share of Frobenius energy kept per matrix
    (right, with the target energy when the anchor was compressed by energy). The title gives dense vs stored size."""
    g = global_gradient
    fig = _new_figure(12, 4.8)
    ax, ax_e = fig.subplots(1, 2, width_ratios=[1.6, 1])
    if g is None:
        for a in (ax, ax_e):
            _note(a, "no global gradient yet")
        fig.suptitle("Global gradient spectrum")
        return _finish(fig, path)
    spectra = {n: np.asarray(s.detach().float().cpu().numpy() if hasattr(s, "detach") else s, dtype=float)
               for n, s in (g.spectra or {}).items()}
    names = _pick_evenly([n for n, s in spectra.items() if s.size and s[0] > 0], max(1, int(max_layers)))
    cmap = colormaps["viridis"]
    for i, name in enumerate(names):
        s = spectra[name] / spectra[name][0]
        c = to_hex(cmap(i / max(len(names) - 1, 1) * 0.9))
        ks = np.arange(1, len(s) + 1)
        ax.plot(ks, np.maximum(s, 1e-12), color=c, linewidth=1.4, label=_short_name(name), gid=f"spectrum:{name}")
        if name in g.factors:
            k = int(g.factors[name][0].shape[1])
            ax.plot([k], [max(s[k - 1], 1e-12)], marker="o", markersize=7, markerfacecolor="white",
                    markeredgecolor=c, markeredgewidth=1.8, linewidth=0, gid=f"rank:{name}")
    ax.set_yscale("log")
    ax.set_xlabel("singular value index i")
    ax.set_ylabel(r"$\sigma_i / \sigma_1$ (log scale)")
    ax.set_title("Singular values of $\\hat G$ per matrix (○ = kept rank)")
    _tidy(ax)
    if names:
        ax.legend(fontsize=7, frameon=False, loc="upper right", ncol=2 if len(names) > 4 else 1)
    else:
        _note(ax, "no SVD spectra stored (anchor kept dense)")

    energies = np.asarray([v for n, v in (g.energy_kept or {}).items() if n in g.factors], dtype=float)
    summ = g.summary()
    if len(energies):
        lo = min(float(energies.min()), float((g.meta or {}).get("energy") or 1.0))
        bins = np.linspace(max(0.0, lo - 0.02), 1.0, 21)
        ax_e.hist(energies, bins=bins, color="#4c72b0", edgecolor="white", gid="energy-hist")
        target = _num((g.meta or {}).get("energy"))
        if target is not None:
            ax_e.axvline(target, color="#c44e52", linestyle="--", linewidth=1.4, label=f"target energy {target:g}",
                         gid="energy-target")
        ranks = f"rank {summ['rank_min']}–{summ['rank_max']} (mean {summ['rank_mean']:.1f})"
        ax_e.set_title(f"Energy kept by the stored rank\n{len(energies)} matrices · {ranks} · "
                       f"mean {energies.mean():.1%}", fontsize=10)
        ax_e.yaxis.set_major_locator(MaxNLocator(integer=True))
        _legend(ax_e, loc="upper left")
    else:
        _note(ax_e, "no compressed matrices")
        ax_e.set_title("Energy kept by the stored rank")
    ax_e.set_xlabel("share of Frobenius energy ‖Ĝ‖² kept")
    ax_e.set_ylabel("matrices")
    _tidy(ax_e)
    fig.suptitle(f"Global gradient ({summ['space']} space, {summ['tensors']} tensors): "
                 f"{summ['dense_mb']:.2f} MB dense → {summ['stored_mb']:.2f} MB stored "
                 f"({summ['stored_share']:.1%})", fontsize=12)
    return _finish(fig, path)


# --------------------------------------------------------------------------------------------------------------------
# Comparison bars


def _row_label(row: Mapping) -> str:
    if row.get("label"):
        return str(row["label"])
    method = str(row.get("method") or "run")
    r = _num(row.get("ratio"))
    if method_kind(method) == "mixture" and r is not None and "r=" not in method:
        return f"{method} (r={r:g})"
    return method


def _group_rows(rows: list[dict]) -> "OrderedDict[str, dict]":
    """Rows grouped by label (several seeds of a method become one bar with an error bar)."""
    groups: "OrderedDict[str, dict]" = OrderedDict()
    for row in rows:
        lab = _row_label(row)
        g = groups.setdefault(lab, {"rows": [], "ratio": _num(row.get("ratio")),
                                    "is_base": str(row.get("method", "")).lower() == "base"})
        g["rows"].append(row)
    for lab, g in groups.items():
        for key in ("s", "s_g", "s_d", "wall_seconds", "device_seconds", "tokens"):
            vals = [v for v in (_num(r.get(key)) for r in g["rows"]) if v is not None]
            g[key] = float(np.mean(vals)) if vals else None
            g[key + "_err"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        g["n"] = len(g["rows"])
    return groups


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h")


def _fmt_tokens(t: float) -> str:
    return f"{t / 1e6:.1f}M tok" if t >= 1e6 else (f"{t / 1e3:.0f}k tok" if t >= 1e3 else f"{t:.0f} tok")


def score_bars(results, path=None) -> Figure:
    """S per method as bars (with S_G and S_D beside each), next to the cost of each (horizontal bars: device-seconds
    when known, else wall-clock seconds, else tokens; tokens written at the bar ends). A row with method ``base``
    draws the base model's S as a dashed reference line. ``results``: rows like compare's results.csv (list of dicts
    with method, ratio, s, s_g, s_d, wall_seconds, device_seconds, tokens; optional label), a DataFrame or the CSV
    path. Several rows with one label (seeds) are averaged, with the standard deviation as an error bar."""
    rows = _read_results(results)
    groups = _group_rows(rows)
    fig = _new_figure(12.5, max(4.2, 1.2 + 0.42 * len(groups)))
    ax, ax_c = fig.subplots(1, 2, width_ratios=[1.7, 1])
    # rows with scores go in the left panel; cost-only rows (the anchor pass, the whole mixture sweep) only on the right
    labels = [lab for lab in groups if any(groups[lab][k] is not None for k in ("s", "s_g", "s_d"))] or list(groups)
    x = np.arange(len(labels))
    w = 0.26
    parts = [("s", "$S$ (harmonic mean)", None, 1.0), ("s_g", "$S_G$ general", "///", 0.55),
             ("s_d", "$S_D$ domain", "...", 0.55)]
    any_score = False
    for j, (key, name, hatch, alpha) in enumerate(parts):
        vals = [groups[lab][key] for lab in labels]
        if all(v is None for v in vals):
            continue
        any_score = True
        errs = [groups[lab][key + "_err"] for lab in labels]
        colors = [method_color(lab, groups[lab]["ratio"]) for lab in labels]
        xs = x + (j - 1) * w
        bars = ax.bar(xs, [v if v is not None else 0.0 for v in vals], w * 0.95, color=colors, alpha=alpha,
                      hatch=hatch, edgecolor=[c if hatch else "white" for c in colors], linewidth=0.8,
                      gid=f"bars:{key}", label=name)
        with_err = [i for i, e in enumerate(errs) if e]
        if with_err:  # spread over seeds, only where a label has several rows
            eb = ax.errorbar(xs[with_err], [vals[i] for i in with_err], yerr=[errs[i] for i in with_err],
                             fmt="none", ecolor="#222222", elinewidth=1.0, capsize=3)
            for part in eb.lines[2]:
                part.set_gid(f"err:{key}")
        if key == "s":
            for b, v, e in zip(bars, vals, errs):
                if v is not None:
                    ax.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, v + (e or 0.0)),
                                textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
    base_s = next((groups[lab]["s"] for lab in labels if groups[lab]["is_base"]), None)
    if base_s is not None:
        ax.axhline(base_s, color=_COLORS["base"], linestyle="--", linewidth=1.2, label=f"base S = {base_s:.2f}",
                   gid="base-s")
    ax.set_xticks(x, labels, rotation=25 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center",
                  fontsize=9)
    ax.set_ylabel("score (share correct, 0–1)")
    tops = [(groups[lab][k] or 0.0) + (groups[lab][k + "_err"] or 0.0) for lab in labels for k in ("s", "s_g", "s_d")]
    ax.set_ylim(0, min(1.12, max(0.3, 1.25 * max(tops))) if any_score else 1.05)  # room for the legend on top
    ax.set_title("Scores per method")
    _tidy(ax)
    ax.grid(False, axis="x")
    if any_score:
        _legend(ax, loc="upper left", ncol=4)
    else:
        _note(ax, "no results yet")

    cost_labels = [lab for lab in groups if not groups[lab]["is_base"]]  # the base model costs nothing to train
    cost_key = next((k for k in ("device_seconds", "wall_seconds", "tokens")
                     if any(groups[lab][k] is not None for lab in cost_labels)), None)
    labels = cost_labels
    if cost_key is None:
        _note(ax_c, "no cost recorded")
        ax_c.set_yticks([])
    else:
        vals = [groups[lab][cost_key] or 0.0 for lab in labels]
        ys = np.arange(len(labels))[::-1]
        ax_c.barh(ys, vals, 0.6, color=[method_color(lab, groups[lab]["ratio"]) for lab in labels], alpha=0.85,
                  gid=f"cost:{cost_key}")
        vmax = max(vals) if vals and max(vals) > 0 else 1.0
        for yy, lab, v in zip(ys, labels, vals):
            g = groups[lab]
            bits = []
            if cost_key != "tokens":
                bits.append(_fmt_seconds(v))
            if g["tokens"] is not None:
                bits.append(_fmt_tokens(g["tokens"]))
            ax_c.text(v + 0.02 * vmax, yy, " · ".join(bits), va="center", fontsize=8)
        ax_c.set_yticks(ys, labels, fontsize=9)
        ax_c.set_xlim(0, vmax * 1.45)
        ax_c.set_xlabel({"device_seconds": "device time (s)", "wall_seconds": "wall-clock time (s)",
                         "tokens": "tokens processed"}[cost_key])
    ax_c.set_title("Cost per method")
    _tidy(ax_c)
    ax_c.grid(False, axis="y")
    return _finish(fig, path)


# --------------------------------------------------------------------------------------------------------------------
# Live dashboard


def live_dashboard(run, path=None) -> Figure:
    """One figure for a run in progress: training loss, ρ_t / λ_t, and S_G / S_D at the evaluations so far."""
    runs = _as_runs(run)
    if len(runs) > 1:
        raise DBAError("live_dashboard shows one run; use scores_over_steps / loss_curves to compare runs.")
    r = runs[0] if runs else {"metrics": [], "_label": "run", "_color": _COLORS["dba"]}
    fig = _new_figure(15, 4.3)
    ax_l, ax_r, ax_s = fig.subplots(1, 3)
    _draw_losses(ax_l, [r])
    ax_l.set_title("Training loss")
    _draw_rho_lam(ax_r, _step_records(r.get("metrics")))
    ax_r.set_title(r"Similarity $\rho_t$ and step multiplier $\lambda_t$")
    evals = _eval_records(r.get("metrics"))
    drawn = 0
    for key, color, marker in (("s_g", "#1f77b4", "o"), ("s_d", "#d95f02", "s")):
        xs, ys = _series(evals, key, skip_skipped=False)
        if len(xs):
            drawn += 1
            ax_s.plot(xs, ys, marker=marker, markersize=5, color=color, linewidth=1.8,
                      label=_SCORE_NAMES[key][0].split(" — ")[0] + (" general" if key == "s_g" else " domain"),
                      gid=f"live:{key}")
            if xs[0] == 0:
                ax_s.axhline(ys[0], color=color, linestyle=":", linewidth=1.0, alpha=0.8)
    ax_s.set_xlabel("optimiser step")
    ax_s.set_ylabel("score (share correct, 0–1)")
    ax_s.set_title("Scores (dotted: base model)")
    ax_s.xaxis.set_major_locator(MaxNLocator(integer=True))
    _tidy(ax_s)
    if drawn:
        _legend(ax_s, loc="best")
    else:
        _note(ax_s, NO_EVALS)
    total = (r.get("status") or {}).get("steps") or (r.get("config") or {}).get("steps")
    if total:
        for a in (ax_l, ax_r, ax_s):
            a.set_xlim(-0.5, total + 0.5)
    fig.suptitle(_title_of(r), fontsize=12)
    return _finish(fig, path)
