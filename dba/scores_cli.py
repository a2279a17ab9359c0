"""Scoring multiple-choice files: the per-file table ``dba eval`` prints (:func:`evaluate_sets`, :func:`format_table`),
shared by the CLI (:mod:`dba.cli.eval`), the app and the notebooks.

Each eval file is in the bundled multiple-choice format, one ``{"question", "choices", "answer"}`` object per line
(``dba.data.load_mc``). Per file the table shows: n, log-likelihood accuracy, length-normalised log-likelihood
accuracy, generation accuracy, the combined score (``dba.scores.combine`` with the chosen scorer) and its 95 %
interval (item bootstrap, ``dba.stats``). When a general set and domain sets are scored together, S = harmonic mean
of S_G and each S_D is shown too, each with its interval.

Loading what a run produced (:func:`load_trained`, :func:`is_run_folder`, ...) lives in :mod:`dba.runs`; the names
are re-exported here for older imports.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import DBAError
from .runs import adapter_lora_settings, is_adapter_folder, is_run_folder, load_trained  # noqa: F401  (moved)


@dataclass
class EvalSet:
    """One multiple-choice file to score."""

    name: str
    """Shown in the table: a bundled name or the file's name."""
    path: str
    role: str = "file"
    """``general`` / ``domain`` (bundled sets, used for S) or ``file``."""


def eval_set_name(path: Path) -> str:
    # the bundled files are all called eval.jsonl: name them by their folder
    return path.parent.name if path.stem in ("eval", "test", "validation") else path.stem


def resolve_eval_sets(files: list[str] | None = None, domains: list[str] | None = None,
                      general: bool = False) -> list[EvalSet]:
    """The sets ``dba eval`` was asked for: bundled general / domain eval sets and explicit files, in that order."""
    from .data import bundled_path

    sets: list[EvalSet] = []
    if general:
        sets.append(EvalSet("general", str(bundled_path("general", "eval")), "general"))
    for d in domains or []:
        p = Path(d).expanduser()
        if p.is_file():  # a domain given as its eval file
            sets.append(EvalSet(eval_set_name(p), str(p), "domain"))
        else:
            sets.append(EvalSet(d, str(bundled_path(d, "eval")), "domain"))
    for f in files or []:
        p = Path(f).expanduser()
        sets.append(EvalSet(eval_set_name(p), str(p), "file"))
    if not sets:
        raise DBAError("Nothing to score: give --eval FILE, --domain NAME or --general.")
    names = [s.name for s in sets]
    for i, s in enumerate(sets):  # two files with one name: use the path instead
        if names.count(s.name) > 1:
            sets[i] = EvalSet(s.path, s.path, s.role)
    return sets


def _score_file(model, tokenizer, items, scorer, max_items, batch_size, max_new_tokens) -> dict:
    """One file's scores via :func:`dba.scores.evaluate` (its per-item results and 95 % intervals)."""
    from .scores import evaluate

    sc = evaluate(model, tokenizer, items, None, scorer=scorer, max_items=max_items, batch_size=batch_size,
                  max_new_tokens=max_new_tokens)
    d = sc.detail["general"]
    ci = d.get("ci") or {}
    return {"n": d["n"], "loglik": d["loglik"], "loglik_norm": d["loglik_norm"], "gen": d["gen"], "score": sc.s_g,
            "score_lo": sc.ci["s_g"][0], "score_hi": sc.ci["s_g"][1], "ci": ci, "per_item": d["per_item"]}


def _joint(g: dict, r: dict) -> dict:
    """S_G (a general set), S_D (a domain set) and S = their harmonic mean, each with its 95 % interval."""
    from .scores import harmonic_mean
    from .stats import bootstrap_hm

    s = bootstrap_hm(g["per_item"]["score"], r["per_item"]["score"])
    return {"general": g["name"], "domain": r["name"], "s_g": g["score"], "s_d": r["score"],
            "s": harmonic_mean(g["score"], r["score"]), "ci": {"s_g": [g["score_lo"], g["score_hi"]],
                                                               "s_d": [r["score_lo"], r["score_hi"]],
                                                               "s": [s.lo, s.hi]}}


def evaluate_sets(model, tokenizer, sets: list[EvalSet], *, scorer: str = "mean", max_items: int | None = None,
                  batch_size: int = 16, max_new_tokens: int = 32, items: dict | None = None) -> dict:
    """Score ``model`` on each set. Returns ``{"scorer", "sets": [row, ...], "joint": [...]}``: a row per set with
    ``name, path, role, n, loglik, loglik_norm, gen, score`` (accuracies in [0, 1]; None where the scorer did not
    run), ``score_lo``/``score_hi`` (its 95 % interval, item bootstrap), ``ci`` (intervals of score, loglik, gen)
    and ``per_item`` (each item's result, for paired comparisons); for a general set plus domain sets,
    ``{"general", "domain", "s_g", "s_d", "s", "ci"}`` per domain. ``max_items``: the first N items of each set;
    None or 0 = all. A set with no items is refused (:class:`DBAError`)."""
    from .data import load_mc
    from .scores import SCORERS

    if scorer not in SCORERS:
        raise DBAError(f"Unknown scorer {scorer!r}; use one of {', '.join(SCORERS)}.")
    if max_items is not None and max_items < 0:
        raise DBAError(f"The number of items must be 0 (all) or more, got {max_items}.")
    if batch_size < 1:
        raise DBAError(f"batch_size must be at least 1, got {batch_size}.")
    rows = []
    for s in sets:
        its = (items or {}).get(s.path) or load_mc(s.path)
        if not its:
            raise DBAError(f"Nothing to score: {s.path} holds no items.")
        rows.append({"name": s.name, "path": s.path, "role": s.role,
                     **_score_file(model, tokenizer, its, scorer, max_items or None, batch_size, max_new_tokens)})
    gen_rows = [r for r in rows if r["role"] == "general"]
    joint = [_joint(gen_rows[0], r) for r in rows if r["role"] == "domain"] if gen_rows else []
    return {"scorer": scorer, "sets": rows, "joint": joint}


def format_table(result: dict) -> str:
    """The plain-text table ``dba eval`` prints."""
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    def ci(lo, hi):
        return "-" if lo is None or hi is None else f"[{pct(lo)}, {pct(hi)}]"

    head = ["set", "n", "loglik", "loglik-norm", "gen", f"score ({result['scorer']})", "95% interval"]
    body = [[r["name"], str(r["n"]), pct(r["loglik"]), pct(r["loglik_norm"]), pct(r["gen"]), pct(r["score"]),
             ci(r.get("score_lo"), r.get("score_hi"))] for r in result["sets"]]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths)))
             for row in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for j in result["joint"]:
        c = j.get("ci") or {}
        lines.append(f"S ({j['general']} x {j['domain']}): " + ", ".join(
            f"{name} {pct(j[k])} {ci(*(c.get(k) or (None, None)))}" for name, k in
            (("S_G", "s_g"), ("S_D", "s_d"), ("S", "s"))))
    lines.append("(accuracies in %; score = how the scorer combines log-likelihood and generation accuracy; "
                 "95% interval = item bootstrap over the set's items)")
    return "\n".join(lines)

