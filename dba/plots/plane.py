"""The forgetting plane: every method's end point in (S_D, S_G) with its 95 % interval whiskers, the WiSE-FT curve of
each run, the mixture-ratio curve, the Pareto front and the cost of each point (marker area)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from ._common import _finish, _new_figure, _note, _read_results, _run_legend, _tidy
from .colors import _COLORS, _num, method_color
from .scores import _iso_s

_COST_KEYS = ("device_seconds", "wall_seconds", "tokens")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points when both coordinates are to be maximised (here (S_D, S_G)): no other
    point is at least as good in both and better in one. Sorted by the first coordinate (ties: the second)."""
    pts = [(float(x), float(y)) for x, y in points]
    keep = [i for i, (x, y) in enumerate(pts)
            if not any(x2 >= x and y2 >= y and (x2 > x or y2 > y) for x2, y2 in pts)]
    return sorted(keep, key=lambda i: pts[i])


def _parent(label: str) -> str | None:
    return label.split("+wiseft-")[0] if "+wiseft-" in label else None


def plane_points(results, domain: str | None = None) -> list[dict]:
    """The points of the plane from results rows (results.csv / its dicts / a DataFrame): one per label of
    ``domain`` (default: the first domain of the rows) — a label's pooled row (``seed`` = all) when it has one, else
    its row — each {"label", "method", "ratio", "alpha", "parent", "x", "y", "x_lo", "x_hi", "y_lo", "y_hi",
    "cost"}; rows without both S_D and S_G are left out."""
    rows = _read_results(results)
    if domain is None and rows:
        domain = rows[0].get("domain")
    rows = [r for r in rows if domain is None or r.get("domain") == domain]
    pooled = {r.get("label") for r in rows if str(r.get("seed")) == "all"}
    pts = []
    for r in rows:
        lab = str(r.get("label") or r.get("method"))
        if lab in pooled and str(r.get("seed")) != "all":
            continue
        x, y = _num(r.get("s_d")), _num(r.get("s_g"))
        if x is None or y is None:
            continue
        pts.append({"label": lab, "method": str(r.get("method") or lab), "ratio": _num(r.get("ratio")),
                    "alpha": _num(r.get("alpha")), "parent": _parent(lab), "x": x, "y": y,
                    "x_lo": _num(r.get("s_d_lo")), "x_hi": _num(r.get("s_d_hi")),
                    "y_lo": _num(r.get("s_g_lo")), "y_hi": _num(r.get("s_g_hi")),
                    "cost": {k: _num(r.get(k)) for k in _COST_KEYS}})
    return pts


def _cost_key(pts: list[dict]) -> str | None:
    trained = [p for p in pts if p["method"] != "base"]
    return next((k for k in _COST_KEYS if any(p["cost"][k] for p in trained)), None)


def _color(p: dict) -> str:
    return method_color(p["parent"] or p["label"], p["ratio"])


def _whiskers(ax, p: dict, color: str) -> None:
    xerr = None if p["x_lo"] is None else [[max(p["x"] - p["x_lo"], 0.0)], [max(p["x_hi"] - p["x"], 0.0)]]
    yerr = None if p["y_lo"] is None else [[max(p["y"] - p["y_lo"], 0.0)], [max(p["y_hi"] - p["y"], 0.0)]]
    if xerr is None and yerr is None:
        return
    eb = ax.errorbar([p["x"]], [p["y"]], xerr=xerr, yerr=yerr, fmt="none", ecolor=color, elinewidth=1.0,
                     capsize=2.5, alpha=0.7, zorder=2)
    for part in eb.lines[2]:
        part.set_gid(f"whisker:{p['label']}")


def _cost_text(v: float, key: str) -> str:
    if key == "tokens":
        return f"{v / 1e3:.0f}k tok" if v >= 1e3 else f"{v:.0f} tok"
    return f"{v:.0f} s" if v >= 10 else f"{v:.1f} s"


def _draw_points(ax, pts: list[dict], key: str | None) -> None:
    top = max((p["cost"][key] or 0.0 for p in pts), default=0.0) if key else 0.0
    for p in pts:
        c = _color(p)
        _whiskers(ax, p, c)
        cost = p["cost"][key] if key else None
        size = 40.0 + (260.0 * math.sqrt(cost / top) if cost and top > 0 else 0.0)
        if p["method"] == "base":
            ax.scatter([p["x"]], [p["y"]], s=260, marker="*", color="#222222", edgecolor="white", zorder=5,
                       gid="point:base")
            ax.plot([], [], marker="*", linewidth=0, markersize=11, color="#222222", label="base model")
            continue
        wise = p["alpha"] is not None
        ax.scatter([p["x"]], [p["y"]], s=size * (0.5 if wise else 1.0), marker="D" if wise else "o",
                   facecolor="white" if wise else c, edgecolor=c, linewidth=1.4, zorder=4, alpha=0.9,
                   gid=f"point:{p['label']}")
        if not wise:  # a legend entry of a fixed size (the marker's area is the cost)
            ax.plot([], [], marker="o", linewidth=0, markersize=7, color=c, label=p["label"])
        text = f"α={p['alpha']:g}" if wise else p["label"]
        if cost is not None and cost > 0:
            text += f"\n{_cost_text(cost, key)}"
        r = math.sqrt(size * (0.5 if wise else 1.0)) / 2  # the marker's radius in points: the text beside it
        ax.annotate(text, (p["x"], p["y"]), textcoords="offset points", xytext=(r + 2, 2), fontsize=6.5, color=c)


def _draw_curves(ax, pts: list[dict]) -> None:
    """WiSE-FT curves (base -> α points -> the run, dashed) and the mixture-ratio curve (ratio order)."""
    base = next((p for p in pts if p["method"] == "base"), None)
    by_label = {p["label"]: p for p in pts}
    for parent in dict.fromkeys(p["parent"] for p in pts if p["parent"]):
        chain = sorted((p for p in pts if p["parent"] == parent), key=lambda p: p["alpha"])
        chain = ([base] if base else []) + chain + ([by_label[parent]] if parent in by_label else [])
        ax.plot([p["x"] for p in chain], [p["y"] for p in chain], linestyle="--", linewidth=1.0, zorder=1,
                color=method_color(parent), alpha=0.8, gid=f"wiseft-curve:{parent}")
    mix = sorted((p for p in pts if p["method"] == "mixture" and p["ratio"] is not None), key=lambda p: p["ratio"])
    if len(mix) > 1:
        ax.plot([p["x"] for p in mix], [p["y"] for p in mix], linewidth=1.6, color=_COLORS["mixture"], alpha=0.7,
                zorder=1, label="mixture ratios", gid="mixture-curve")


def _draw_front(ax, pts: list[dict]) -> list[int]:
    front = pareto_front([(p["x"], p["y"]) for p in pts])
    fx, fy = [pts[i]["x"] for i in front], [pts[i]["y"] for i in front]
    ax.step(fx, fy, where="pre", color="#000000", linewidth=1.0, linestyle=":", zorder=1, gid="pareto-front",
            label="Pareto front")
    ax.scatter(fx, fy, s=420, facecolor="none", edgecolor="#000000", linewidth=0.8, zorder=3, gid="pareto-points")
    return front


def _limits(pts: list[dict]):
    xs = [v for p in pts for v in (p["x"], p["x_lo"], p["x_hi"]) if v is not None]
    ys = [v for p in pts for v in (p["y"], p["y_lo"], p["y_hi"]) if v is not None]
    lo, hi = np.array([min(xs), min(ys)]), np.array([max(xs), max(ys)])
    pad = np.maximum(0.05, 0.12 * (hi - lo))
    lo, hi = np.clip(lo - pad, -0.02, 1.0), np.clip(hi + pad, 0.0, 1.02)
    return (lo[0], hi[0]), (lo[1], hi[1])


def forgetting_plane(results, domain: str | None = None, path=None) -> Figure:
    """The forgetting plane of a comparison: x = S_D (domain learned), y = S_G (general kept).

    ``results``: compare's results rows (results.csv path, list of dicts or DataFrame) — every method's point (its
    pooled row over seeds when there are several) with 95 % interval whiskers on both axes; WiSE-FT points
    (``<run>+wiseft-<α>`` rows, hollow diamonds) joined to the base model and their run by a dashed curve; the
    mixture runs joined in ratio order; the Pareto front (non-dominated points, :func:`pareto_front`) ringed and
    joined by a dotted staircase; marker area ∝ √cost (device-seconds, else seconds, else tokens), the cost written
    beside each point; faint iso-S curves behind. ``domain``: which domain's rows (default: the first)."""
    pts = plane_points(results, domain)
    domain = domain or (_read_results(results)[0].get("domain") if pts else None)
    fig = _new_figure(8.0, 6.4)
    ax = fig.subplots()
    if not pts:
        _note(ax, "no results yet")
        return _finish(fig, path)
    key = _cost_key(pts)
    xlim, ylim = _limits(pts)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    _iso_s(ax, xlim, ylim)
    _draw_curves(ax, pts)
    _draw_front(ax, pts)
    _draw_points(ax, pts, key)
    ax.set_xlabel("$S_D$ — domain score  →  learned the domain")
    ax.set_ylabel("$S_G$ — general score  →  kept general ability")
    what = {"device_seconds": "device-seconds", "wall_seconds": "seconds", "tokens": "tokens"}.get(key, "cost")
    name = Path(str(domain)).stem if domain else ""
    ax.set_title(f"The forgetting plane{' — ' + name if name else ''}\n(whiskers: 95 % intervals; "
                 f"marker area ∝ √{what}; dashed: WiSE-FT; dotted: Pareto front)", fontsize=10)
    _tidy(ax, grid=False)
    _run_legend(fig, ax, len(pts))
    return _finish(fig, path)
