"""Scores and cost per run as bars (results rows of a comparison)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from ._common import _finish, _legend, _new_figure, _note, _read_results, _tidy
from .colors import _COLORS, _num, method_color, method_kind


def _row_label(row: Mapping) -> str:
    if row.get("label"):
        return str(row["label"])
    method = str(row.get("method") or "run")
    r = _num(row.get("ratio"))
    if method_kind(method) == "mixture" and r is not None and "r=" not in method:
        return f"{method} (r={r:g})"
    return method


def _interval(row: Mapping, key: str, v: float | None):
    """(below, above) whisker lengths from a row's ``key_lo`` / ``key_hi`` (its 95 % interval), or None."""
    lo, hi = _num(row.get(key + "_lo")), _num(row.get(key + "_hi"))
    if v is None or lo is None or hi is None:
        return None
    return (max(v - lo, 0.0), max(hi - v, 0.0))


def _group_rows(rows: list[dict]) -> "OrderedDict[str, dict]":
    """Rows grouped by label; a label's pooled row (``seed`` = all, from ``dba compare --seeds``) stands for it.
    Whiskers: the row's 95 % interval (``s_lo``/``s_hi`` ...) when it has one; else, for several rows of one label
    without intervals, ± their standard deviation."""
    pooled = {_row_label(r) for r in rows if str(r.get("seed")) == "all"}
    rows = [r for r in rows if _row_label(r) not in pooled or str(r.get("seed")) == "all"]
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
            sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
            g[key + "_err"] = _interval(g["rows"][0], key, g[key]) if len(g["rows"]) == 1 else (
                (sd, sd) if sd is not None else None)
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
    path. Whiskers: each row's 95 % interval (``s_lo``, ``s_hi``, ...); a label's pooled row (seed ``all``) stands
    for its seeds; several rows of one label without intervals are averaged, ± their standard deviation."""
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
        with_err = [i for i, e in enumerate(errs) if e is not None and vals[i] is not None]
        if with_err:  # the 95 % interval (or the spread over seeds)
            yerr = np.array([errs[i] for i in with_err]).T  # (2, n): below, above
            eb = ax.errorbar(xs[with_err], [vals[i] for i in with_err], yerr=yerr,
                             fmt="none", ecolor="#222222", elinewidth=1.0, capsize=3)
            for part in eb.lines[2]:
                part.set_gid(f"err:{key}")
        if key == "s":
            for b, v, e in zip(bars, vals, errs):
                if v is not None:
                    ax.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, v + (e[1] if e else 0.0)),
                                textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
    base_s = next((groups[lab]["s"] for lab in labels if groups[lab]["is_base"]), None)
    if base_s is not None:
        ax.axhline(base_s, color=_COLORS["base"], linestyle="--", linewidth=1.2, label=f"base S = {base_s:.2f}",
                   gid="base-s")
    ax.set_xticks(x, labels, rotation=25 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center",
                  fontsize=9)
    ax.set_ylabel("score (share correct, 0–1)")
    tops = [(groups[lab][k] or 0.0) + (groups[lab][k + "_err"] or (0.0, 0.0))[1] for lab in labels
            for k in ("s", "s_g", "s_d")]
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

