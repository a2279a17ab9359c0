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
from .rows import RESULT_COLUMNS, base_row, domain_rows, units_of

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


def _mean(costs: list[dict]) -> dict:
    return {k: round(sum(c[k] for c in costs) / len(costs), 3) for k in ("seconds", "device_seconds", "tokens")}


def _per_seed(by_label: dict) -> dict[str, list[dict]]:
    """label -> [run cost per seed] (a label's status may be one dict or a list of them, one per seed)."""
    return {lab: [run_cost(st) for st in (v if isinstance(v, list) else [v])] for lab, v in by_label.items()}


def cost_accounting(statuses: dict[str, dict[str, dict | list[dict]]], methods: dict[str, str],
                    anchor: dict | None, n_domains: int, wiseft: dict | None = None) -> dict:
    """cost.json from the runs' status.json contents.

    - ``statuses``: domain -> label -> status dict, or a list of them (one per seed); ``methods``: label -> method;
    - ``anchor``: {"seconds", "device_seconds", "tokens", ...} of the one anchor pass (None without DBA runs);
    - ``wiseft``: domain -> WiSE-FT label -> [scoring seconds per seed] (no training, so no tokens);
    - every per-method figure is the cost of ONE run (the mean over its seeds; ``runs_per_seed`` lists each seed
      when there are several); DBA's total per domain = its run + anchor / n_domains; the mixture total = the sum
      over its ratio sweep; ``dba_share_of_sweep`` = DBA total / mixture total, per measure;
    - ``all_runs`` (per domain) and ``total`` (everything: the anchor pass once + every run of every seed + the
      WiSE-FT scoring) are sums.
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
    everything = [{k: (anchor[k] if anchor else zero[k]) for k in zero}]
    for domain, by_label in statuses.items():
        per_seed = _per_seed(by_label)
        runs = {lab: _mean(c) for lab, c in per_seed.items()}
        d: dict = {"runs": runs, "all_runs": _add(*(c for cs in per_seed.values() for c in cs))}
        everything.append(d["all_runs"])
        if any(len(c) > 1 for c in per_seed.values()):
            d["runs_per_seed"] = per_seed
        w = (wiseft or {}).get(domain)
        if w:
            d["wiseft"] = {lab: {"seconds": round(sum(v) / len(v), 3), "per_seed": v} for lab, v in w.items()}
            everything.append({"seconds": sum(sum(v) for v in w.values()), "device_seconds":
                               sum(sum(v) for v in w.values()), "tokens": 0})
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
    out["seeds"] = max((len(c) for by in statuses.values() for c in _per_seed(by).values()), default=0)
    out["total"] = _add(*everything)
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
    if cost.get("seeds", 1) > 1:
        lines.append(f"Seeds: {cost['seeds']}; every figure above is the cost of one run (the mean over its seeds).")
        for domain, d in cost["domains"].items():
            per = "; ".join(lab + " " + ", ".join(f"{c['seconds']:.1f}" for c in cs)
                            for lab, cs in d.get("runs_per_seed", {}).items())
            lines.append(f"{domain_key(domain)}: seconds per seed: {per}; all its runs {d['all_runs']['seconds']:.1f} s.")
    for domain, d in cost["domains"].items():
        if d.get("wiseft"):
            secs = [w["seconds"] for w in d["wiseft"].values()]
            lines.append(f"{domain_key(domain)}: {len(secs)} WiSE-FT points, no training: "
                         f"{sum(secs) / len(secs):.1f} s of scoring each.")
    if cost.get("total"):
        t = cost["total"]
        lines.append(f"Everything together (anchor once, every run of every seed, WiSE-FT scoring): "
                     f"{t['seconds']:.1f} s, {t['device_seconds']:.1f} device-s, {t['tokens']:,.0f} tokens.")
    if "dba_share_of_sweeps" in cost and len(cost["domains"]) > 1:
        s = cost["dba_share_of_sweeps"]
        lines.append(f"All domains: DBA {cost['dba_all_domains']['seconds']:.1f} s (one anchor pass + "
                     f"{len(cost['domains'])} runs) vs mixture sweeps {cost['mixture_all_domains']['seconds']:.1f} "
                     f"s: {pct(s['seconds'])} in seconds, {pct(s['tokens'])} in tokens.")
    return lines


# --------------------------------------------------------------------------------------------------------------------
# results.csv and summary.md


def result_rows(cfg: CompareConfig, specs: list[RunSpec], base_scores: dict, out: Path):
    """(results rows, {domain: {label: [status per seed]}} of the completed scored runs, {label: method},
    {domain: {wiseft label: [seconds per seed]}}) from the folders (see :mod:`.rows`)."""
    from ..scores import scores_from_record

    rows, statuses, methods, wiseft = [], {}, {}, {}
    for d in cfg.domains:
        b = base_scores.get(d)
        if b is not None:
            rows.append(base_row(d, b))
        units = units_of([s for s in specs if s.domain == d])
        rows += domain_rows(units, scores_from_record(b) if b is not None else None, cfg.seeds, out)
        for u in (u for u in units if u.scores is not None):
            if u.method == "wiseft":
                wiseft.setdefault(d, {}).setdefault(u.label, []).append(u.status.get("wall_seconds") or 0.0)
            else:
                statuses.setdefault(d, {}).setdefault(u.label, []).append(u.status)
                methods[u.label] = u.method
    rows = [{k: r.get(k) for k in RESULT_COLUMNS} for r in rows]  # every row has every column
    return rows, statuses, methods, wiseft


def results_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(RESULT_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in RESULT_COLUMNS})
    return buf.getvalue()


def row_interval(row: dict, name: str):
    """The :class:`dba.stats.Interval` of column ``name`` of a results row (None without its bounds)."""
    from ..stats import Interval

    vals = [row.get(name), row.get(name + "_lo"), row.get(name + "_hi")]
    if any(v is None or v == "" for v in vals):
        return None
    return Interval(*(float(v) for v in vals), n=int(float(row.get("n_g") or 0) + float(row.get("n_d") or 0)),
                    n_seeds=int(float(row.get("n_seeds") or 1)))


def _score_cell(row: dict, k: str) -> str:
    iv = row_interval(row, k)
    if iv is None:
        return "–" if row.get(k) is None else f"{100 * float(row[k]):.1f}"
    return f"{100 * iv.estimate:.1f} [{100 * iv.lo:.1f}, {100 * iv.hi:.1f}]"


def _diff_cell(row: dict, name: str) -> str:
    """A difference with its interval, "(within noise)" when the interval contains 0 (dba.stats)."""
    from ..stats import describe_difference

    iv = row_interval(row, name)
    if iv is None:
        return "–" if row.get(name) is None else f"{100 * float(row[name]):+.1f}"
    return describe_difference(iv).replace(" points", "")


def markdown_table(rows: list[dict]) -> str:
    """The results as a markdown table: scores and differences in points with their 95 % intervals."""
    head = ("| domain | label | seed | S_D | S_G | S | ΔS_D vs base | ΔS_G vs base | ΔS vs base | ΔS_G vs direct | "
            "ΔS vs direct | tokens | wall s | status |")
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        cells = [domain_key(r["domain"]), r["label"], "" if r.get("seed") is None else str(r["seed"]),
                 *(_score_cell(r, k) for k in ("s_d", "s_g", "s")),
                 *(_diff_cell(r, "d_" + k) for k in ("s_d", "s_g", "s")),
                 *(_diff_cell(r, "vs_direct_" + k) for k in ("s_g", "s")),
                 "–" if r.get("tokens") is None else str(r["tokens"]),
                 "–" if r.get("wall_seconds") is None else str(r["wall_seconds"]), str(r.get("status"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _nll_cell(row: dict, name: str, diff: bool = False) -> str:
    """An NLL (nats per token, 3 decimals) or its change, with its interval; "(within noise)" for a change whose
    interval contains 0."""
    iv = row_interval(row, name)
    sign = "+" if diff else ""
    if iv is None:
        return "–" if row.get(name) in (None, "") else f"{float(row[name]):{sign}.3f}"
    s = f"{iv.estimate:{sign}.3f} [{iv.lo:{sign}.3f}, {iv.hi:{sign}.3f}]"
    return s + (" (within noise)" if diff and iv.within_noise else "")


def nll_table(rows: list[dict]) -> str:
    """Held-out answer NLL per token (nats; lower is better) and its change vs the base model, with intervals."""
    lines = ["| domain | label | seed | NLL_G | NLL_D | ΔNLL_G vs base | ΔNLL_D vs base |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        cells = [domain_key(r["domain"]), r["label"], "" if r.get("seed") is None else str(r["seed"]),
                 _nll_cell(r, "nll_g"), _nll_cell(r, "nll_d"), _nll_cell(r, "d_nll_g", True),
                 _nll_cell(r, "d_nll_d", True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _has_nll(rows: list[dict]) -> bool:
    return any(r.get(k) not in (None, "") for r in rows for k in ("nll_g", "nll_d"))


def _nll_section(rows: list[dict]) -> list[str]:
    if not _has_nll(rows):
        return []
    return ["### Held-out answer NLL per token", "",
            "Mean negative log-likelihood per answer token (nats; **lower is better**) of reference answers to "
            "held-out questions that are in neither the training nor the anchor corpus; Δ vs the base model, paired "
            "on the same pairs. It moves with small changes the share-correct scores cannot see, and is blind to "
            "whether the model would *say* the answer (generation).", "", nll_table(rows), ""]


def _tables(cfg: CompareConfig, rows: list[dict]) -> list[str]:
    """One table (and the NLL table); with several seeds the pooled rows first, then every seed's rows."""
    if cfg.seeds == 1:
        return [markdown_table(rows), "", *_nll_section(rows)]
    pooled = [r for r in rows if r.get("seed") in ("all", None)]
    seeds = [r for r in rows if r.get("seed") != "all"]
    return ["## Pooled over the seeds", "", markdown_table(pooled), "", *_nll_section(pooled), "## Every seed", "",
            markdown_table(seeds), "", *_nll_section(seeds)]


def _seeds_text(cfg: CompareConfig) -> str:
    from .plan import seeds_of

    seeds = seeds_of(cfg)
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


def write_summary(cfg: CompareConfig, out: Path, rows, cost, plots, status, warnings) -> None:
    """summary.md: the settings, the results table, the cost lines, the plots and any warnings."""
    run, a = cfg.run, cfg.run.dba
    adapter = f"LoRA r={run.lora.rank}, α={run.lora.effective_alpha:g}" if run.lora else "full fine-tuning"
    lines = [
        "# DBA compare", "",
        f"Status: **{status}**. Model `{run.model}` ({run.quantization}, "
        f"{adapter}), domains {', '.join(cfg.domains)}, "
        f"{run.steps} steps × batch {run.batch_size}, η_0 = {a.anneal.lr:g} ({a.anneal.schedule}), "
        f"{_seeds_text(cfg)}; "
        f"eval: scorer {run.eval_scorer}, "
        f"{'all' if not run.eval_items else 'first ' + str(run.eval_items)} items per set"
        f"{', every ' + str(run.eval_every) + ' steps' if run.eval_every else ''}. "
        f"This comparison took {cost['compare_wall_seconds']:.0f} s of wall-clock (everything but the plots).", "",
        "Scores in % (share correct) with their 95 % confidence interval in brackets; Δ in points vs the base "
        "model (scored once per domain and shared by every run: each run folder's step-0 evaluation is that shared "
        "record) and vs the direct run of the same seed(s), each with the interval of the difference: a paired "
        "bootstrap over the same items"
        f"{' and over the seeds (rows with seed all pool them)' if cfg.seeds > 1 else ''}. **within noise** = that "
        "interval contains 0: these items and seeds cannot tell the difference from none.", "",
        *_tables(cfg, rows),
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
        first_seed = min((r.get("seed") or 0 for r in runs), default=0)
        runs = [r for r in runs if (r.get("seed") or 0) == first_seed]  # curves over steps: one seed's runs
        if not runs:
            continue
        attempt(f"{key}_scores_over_steps", P.scores_over_steps, runs)
        if any(m.get("nll_g") is not None or m.get("nll_d") is not None for r in runs for m in r["metrics"]
               if m.get("type") == "eval"):
            attempt(f"{key}_nll_over_steps", P.nll_over_steps, runs)
        attempt(f"{key}_score_plane", P.score_plane, runs, base=base_scores.get(d))
        attempt(f"{key}_loss_curves", P.loss_curves, runs)
        dba = next((r for r in runs if r["label"] == "dba"), None)
        if dba is not None:
            attempt(f"{key}_similarity_and_scale", P.similarity_and_scale, dba)
            rho = [m["rho"] for m in dba["metrics"] if m.get("type") == "step" and m.get("rho") is not None]
            attempt(f"{key}_dc_function", P.dc_function, cfg.run.dba.correction, rho, rho[-1] if rho else None)
        attempt(f"{key}_score_bars", P.score_bars, _bar_rows(rows, cost, d))
        attempt(f"{key}_forgetting_plane", P.forgetting_plane, [r for r in rows if r["domain"] == d], d)
    return made


def _bar_rows(rows: list[dict], cost: dict, domain: str) -> list[dict]:
    """results rows of one domain with the cost the accounting counts (evaluations taken out), plus two cost-only
    bars: the anchor pass (amortised) and the whole mixture sweep, so the chart shows what DBA is compared with."""
    c = cost["domains"].get(domain, {})
    net = c.get("runs", {})
    out = []
    for r in rows:
        if r["domain"] != domain or r.get("method") == "wiseft":  # WiSE-FT points: on the forgetting plane
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

