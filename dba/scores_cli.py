"""Scoring multiple-choice files: the per-file table ``dba eval`` prints (:func:`evaluate_sets`, :func:`format_table`),
shared by the CLI (:mod:`dba.cli.eval`), the app and the notebooks.

Each eval file is in the bundled multiple-choice format, one ``{"question", "choices", "answer"}`` object per line
(``dba.data.load_mc``). Per file the table shows: n, log-likelihood accuracy, length-normalised log-likelihood
accuracy, generation accuracy and the combined score (``dba.scores.combine`` with the chosen scorer). When a general
set and domain sets are scored together, S = harmonic mean of S_G and each S_D is shown too.

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


def evaluate_sets(model, tokenizer, sets: list[EvalSet], *, scorer: str = "mean", max_items: int | None = None,
                  batch_size: int = 16, max_new_tokens: int = 32, items: dict | None = None) -> dict:
    """Score ``model`` on each set. Returns ``{"scorer", "sets": [row, ...], "joint": [...]}``: a row per set with
    ``name, path, role, n, loglik, loglik_norm, gen, score`` (accuracies in [0, 1]; None where the scorer did not
    run), and for a general set plus domain sets, ``{"general", "domain", "s_g", "s_d", "s"}`` per domain."""
    from .data import load_mc
    from .scores import SCORERS, combine, harmonic_mean, score_generation, score_mc_loglik

    if scorer not in SCORERS:
        raise DBAError(f"Unknown scorer {scorer!r}; use one of {', '.join(SCORERS)}.")
    if max_items is not None and max_items < 1:
        raise DBAError(f"max_items must be at least 1, got {max_items}.")
    if batch_size < 1:
        raise DBAError(f"batch_size must be at least 1, got {batch_size}.")
    rows = []
    for s in sets:
        its = (items or {}).get(s.path) or load_mc(s.path)
        its = its[:max_items] if max_items else its
        ll = score_mc_loglik(model, tokenizer, its, batch_size=batch_size) if scorer in ("mean", "loglik") else None
        gen = score_generation(model, tokenizer, its, batch_size=batch_size, max_new_tokens=max_new_tokens) \
            if scorer in ("mean", "gen") else None
        row = {"name": s.name, "path": s.path, "role": s.role, "n": len(its),
               "loglik": ll.accuracy if ll else None, "loglik_norm": ll.accuracy_norm if ll else None,
               "gen": gen.accuracy if gen else None}
        row["score"] = combine(row["loglik"], row["gen"], scorer)
        rows.append(row)
    joint = []
    gen_rows = [r for r in rows if r["role"] == "general"]
    if gen_rows:
        g = gen_rows[0]
        for r in rows:
            if r["role"] == "domain":
                joint.append({"general": g["name"], "domain": r["name"], "s_g": g["score"], "s_d": r["score"],
                              "s": harmonic_mean(g["score"], r["score"])})
    return {"scorer": scorer, "sets": rows, "joint": joint}


def format_table(result: dict) -> str:
    """The plain-text table ``dba eval`` prints."""
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    head = ["set", "n", "loglik", "loglik-norm", "gen", f"score ({result['scorer']})"]
    body = [[r["name"], str(r["n"]), pct(r["loglik"]), pct(r["loglik_norm"]), pct(r["gen"]), pct(r["score"])]
            for r in result["sets"]]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths)))
             for row in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for j in result["joint"]:
        lines.append(f"S ({j['general']} x {j['domain']}): S_G {pct(j['s_g'])}, S_D {pct(j['s_d'])}, "
                     f"S {pct(j['s'])}")
    lines.append("(accuracies in %; score = how the scorer combines log-likelihood and generation accuracy)")
    return "\n".join(lines)

