"""The DBA step over a run: similarity ρ_t and step multiplier λ_t, γ_t and the learning rate; training losses; the live dashboard of a run in progress."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import DBAError
from ._common import NO_EVALS, NO_STEPS, _SCORE_NAMES, _eval_records, _finish, _legend, _new_figure, _note, _records, _run_legend, _series, _smooth, _smooth_window, _step_records, _tidy, _title_of
from .colors import _COLORS, _as_runs, _num, run_label
from .scores import _ci_series


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
            bx, lo, hi = _ci_series(evals, key)
            if len(bx):  # the 95 % interval of each evaluation
                ax_s.fill_between(bx, lo, hi, color=color, alpha=0.13, linewidth=0, zorder=0).set_gid(
                    f"band:live:{key}")
            if xs[0] == 0:
                ax_s.axhline(ys[0], color=color, linestyle=":", linewidth=1.0, alpha=0.8)
    ax_s.set_xlabel("optimiser step")
    ax_s.set_ylabel("score (share correct, 0–1)")
    ax_s.set_title("Scores (dotted: base model; bands: 95 % intervals)")
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

