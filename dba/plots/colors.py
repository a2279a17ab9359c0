"""Colours and labels, one per method everywhere, read from the one method table (:data:`dba.methods.METHODS`), and
the run dicts the plots take (:func:`dba.runs.read_run` output).

Colours: the base model grey, ``direct`` red, ``mixture`` blues (darker for a larger general share r), ``dba`` green;
every other method of the table a fixed colour of its own (by its place in the table), so an ablation looks the same
in every figure; a label that names no method gets a stable colour from its text.
"""
from __future__ import annotations

import math
import os
import re
from typing import Mapping

from matplotlib import colormaps
from matplotlib.colors import to_hex

from ..errors import DBAError
from ..methods import METHODS, kind_of

_COLORS = {"base": "#555555", "direct": "#d62728", "mixture": "#1f77b4", "dba": "#2ca02c"}
"""Fixed colours of the base model and the three main methods."""
_PALETTE = ["#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#bcbd22", "#393b79", "#637939", "#8c6d31",
            "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"]
"""The other methods of the table, in table order."""
_OTHER = ["#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39"]
_SEPARATOR = re.compile(r"[\s\-_(@:/=,]|$")


def _num(x) -> float | None:
    """A finite float, or None (None, '', NaN, inf, text that is not a number)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def method_name(label: str) -> str | None:
    """The method of :data:`dba.methods.METHODS` a run label names (``mixture-0.25`` -> ``mixture``, ``dba-no-dc
    seed 2`` -> ``dba-no-dc``): the longest method name the label starts with; None when it names none."""
    s = str(label).strip().lower()
    best = None
    for name in METHODS:
        if s.startswith(name) and _SEPARATOR.match(s[len(name):]) and (best is None or len(name) > len(best)):
            best = name
    return best


def method_kind(label: str) -> str:
    """What a label is drawn as: its method's name when it names one of the table (``dba-no-ggb``), else its family
    (:func:`dba.methods.kind_of`: ``base``, ``mixture``, ``dba``, ``other`` ...)."""
    return method_name(label) or kind_of(label)


def _ratio_from_label(label: str) -> float | None:
    m = re.search(r"(?:r\s*=\s*|mixture[-_ ])([0-9.]+)", str(label))   # "mixture (r=0.3)" or "mixture-0.3"
    try:
        return float(m.group(1)) if m else None
    except ValueError:
        return None


def method_color(label: str, ratio: float | None = None) -> str:
    """The colour of a method (by its label), the same in every figure. Mixture runs get a shade of blue by their
    general share r (given, or read from the label); unknown labels get a stable colour of their own."""
    kind = kind_of(label)
    name = method_name(label)
    if kind == "base":
        return _COLORS["base"]
    if kind == "mixture":
        r = ratio if ratio is not None else _ratio_from_label(label)
        if r is None or not math.isfinite(r):
            return _COLORS["mixture"]
        return to_hex(colormaps["Blues"](0.45 + 0.5 * min(max(r, 0.0), 1.0)))
    if name in _COLORS:
        return _COLORS[name]
    if name is not None:
        others = [n for n in METHODS if n not in _COLORS]
        return _PALETTE[others.index(name) % len(_PALETTE)]
    if kind in _COLORS:
        return _COLORS[kind]
    return _OTHER[sum(map(ord, str(label))) % len(_OTHER)]


def _fmt_ratio(r) -> str:
    return f"{float(r):g}"


def _changed(method, base) -> dict[str, object]:
    """The optimiser settings a method changes from ``base``: dotted path -> its value."""
    from ..config import to_dict

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out
    a, b = flat(to_dict(base)), flat(to_dict(method.optimizer_config(base)))
    return {k: v for k, v in b.items() if a.get(k) != v}


def _dba_method_of(dba: Mapping) -> str:
    """The table's name for a run of the ``dba`` loop from its optimiser config (config.json's ``dba``): the method
    whose changes it carries (most specific first); several at once are joined with ``+``."""
    from ..config import DBAConfig

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out
    have = flat(dict(dba))
    base = DBAConfig()
    matches = []
    for name, m in METHODS.items():
        if m.run_as != "dba" or m.kind != "dba":
            continue
        diff = _changed(m, base)
        if diff and all(have.get(k) == v for k, v in diff.items()):
            matches.append((name, set(diff)))
    # keep the most specific: drop a match whose changes are a subset of another match's
    keep = [n for n, d in matches if not any(d < d2 for _, d2 in matches)]
    return "+".join(keep) if keep else "dba"


def run_label(run: Mapping) -> str:
    """A run's legend label: its ``label`` key, else the method from its config — ``mixture (r=0.3)``, ``dba``,
    a table name like ``dba-no-ggb`` — else its folder name."""
    if run.get("label"):
        return str(run["label"])
    cfg = run.get("config") or {}
    method = cfg.get("method") or (run.get("status") or {}).get("method")
    if not method:
        return os.path.basename(str(run["dir"]).rstrip("/")) if run.get("dir") else "run"
    if method == "mixture":
        r = cfg.get("mixture_ratio")
        return f"mixture (r={_fmt_ratio(r)})" if r is not None else "mixture"
    if method == "dba":
        return _dba_method_of(cfg.get("dba") or {})
    return str(method)


def _run_color(run: Mapping, label: str) -> str:
    ratio = (run.get("config") or {}).get("mixture_ratio") if kind_of(label) == "mixture" else None
    return method_color(label, _num(ratio))


def _as_runs(runs) -> list[dict]:
    """One run, a list of runs, or None -> a list of run dicts (:func:`dba.runs.read_run`), each with ``_label`` and
    ``_color`` set (labels made unique with the seed or a counter when several runs share one). Plots take data: a
    run folder must be read first."""
    if runs is None:
        return []
    if isinstance(runs, (str, os.PathLike, Mapping)):
        runs = [runs]
    out = []
    for r in runs:
        if isinstance(r, (str, os.PathLike)):
            raise DBAError(f"Plots take data: read the run folder first with dba.runs.read_run({str(r)!r}).")
        if not isinstance(r, Mapping):
            raise DBAError(f"A run must be a dict from dba.runs.read_run(dir), not {type(r).__name__}.")
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
