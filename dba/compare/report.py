"""Reporting a comparison: the cost accounting (cost.json), results.csv, the plots and summary.md, all recomputable
from the run folders.

Cost is counted honestly (DESIGN.md §2.3): every run's wall-clock, device-seconds and tokens come from its
``status.json``; evaluations are the same for every method and not part of what a method costs, so the seconds spent
in intermediate evaluations (``eval_every``) are measured and taken out (the base and final evaluations happen
outside the runs' clocks). DBA's total includes the anchor pass, amortised over the domains that reuse it; the
mixture total is its whole ratio sweep.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..config import CompareConfig
from ..io import atomic_write_text
from ..runs import load_runs
from .plan import RunSpec, domain_key

RESULT_COLUMNS = ("domain", "method", "label", "ratio", "general_per_batch", "status", "s_d", "s_g", "s",
                  "d_s_d", "d_s_g", "d_s", "tokens", "wall_seconds", "device_seconds", "eval_seconds", "steps",
                  "run_dir")
"""results.csv: scores in [0, 1] (``d_*`` = change vs the base model, in points of [0, 1]); tokens, wall_seconds,
device_seconds as the run's status.json has them; eval_seconds = time of intermediate evaluations inside the run
(taken out of the cost accounting); run_dir relative to the output folder."""


# --------------------------------------------------------------------------------------------------------------------
# Cost accounting (pure: recomputable from the run folders)


def run_cost(status: dict) -> dict:
    """A run's cost from its status.json: seconds and device-seconds without intermediate evaluations, tokens."""
    wall = float(status.get("wall_seconds") or 0.0)
    dev = float(status.get("device_seconds") or 0.0)
    ev = min(float(status.get("eval_seconds") or 0.0), wall)
    factor = dev / wall if wall > 0 else 1.0  # devices held per wall second
    return {"seconds": round(wall - ev, 3), "device_seconds": round(dev - ev * factor, 3),
            "tokens": int(status.get("tokens") or 0)}


def _add(*costs: dict) -> dict:
    return {k: round(sum(c[k] for c in costs), 3) for k in ("seconds", "device_seconds", "tokens")}


def _share(part: dict, whole: dict) -> dict:
    return {k: (part[k] / whole[k] if whole[k] else None) for k in ("seconds", "device_seconds", "tokens")}


def cost_accounting(statuses: dict[str, dict[str, dict]], methods: dict[str, str], anchor: dict | None,
                    n_domains: int) -> dict:
    """cost.json from the runs' status.json contents.

    - ``statuses``: domain -> label -> status dict; ``methods``: label -> method;
    - ``anchor``: {"seconds", "device_seconds", "tokens", ...} of the one anchor pass (None without DBA runs);
    - DBA's total per domain = its run + anchor / n_domains; the mixture total = the sum over its ratio sweep;
      ``dba_share_of_sweep`` = DBA total / mixture total, per measure.
    """
    zero = {"seconds": 0.0, "device_seconds": 0.0, "tokens": 0}
    amort = {k: (anchor[k] / n_domains if anchor else zero[k]) for k in zero}
    out: dict = {"anchor": None if anchor is None else {**anchor, "domains_sharing": n_domains,
                                                        "amortised_per_domain": amort},
                 "domains": {}, "note": (
                     "seconds = wall-clock of each run (model load, training, saving) without its intermediate "
                     "evaluations; device_seconds likewise; tokens = tokens processed in training. DBA total = the "
                     "dba run + the anchor pass / number of domains reusing it; mixture total = its whole ratio "
                     "sweep.")}
    for domain, by_label in statuses.items():
        runs = {lab: run_cost(st) for lab, st in by_label.items()}
        d: dict = {"runs": runs}
        mix = [lab for lab in runs if methods.get(lab) == "mixture"]
        if mix:
            d["mixture"] = {"ratios": len(mix), "labels": mix, "total": _add(*(runs[lab] for lab in mix))}
        if "dba" in runs:
            d["dba"] = {"run": runs["dba"], "anchor_amortised": amort, "total": _add(runs["dba"], amort)}
        if "direct" in runs:
            d["direct"] = {"total": runs["direct"]}
        if "dba" in d and "mixture" in d:
            d["dba_share_of_sweep"] = _share(d["dba"]["total"], d["mixture"]["total"])
        out["domains"][domain] = d
    dba_runs = [d["dba"]["run"] for d in out["domains"].values() if "dba" in d]
    mixes = [d["mixture"]["total"] for d in out["domains"].values() if "mixture" in d]
    if dba_runs:
        whole_anchor = {k: (anchor[k] if anchor else zero[k]) for k in zero}
        out["dba_all_domains"] = _add(whole_anchor, *dba_runs)
    if mixes:
        out["mixture_all_domains"] = _add(*mixes)
    if dba_runs and mixes:
        out["dba_share_of_sweeps"] = _share(out["dba_all_domains"], out["mixture_all_domains"])
    return out


def cost_lines(cost: dict) -> list[str]:
    """The cost accounting in sentences (summary.md and the CLI)."""
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = []
    a = cost.get("anchor")
    if a:
        lines.append(f"Anchor pass (ĝ_G, once): {a['seconds']:.1f} s, {a['device_seconds']:.1f} device-s, "
                     f"{a['tokens']:,.0f} tokens; shared by {a['domains_sharing']} domain(s), "
                     f"{a['amortised_per_domain']['seconds']:.1f} s each.")
    for domain, d in cost["domains"].items():
        if "dba" in d and "mixture" in d:
            t, m, s = d["dba"]["total"], d["mixture"]["total"], d["dba_share_of_sweep"]
            lines.append(
                f"{domain_key(domain)}: DBA total {t['seconds']:.1f} s = run {d['dba']['run']['seconds']:.1f} s + "
                f"anchor {d['dba']['anchor_amortised']['seconds']:.1f} s ({t['tokens']:,.0f} tokens) vs the "
                f"{d['mixture']['ratios']}-ratio mixture sweep {m['seconds']:.1f} s ({m['tokens']:,.0f} tokens): "
                f"DBA costs {pct(s['seconds'])} of the sweep in seconds, {pct(s['device_seconds'])} in "
                f"device-seconds, {pct(s['tokens'])} in tokens.")
        elif "dba" in d:
            lines.append(f"{domain_key(domain)}: DBA total {d['dba']['total']['seconds']:.1f} s (no mixture sweep "
                         "to compare).")
        elif "mixture" in d:
            lines.append(f"{domain_key(domain)}: mixture sweep ({d['mixture']['ratios']} ratios) "
                         f"{d['mixture']['total']['seconds']:.1f} s (no DBA run to compare).")
    if "dba_share_of_sweeps" in cost and len(cost["domains"]) > 1:
        s = cost["dba_share_of_sweeps"]
        lines.append(f"All domains: DBA {cost['dba_all_domains']['seconds']:.1f} s (one anchor pass + "
                     f"{len(cost['domains'])} runs) vs mixture sweeps {cost['mixture_all_domains']['seconds']:.1f} "
                     f"s: {pct(s['seconds'])} in seconds, {pct(s['tokens'])} in tokens.")
    return lines


# --------------------------------------------------------------------------------------------------------------------
# results.csv and summary.md


def _num(x, nd=4):
    return None if x is None else round(float(x), nd)


def _row(spec: RunSpec, status: dict, base: dict, out_dir: Path) -> dict:
    """A results.csv row from a run's status.json and the base model's scores."""
    sc = status.get("scores") or {}

    def change(k):
        return None if sc.get(k) is None or base.get(k) is None else sc[k] - base[k]

    return {"domain": spec.domain, "method": spec.method, "label": spec.label, "ratio": spec.ratio,
            "general_per_batch": round(spec.ratio * spec.config.batch_size) if spec.ratio is not None else None,
            "status": status.get("status"), "s_d": _num(sc.get("s_d")), "s_g": _num(sc.get("s_g")),
            "s": _num(sc.get("s")), "d_s_d": _num(change("s_d")), "d_s_g": _num(change("s_g")),
            "d_s": _num(change("s")), "tokens": status.get("tokens"), "wall_seconds": status.get("wall_seconds"),
            "device_seconds": status.get("device_seconds"), "eval_seconds": status.get("eval_seconds"),
            "steps": status.get("step"), "run_dir": str(spec.run_dir.relative_to(out_dir))}


def base_row(domain: str, b: dict) -> dict:
    """The ``base`` row of a domain in results.csv (the base model, scored once)."""
    return {"domain": domain, "method": "base", "label": "base", "ratio": None, "general_per_batch": None,
            "status": "base", "s_d": _num(b["s_d"]), "s_g": _num(b["s_g"]), "s": _num(b["s"]),
            "d_s_d": 0.0 if b["s_d"] is not None else None, "d_s_g": 0.0 if b["s_g"] is not None else None,
            "d_s": 0.0 if b["s"] is not None else None, "tokens": 0, "wall_seconds": None, "device_seconds": None,
            "eval_seconds": b.get("seconds"), "steps": 0, "run_dir": None}


def result_rows(cfg: CompareConfig, specs: list[RunSpec], base_scores: dict, out: Path):
    """(results rows, {domain: {label: status}} of the completed scored runs, {label: method}) from the folders."""
    rows, statuses, methods = [], {}, {}
    for d in cfg.domains:
        b = base_scores.get(d)
        if b is not None:
            rows.append(base_row(d, b))
        for s in (s for s in specs if s.domain == d):
            f = s.run_dir / "status.json"
            if not f.exists():
                continue
            st = json.loads(f.read_text())
            rows.append(_row(s, st, b or {}, out))
            if st.get("status") == "completed" and st.get("scores"):
                statuses.setdefault(d, {})[s.label] = st
                methods[s.label] = s.method
    return rows, statuses, methods


def results_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(RESULT_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in RESULT_COLUMNS})
    return buf.getvalue()


def _markdown_table(rows: list[dict]) -> str:
    def f(x, pts=False):
        if x is None:
            return "–"
        return f"{100 * x:+.1f}" if pts else f"{100 * x:.1f}"
    head = "| domain | label | S_D | S_G | S | ΔS_D | ΔS_G | ΔS | tokens | wall s | status |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {domain_key(r['domain'])} | {r['label']} | {f(r['s_d'])} | {f(r['s_g'])} | {f(r['s'])} | "
                     f"{f(r['d_s_d'], True)} | {f(r['d_s_g'], True)} | {f(r['d_s'], True)} | "
                     f"{r['tokens'] if r['tokens'] is not None else '–'} | "
                     f"{r['wall_seconds'] if r['wall_seconds'] is not None else '–'} | {r['status']} |")
    return "\n".join(lines)


def write_summary(cfg: CompareConfig, out: Path, rows, cost, plots, status, warnings) -> None:
    """summary.md: the settings, the results table, the cost lines, the plots and any warnings."""
    run, a = cfg.run, cfg.run.dba
    adapter = f"LoRA r={run.lora.rank}, α={run.lora.effective_alpha:g}" if run.lora else "full fine-tuning"
    lines = [
        "# DBA compare", "",
        f"Status: **{status}**. Model `{run.model}` ({run.quantization}, "
        f"{adapter}), domains {', '.join(cfg.domains)}, "
        f"{run.steps} steps × batch {run.batch_size}, η_0 = {a.anneal.lr:g} ({a.anneal.schedule}), seed {run.seed}; "
        f"eval: scorer {run.eval_scorer}, "
        f"{'all' if run.eval_items is None else 'first ' + str(run.eval_items)} items per set"
        f"{', every ' + str(run.eval_every) + ' steps' if run.eval_every else ''}. "
        f"This comparison took {cost['compare_wall_seconds']:.0f} s of wall-clock (everything but the plots).", "",
        "Scores in % (share correct); Δ in points vs the base model, which was scored once per domain and is shared "
        "by every run (each run folder's step-0 evaluation is that shared record).", "",
        _markdown_table(rows), "",
        "## Cost", "",
        *[f"- {line}" for line in cost_lines(cost)], "",
        f"- {cost['note']}", "",
    ]
    if plots:
        lines += ["## Plots", "", *[f"- `{p.name}`" for p in plots.values()], ""]
    if warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in warnings], ""]
    atomic_write_text(out / "summary.md", "\n".join(lines))


# --------------------------------------------------------------------------------------------------------------------
# Plots


def make_plots(cfg: CompareConfig, out: Path, rows: list[dict], cost: dict, base_scores: dict, anchor,
           warnings: list[str]) -> dict[str, Path]:
    """Every plot of the comparison as PNG; a plot that fails is reported, not fatal (the runs are worth more)."""
    from .. import plots as P

    made: dict[str, Path] = {}

    def attempt(name, fn, *a, **kw):
        path = out / f"{name}.png"
        try:
            fn(*a, path=path, **kw)
            made[name] = path
        except Exception as e:  # noqa: BLE001 -- a plotting bug must not lose an hour of runs
            warnings.append(f"plot {name} failed: {type(e).__name__}: {e}")

    if anchor is not None:
        attempt("anchor_spectrum", P.spectrum, anchor)
    for d in cfg.domains:
        key = domain_key(d)
        runs = [r for r in load_runs(out, d) if r["status"].get("status") == "completed"]
        if not runs:
            continue
        attempt(f"{key}_scores_over_steps", P.scores_over_steps, runs)
        attempt(f"{key}_score_plane", P.score_plane, runs, base=base_scores.get(d))
        attempt(f"{key}_loss_curves", P.loss_curves, runs)
        dba = next((r for r in runs if r["label"] == "dba"), None)
        if dba is not None:
            attempt(f"{key}_similarity_and_scale", P.similarity_and_scale, dba)
            rho = [m["rho"] for m in dba["metrics"] if m.get("type") == "step" and m.get("rho") is not None]
            attempt(f"{key}_dc_function", P.dc_function, cfg.run.dba.correction, rho, rho[-1] if rho else None)
        attempt(f"{key}_score_bars", P.score_bars, _bar_rows(rows, cost, d))
    return made


def _bar_rows(rows: list[dict], cost: dict, domain: str) -> list[dict]:
    """results rows of one domain with the cost the accounting counts (evaluations taken out), plus two cost-only
    bars: the anchor pass (amortised) and the whole mixture sweep, so the chart shows what DBA is compared with."""
    c = cost["domains"].get(domain, {})
    net = c.get("runs", {})
    out = []
    for r in rows:
        if r["domain"] != domain:
            continue
        r = dict(r)
        if r["label"] in net:
            r["wall_seconds"], r["device_seconds"] = net[r["label"]]["seconds"], net[r["label"]]["device_seconds"]
        out.append(r)
    a = cost.get("anchor")
    if a:
        am = a["amortised_per_domain"]
        out.append({"method": "anchor", "label": "anchor ĝ_G (amortised)", "wall_seconds": am["seconds"],
                    "device_seconds": am["device_seconds"], "tokens": am["tokens"]})
    if "mixture" in c:
        m = c["mixture"]
        out.append({"method": "mixture", "label": f"mixture sweep ({m['ratios']} ratios)",
                    "wall_seconds": m["total"]["seconds"], "device_seconds": m["total"]["device_seconds"],
                    "tokens": m["total"]["tokens"]})
    return out

