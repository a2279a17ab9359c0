"""results.csv rows with 95 % intervals, from the run folders (recomputable at any time).

A row is one scored model: the base model (once per domain), a run of one seed, a WiSE-FT point of a run
(:mod:`.posthoc`), or — with several seeds — a method's *pooled* row (``seed`` = ``all``). Every score and every
difference carries its interval (:mod:`dba.stats` via :func:`dba.scores.seed_intervals` / :func:`dba.scores.paired_delta`):

- ``s_d``, ``s_g``, ``s`` with ``_lo`` / ``_hi``: item bootstrap (a seed row), seed x item bootstrap (a pooled row);
- ``d_*``: minus the base model, paired on the same items (the base is one model, shared by every seed);
- ``vs_direct_*``: minus the ``direct`` run of the same seed (pooled: seed k paired with direct's seed k);
- ``nll_g``, ``nll_d`` with ``_lo`` / ``_hi``: held-out answer NLL per token (nats, lower is better; empty when the
  comparison had no held-out pairs), and ``d_nll_*`` their change vs the base model, paired on the same pairs;
- ``n_g`` / ``n_d`` items, ``n_seeds`` seeds behind the row.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import EvaluationError
from ..io import read_jsonl
from ..scores import Scores, paired_delta, scores_from_record, seed_intervals
from .plan import RunSpec
from .posthoc import read_wiseft, wiseft_label

SCORES = ("s_d", "s_g", "s")
NLL = ("nll_g", "nll_d")
"""Held-out answer NLL per token (general, domain): lower is better."""


def _with_interval(*names: str) -> tuple[str, ...]:
    return tuple(c for n in names for c in (n, n + "_lo", n + "_hi"))


RESULT_COLUMNS = ("domain", "method", "label", "seed", "ratio", "alpha", "general_per_batch", "status", "n_seeds",
                  "n_g", "n_d", *_with_interval(*SCORES), *_with_interval(*(f"d_{k}" for k in SCORES)),
                  *_with_interval(*(f"vs_direct_{k}" for k in SCORES)), *_with_interval(*NLL),
                  *_with_interval(*(f"d_{k}" for k in NLL)), "tokens", "wall_seconds",
                  "device_seconds", "eval_seconds", "steps", "run_dir")
"""results.csv: scores in [0, 1] with their 95 % interval (``_lo``, ``_hi``); ``d_*`` = change vs the base model and
``vs_direct_*`` = difference to the direct run of the same seed(s), in points of [0, 1], each with its paired
interval; ``seed`` = the run's seed, ``all`` on a method's pooled row (several seeds; its cost columns are the mean
per seed); ``alpha`` = WiSE-FT α on ``<label>+wiseft-<α>`` rows (method ``wiseft``, cost = scoring time, 0 tokens);
tokens, wall_seconds, device_seconds as the run's status.json has them; eval_seconds = time of intermediate
evaluations inside the run (taken out of the cost accounting); run_dir relative to the output folder;
``nll_g`` / ``nll_d`` = held-out answer NLL per token (nats, lower is better) and ``d_nll_*`` its change vs the base
model, each with its interval."""


@dataclass
class Unit:
    """One scored model of a comparison: a run of one seed or a WiSE-FT point of it."""

    spec: RunSpec
    label: str
    method: str
    status: dict
    scores: Scores | None
    alpha: float | None = None


def _num(x, nd=4):
    return None if x is None else round(float(x), nd)


def final_record(run_dir: Path) -> dict | None:
    """The final evaluation record of a run folder (its last ``eval`` record that is not the shared base)."""
    f = Path(run_dir) / "metrics.jsonl"
    if not f.exists():
        return None
    evals = [m for m in read_jsonl(f) if m.get("type") == "eval" and not m.get("shared")]
    return max(evals, key=lambda m: m.get("step") or 0) if evals else None


def _run_scores(run_dir: Path, status: dict) -> Scores | None:
    if status.get("status") != "completed" or not status.get("scores"):
        return None
    rec = final_record(run_dir)
    return scores_from_record(rec if rec is not None else status["scores"])


def units_of(specs: list[RunSpec]) -> list[Unit]:
    """The runs that have a status.json, each followed by its WiSE-FT points."""
    out = []
    for s in specs:
        f = s.run_dir / "status.json"
        if not f.exists():
            continue
        st = json.loads(f.read_text())
        out.append(Unit(s, s.label, s.method, st, _run_scores(s.run_dir, st)))
        for rec in read_wiseft(s.run_dir) if out[-1].scores is not None else []:
            sec = rec.get("seconds")
            out.append(Unit(s, wiseft_label(s.label, rec["alpha"]), "wiseft",
                            {"status": "completed", "wall_seconds": sec, "device_seconds": sec, "tokens": 0,
                             "step": None}, scores_from_record(rec), float(rec["alpha"])))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Columns


def score_columns(sc: Scores | dict | None) -> dict:
    """s_*, s_*_lo, s_*_hi, n_g, n_d of a :class:`Scores` (intervals from its per-item results) or of
    :func:`dba.scores.seed_intervals` output."""
    if sc is None:
        return {}
    if isinstance(sc, Scores):
        cols = {"n_g": sc.n_g, "n_d": sc.n_d}
        for k in SCORES + NLL:
            ci = (sc.ci or {}).get(k)
            cols.update({k: _num(getattr(sc, k)), k + "_lo": _num(ci[0]) if ci else None,
                         k + "_hi": _num(ci[1]) if ci else None})
        return cols
    cols = {"n_g": sc["s_g"].n if sc.get("s_g") else None, "n_d": sc["s_d"].n if sc.get("s_d") else None}
    for k in SCORES + NLL:
        cols.update(interval_columns(k, sc.get(k)))
    return cols


def interval_columns(name: str, iv) -> dict:
    """``name``, ``name_lo``, ``name_hi`` of a :class:`dba.stats.Interval` (None -> empty)."""
    if iv is None:
        return {name: None, name + "_lo": None, name + "_hi": None}
    return {name: _num(iv.estimate), name + "_lo": _num(iv.lo), name + "_hi": _num(iv.hi)}


def delta_columns(prefix: str, a, b, keys: tuple[str, ...] = SCORES) -> dict:
    """``prefix`` + each of ``keys`` (+ intervals) of ``a - b`` (Scores or lists of them, paired on the same items);
    empty when either side is missing or they were scored on different items."""
    if a is None or b is None or (isinstance(a, list) and not a) or (isinstance(b, list) and not b):
        return {}
    try:
        d = paired_delta(a, b)
    except EvaluationError:
        return {}
    cols = {}
    for k in keys:
        cols.update(interval_columns(prefix + k, d.get(k)))
        if d.get(k) is None and isinstance(a, Scores) and isinstance(b, Scores) \
                and getattr(a, k) is not None and getattr(b, k) is not None:
            cols[prefix + k] = _num(getattr(a, k) - getattr(b, k))  # records without per-item results: no interval
    return cols


def _cost_columns(status: dict) -> dict:
    return {k: status.get(k) for k in ("tokens", "wall_seconds", "device_seconds", "eval_seconds")} | {
        "steps": status.get("step")}


# --------------------------------------------------------------------------------------------------------------------
# Rows


def base_row(domain: str, b: dict) -> dict:
    """The ``base`` row of a domain (the base model, scored once), with its intervals."""
    sc = scores_from_record(b)
    row = {"domain": domain, "method": "base", "label": "base", "status": "base", "n_seeds": 1,
           **score_columns(sc), "tokens": 0, "eval_seconds": b.get("seconds"), "steps": 0}
    row.update({f"d_{k}": 0.0 for k in SCORES + NLL if getattr(sc, k) is not None})
    return row


def seed_row(u: Unit, base: Scores | None, direct: Scores | None, out_dir: Path) -> dict:
    """The row of one run (or WiSE-FT point) of one seed."""
    s = u.spec
    row = {"domain": s.domain, "method": u.method, "label": u.label, "seed": s.seed, "alpha": u.alpha,
           "ratio": s.ratio if u.alpha is None else None, "status": u.status.get("status"),
           "general_per_batch": round(s.ratio * s.config.batch_size) if s.ratio is not None and u.alpha is None
           else None, "n_seeds": 1 if u.scores is not None else None, "run_dir": str(s.run_dir.relative_to(out_dir)),
           **_cost_columns(u.status), **score_columns(u.scores), **delta_columns("d_", u.scores, base, SCORES + NLL)}
    if u.label != "direct":
        row.update(delta_columns("vs_direct_", u.scores, direct))
    return row


def pooled_row(units: list[Unit], base: Scores | None, direct: dict[int, Scores]) -> dict:
    """A label's row over its seeds: means with seed x item intervals; differences paired seed by seed."""
    u0, done = units[0], [u for u in units if u.scores is not None]
    row = {"domain": u0.spec.domain, "method": u0.method, "label": u0.label, "seed": "all", "alpha": u0.alpha,
           "ratio": u0.spec.ratio if u0.alpha is None else None, "status": "pooled", "n_seeds": len(done),
           "steps": u0.status.get("step")}
    for k in ("tokens", "wall_seconds", "device_seconds", "eval_seconds"):  # the mean cost of one seed
        vals = [float(u.status[k]) for u in units if u.status.get(k) is not None]
        row[k] = round(sum(vals) / len(vals), 3) if vals else None
    if not done:
        return row
    row.update(score_columns(seed_intervals([u.scores for u in done])))
    row.update(delta_columns("d_", [u.scores for u in done], base, SCORES + NLL))
    common = [u for u in done if u.spec.seed in direct]
    if u0.label != "direct" and common:
        row.update(delta_columns("vs_direct_", [u.scores for u in common], [direct[u.spec.seed] for u in common]))
    return row


def domain_rows(units: list[Unit], base: Scores | None, n_seeds: int, out_dir: Path) -> list[dict]:
    """One domain's rows (base row excluded): with one seed, a row per unit; with several, per label its seed rows
    and then its pooled row."""
    direct = {u.spec.seed: u.scores for u in units if u.label == "direct" and u.scores is not None}
    by_label: dict[str, list[Unit]] = {}
    for u in units:
        by_label.setdefault(u.label, []).append(u)
    rows = []
    for label, group in by_label.items():
        rows += [seed_row(u, base, direct.get(u.spec.seed), out_dir) for u in group]
        if n_seeds > 1:
            rows.append(pooled_row(group, base, direct))
    if n_seeds == 1:  # the runs first, then their WiSE-FT points (the order of earlier versions)
        rows.sort(key=lambda r: r["method"] == "wiseft")
    return rows
