"""S_G / S_D over steps and the (S_D, S_G) plane with iso-S curves."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._common import NO_EVALS, _SCORE_NAMES, _eval_records, _finish, _new_figure, _note, _run_legend, _score_of, _series, _tidy
from .colors import _COLORS, _as_runs, _num


def _ci_series(records, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, lo, hi) of the 95 % interval of ``key`` in eval records that carry one (``rec["ci"][key]``)."""
    xs, lo, hi = [], [], []
    for m in records:
        ci = (m.get("ci") or {}).get(key) if isinstance(m.get("ci"), dict) else None
        if ci and _num(ci[0]) is not None and _num(ci[1]) is not None and m.get("step") is not None:
            xs.append(int(m["step"]))
            lo.append(float(ci[0]))
            hi.append(float(ci[1]))
    return np.asarray(xs, dtype=float), np.asarray(lo), np.asarray(hi)


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
        bx, lo, hi = _ci_series(evals, key)
        if len(bx):  # the 95 % interval of each evaluation, as a band
            band = ax.fill_between(bx, lo, hi, color=r["_color"], alpha=0.13, linewidth=0, zorder=0)
            band.set_gid(f"band:{key}:{r['_label']}")
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


def _two_panels_over_steps(runs, keys: tuple[str, str], empty_note: str) -> Figure:
    """The two panels both over-steps figures share: one metric per panel, a band per run, the base as a line."""
    runs = _as_runs(runs)
    fig = _new_figure(11, 4.2)
    axes = fig.subplots(1, 2, sharex=True)
    any_drawn = 0
    for ax, key in zip(axes, keys):
        title, ylabel = _SCORE_NAMES[key]
        drawn = _draw_scores(ax, runs, key)
        any_drawn = max(any_drawn, drawn)
        ax.set_title(title)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _tidy(ax)
        if not drawn:
            _note(ax, empty_note)
    if any_drawn:
        _run_legend(fig, axes[1], any_drawn)
    return fig


def scores_over_steps(runs, path=None) -> Figure:
    """S_G (left) and S_D (right) against the optimiser step for each run, from its ``eval`` records, with the 95 %
    interval of each evaluation as a band (records with ``ci``); the base model (the step-0 evaluation) is a dotted
    horizontal reference."""
    fig = _two_panels_over_steps(runs, ("s_g", "s_d"), NO_EVALS)
    fig.suptitle("Scores during fine-tuning (dotted: base model)", fontsize=12)
    return _finish(fig, path)


def nll_over_steps(runs, path=None) -> Figure:
    """Held-out answer NLL per token — general (left) and domain (right) — against the optimiser step for each run,
    from its ``eval`` records (``nll_g``, ``nll_d``), with the 95 % interval of each evaluation as a band; the base
    model (the step-0 evaluation) is a dotted horizontal reference. Lower is better: a rising left panel is
    forgetting, a falling right panel is learning the domain."""
    fig = _two_panels_over_steps(runs, ("nll_g", "nll_d"),
                                 "No held-out NLL yet (no held-out pairs, or no evaluation so far)")
    fig.suptitle("Held-out answer NLL per token during fine-tuning (lower is better; dotted: base model)",
                 fontsize=12)
    return _finish(fig, path)


def _iso_s(ax, xlim, ylim) -> None:
    """Faint contours of S = harmonic_mean(S_D, S_G) (from dba.scores) behind the trajectories."""
    from ..scores import harmonic_mean

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


def _end_whiskers(ax, rec, x: float, y: float, color: str, label: str) -> None:
    """The 95 % intervals of an evaluation's S_D (horizontal) and S_G (vertical) as whiskers."""
    ci = rec.get("ci") if isinstance(rec.get("ci"), dict) else {}
    d, g = ci.get("s_d"), ci.get("s_g")
    xerr = [[max(x - d[0], 0.0)], [max(d[1] - x, 0.0)]] if d else None
    yerr = [[max(y - g[0], 0.0)], [max(g[1] - y, 0.0)]] if g else None
    if xerr or yerr:
        eb = ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="none", ecolor=color, elinewidth=1.0, capsize=2.5,
                         alpha=0.6, zorder=2)
        for part in eb.lines[2]:
            part.set_gid(f"whisker:{label}")


def score_plane(runs, base=None, path=None) -> Figure:
    """Each run's path in the (S_D, S_G) plane — x = domain score, y = general score — with arrows from one
    evaluation to the next, whiskers for the 95 % intervals of the last evaluation (records with ``ci``), the base
    model as a star and faint iso-S curves (S = harmonic mean) behind.

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
        _end_whiskers(ax, evals[-1], xs[-1], ys[-1], c, r["_label"])
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

