"""The verdict on the DBA family (issue 13): read finished comparisons and check every DBA-family variant against the
targets a remedy must meet to be worth its anchor, next to the simple baselines. Pure: recomputable from the folders'
``results.csv`` and ``cost.json``.

The targets, per domain, on the scores pooled over seeds (points = percentage points of share correct):

- **keeps**: ΔS_G vs base ≥ −3 points;
- **learns**: ΔS_D vs base ≥ 80 % of direct fine-tuning's ΔS_D;
- **beats mixture**: S ≥ the best measured mixture ratio's S − 1 point;
- **on the front**: no EWC, L2-SP or WiSE-FT point has both a higher S_D and a higher S_G (not dominated);
- **cheap**: anchor pass + one run ≤ 25 % of the 5-ratio mixture sweep (5 × the mean measured mixture run, in
  wall-clock seconds: a mixture run costs about the same at every ratio).

A variant meets the targets when it meets all five on every domain. The checks use the point estimates; each row
also carries its 95 % interval (items × seeds bootstrap, :mod:`dba.stats`) so the reader sees which gaps are noise.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DBAError
from ..methods import METHODS

KEEP_POINTS = 3.0
"""S_G may fall at most this many points below the base model."""
LEARN_SHARE = 0.8
"""ΔS_D must reach this share of direct fine-tuning's."""
MIXTURE_SLACK = 1.0
"""S may be at most this many points below the best mixture ratio's."""
SWEEP_RATIOS = 5
"""The mixture sweep a user would otherwise run (DEFAULT_RATIOS has five)."""
COST_SHARE = 0.25
"""Anchor + run may cost at most this share of the sweep."""
FRONT_METHODS = ("ewc", "l2sp", "wiseft")
"""The baselines whose points form the Pareto front a variant must not fall below."""
TARGETS = ("keeps", "learns", "beats_mixture", "on_front", "cheap")
_TOL = 1e-6
"""Points are read back from 4-decimal shares: a value exactly at a limit passes."""


@dataclass
class Point:
    """One method's pooled result on one domain (scores and their intervals in points)."""

    label: str
    method: str
    s_d: float
    s_g: float
    s: float
    d_s_d: float
    d_s_g: float
    ci: dict
    seconds: float | None
    n_seeds: int


def _f(x: str | None) -> float | None:
    return float(x) if x not in (None, "") else None


def _pts(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def read_points(folder: str | Path) -> dict[str, dict[str, Point]]:
    """domain -> label -> :class:`Point`: the pooled rows of a comparison (the per-seed rows when it has one seed),
    and each domain's base row under ``"base"``."""
    f = Path(folder) / "results.csv"
    if not f.exists():
        raise DBAError(f"{folder} has no results.csv: not a finished comparison.")
    rows = list(csv.DictReader(f.open(encoding="utf-8")))
    pooled = {(r["domain"], r["label"]) for r in rows if r["seed"] == "all"}
    out: dict[str, dict[str, Point]] = {}
    for r in rows:
        key = (r["domain"], r["label"])
        if r["label"] != "base" and r["seed"] != "all" and key in pooled:
            continue  # a seed of a pooled row
        if r.get("status") not in ("base", "pooled", "completed"):
            continue
        ci = {k: (_pts(_f(r.get(f"{k}_lo"))), _pts(_f(r.get(f"{k}_hi"))))
              for k in ("s_d", "s_g", "s", "d_s_d", "d_s_g", "d_s")}
        out.setdefault(r["domain"], {})[r["label"]] = Point(
            r["label"], r["method"], _pts(_f(r["s_d"])), _pts(_f(r["s_g"])), _pts(_f(r["s"])),
            _pts(_f(r["d_s_d"])) or 0.0, _pts(_f(r["d_s_g"])) or 0.0, ci, _f(r.get("wall_seconds")),
            int(r.get("n_seeds") or 1))
    return out


def anchor_seconds(folder: str | Path) -> float | None:
    """Wall-clock seconds of the comparison's anchor pass (cost.json), or None."""
    f = Path(folder) / "cost.json"
    if not f.exists():
        return None
    a = json.loads(f.read_text(encoding="utf-8")).get("anchor")
    return float(a["seconds"]) if a else None


def is_dba_family(method: str) -> bool:
    m = METHODS.get(method)
    return m is not None and m.kind == "dba" and m.origin != "ablation"


def check(p: Point, points: dict[str, Point], anchor_s: float | None) -> dict:
    """The five targets for one DBA-family point on one domain: ``{target: True/False/None}`` (None = not
    measurable from these folders, e.g. no mixture run), plus the numbers each check compared."""
    direct = points.get("direct")
    mixes = [q for q in points.values() if q.method == "mixture"]
    front = [q for q in points.values() if q.method in FRONT_METHODS]
    best_mix = max(mixes, key=lambda q: q.s) if mixes else None
    sweep = SWEEP_RATIOS * sum(q.seconds for q in mixes) / len(mixes) if mixes and all(q.seconds for q in mixes) \
        else None
    cost = (p.seconds + (anchor_s or 0.0)) if p.seconds is not None else None
    dominated_by = [q.label for q in front if q.s_d > p.s_d and q.s_g > p.s_g]
    res = {
        "keeps": p.d_s_g >= -KEEP_POINTS - _TOL,
        "learns": None if direct is None else p.d_s_d >= LEARN_SHARE * direct.d_s_d - _TOL,
        "beats_mixture": None if best_mix is None else p.s >= best_mix.s - MIXTURE_SLACK - _TOL,
        "on_front": None if not front else not dominated_by,
        "cheap": None if sweep is None or cost is None else cost <= COST_SHARE * sweep + _TOL,
    }
    res["numbers"] = {"d_s_g": p.d_s_g, "d_s_d": p.d_s_d, "direct_d_s_d": direct.d_s_d if direct else None,
                      "s": p.s, "best_mixture": best_mix.label if best_mix else None,
                      "best_mixture_s": best_mix.s if best_mix else None, "dominated_by": dominated_by,
                      "cost_s": cost, "sweep_s": sweep}
    return res


def verdict(folders: list[str | Path]) -> dict:
    """Every DBA-family variant of the comparisons, checked on every domain; ``best`` = the variant with the highest
    mean S over the domains among those measured on all of them; ``meets`` = it meets every target everywhere."""
    points: dict[str, dict[str, Point]] = {}
    anchors: dict[str, float | None] = {}
    for folder in folders:
        a = anchor_seconds(folder)
        for domain, by_label in read_points(folder).items():
            have = points.setdefault(domain, {})
            if "base" in have and "base" in by_label and (have["base"].s_g, have["base"].s_d) != (
                    by_label["base"].s_g, by_label["base"].s_d):
                raise DBAError(f"{folder} scores the base model on {domain} differently from an earlier folder "
                               "(other eval items?): its points cannot share one table.")
            have.update(by_label)
            anchors[domain] = a if a is not None else anchors.get(domain)
    checks: dict[str, dict[str, dict]] = {}
    for domain, by_label in points.items():
        for label, p in by_label.items():
            if is_dba_family(p.method):
                checks.setdefault(label, {})[domain] = check(p, by_label, anchors.get(domain))
    everywhere = [lab for lab, per in checks.items() if set(per) == set(points)]
    best = max(everywhere, key=lambda lab: sum(points[d][lab].s for d in points) / len(points), default=None)
    meets = {lab: all(per[d][t] is True for d in per for t in TARGETS) for lab, per in checks.items()}
    return {"domains": sorted(points), "points": points, "checks": checks, "best": best,
            "meets": meets, "best_meets": bool(best and meets[best])}


def _cell(p: Point, k: str) -> str:
    v, (lo, hi) = getattr(p, k), p.ci.get(k, (None, None))
    sign = "+" if k.startswith("d_") else ""
    iv = f" [{lo:{sign}.1f}, {hi:{sign}.1f}]" if lo is not None and hi is not None else ""
    return f"{v:{sign}.1f}{iv}"


def verdict_markdown(v: dict) -> str:
    """The verdict table (every method, pooled over seeds, with intervals and cost) and the target checks."""
    lines = ["| domain | method | seeds | S_D | S_G | S | ΔS_D vs base | ΔS_G vs base | run s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for d in v["domains"]:
        for p in v["points"][d].values():
            secs = f"{p.seconds:.0f}" if p.seconds else "–"
            lines.append(f"| {d} | {p.label} | {p.n_seeds if p.label != 'base' else '–'} | {_cell(p, 's_d')} | "
                         f"{_cell(p, 's_g')} | {_cell(p, 's')} | {_cell(p, 'd_s_d')} | {_cell(p, 'd_s_g')} | "
                         f"{secs} |")
    mark = {True: "✓", False: "✗", None: "–"}
    lines += ["", "| DBA-family variant | domain | keeps (ΔS_G ≥ −3) | learns (≥ 80 % of direct's ΔS_D) | "
              "S ≥ best mixture − 1 | not below EWC/L2-SP/WiSE-FT | anchor + run ≤ 25 % of the sweep |",
              "|---|---|---|---|---|---|---|"]
    for lab, per in v["checks"].items():
        for d, c in per.items():
            n = c["numbers"]
            learn = (f"{n['d_s_d']:+.1f} vs {0.8 * n['direct_d_s_d']:+.1f}" if n["direct_d_s_d"] is not None else "")
            mix = f"{n['s']:.1f} vs {n['best_mixture_s'] - 1:.1f}" if n["best_mixture_s"] is not None else ""
            front = ("below " + ", ".join(n["dominated_by"])) if n["dominated_by"] else ""
            cost = f"{n['cost_s']:.0f} s vs {0.25 * n['sweep_s']:.0f} s" if n["sweep_s"] else ""
            lines.append(f"| {lab} | {d} | {mark[c['keeps']]} {n['d_s_g']:+.1f} | {mark[c['learns']]} {learn} | "
                         f"{mark[c['beats_mixture']]} {mix} | {mark[c['on_front']]} {front} | "
                         f"{mark[c['cheap']]} {cost} |")
    best = v["best"]
    if best is None:
        lines += ["", "No DBA-family variant was measured on every domain."]
    elif v["best_meets"]:
        lines += ["", f"**{best}** meets every target on every domain."]
    else:
        lines += ["", f"**No DBA-family variant meets the targets.** The best measured ({best}, highest mean S) "
                      "misses: " + "; ".join(
                          f"{d}: " + ", ".join(t for t in TARGETS if v['checks'][best][d][t] is False)
                          for d in v["checks"][best] if any(v['checks'][best][d][t] is False for t in TARGETS))
                  + "."]
    return "\n".join(lines) + "\n"
