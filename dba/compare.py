"""``dba compare``: the forgetting experiment — direct, a mixture ratio sweep, DBA, its ablations and variants, on the
same base model, domain data, seed and budget, all DBA runs sharing ONE global gradient ĝ_G estimated once.

:func:`compare` runs it and writes an output folder:

- ``anchor.safetensors``   — ĝ_G, estimated once at the start (or the file given as ``anchor``) and passed, loaded,
  to every DBA-family run (``finetune(..., anchor=g)``), for every domain;
- ``base.json``            — the base model's scores, measured ONCE per domain (general set once);
- ``runs/<label>/``        — one run folder per run (``runs/<domain>/<label>/`` when several domains are compared),
  written by :func:`dba.train.finetune`; the shared base evaluation is written into each run's ``metrics.jsonl``
  as its step-0 record (marked ``"shared": true``) and the final evaluation as its last record, so each folder
  reads like a stand-alone run;
- ``results.csv``          — one row per run plus a ``base`` row per domain (see :data:`RESULT_COLUMNS`);
- ``cost.json``            — the cost accounting (see :func:`cost_accounting`);
- ``<domain>_*.png``, ``anchor_spectrum.png`` — plots from :mod:`dba.plots`;
- ``summary.md``           — the results table and the cost lines;
- ``compare.json``         — the :class:`CompareConfig` and the run list (for ``resume``).

Cost is counted honestly (DESIGN.md §2.3): every run's wall-clock, device-seconds and tokens come from its
``status.json``; evaluations are the same for every method and not part of what a method costs, so the seconds spent
in intermediate evaluations (``eval_every``) are measured and taken out (the base and final evaluations happen
outside the runs' clocks). DBA's total includes the anchor pass, amortised over the domains that reuse it; the
mixture total is its whole ratio sweep.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import DBAError
from .io import atomic_write_json, atomic_write_text, read_jsonl
from .config import DBA_FAMILY, DEFAULT_RATIOS, METHODS, CompareConfig  # noqa: F401  (moved; re-exported)
from .config import DBAConfig


RESULT_COLUMNS = ("domain", "method", "label", "ratio", "general_per_batch", "status", "s_d", "s_g", "s",
                  "d_s_d", "d_s_g", "d_s", "tokens", "wall_seconds", "device_seconds", "eval_seconds", "steps",
                  "run_dir")
"""results.csv: scores in [0, 1] (``d_*`` = change vs the base model, in points of [0, 1]); tokens, wall_seconds,
device_seconds as the run's status.json has them; eval_seconds = time of intermediate evaluations inside the run
(taken out of the cost accounting); run_dir relative to the output folder."""

QUICK = {"steps": 16, "batch_size": 8, "eval_items": 20, "eval_every": 0, "anchor_batches": 8, "lora_rank": 8}
"""``--quick``: the embedded default on one domain — 12 runs (direct, 5 mixture ratios, dba, 3 ablations, 2 variants),
the anchor pass and the base evaluation, each run scored once at its end (intermediate evaluations would add about a
minute per run). Measured on 2 otherwise idle CPU cores, finance: 27 min 47 s in all — anchor 54 s, base evaluation
48 s, each run 73–94 s of training plus ≈ 45 s of final evaluation (2026-11-29; see docs/defaults.md). At this size
one eval item is 2.5 points, so the preset shows the machinery, not an effect."""



@dataclass
class RunSpec:
    """One run of the comparison."""

    domain: str
    method: str
    """An entry of :data:`METHODS`."""
    label: str
    """Unique within a domain: the method, or ``mixture-<ratio>``."""
    ratio: float | None
    run_dir: Path
    config: object
    """The :class:`dba.train.FinetuneConfig` of the run."""


@dataclass
class CompareResult:
    """What :func:`compare` returns (everything is also on disk in ``output_dir``)."""

    output_dir: Path
    status: str
    """completed, or cancelled (the runs finished so far are reported)."""
    rows: list[dict]
    """results.csv as dicts (numbers as numbers)."""
    cost: dict
    """cost.json."""
    base: dict
    """Per domain: the base model's s_g, s_d, s."""
    anchor_path: Path | None
    plots: dict[str, Path]
    """Plot name -> PNG path."""
    warnings: list[str] = field(default_factory=list)


class _Cancelled(Exception):
    pass


# --------------------------------------------------------------------------------------------------------------------
# Planning


def _variant(method: str, base: DBAConfig) -> DBAConfig:
    cfg = copy.deepcopy(base)
    if method == "dba-no-ggb":
        cfg.boost.enabled = False
    elif method == "dba-no-dc":
        cfg.correction.enabled = False
    elif method == "dba-no-al":
        cfg.anneal.enabled = False
    elif method == "dba-projection":
        cfg.boost.mode = "projection"
    elif method == "dba-relative":
        cfg.boost.scale = "relative"
    return cfg


def _domain_key(domain: str) -> str:
    p = Path(domain)
    name = p.stem if p.suffix else p.name
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "domain"


def validate(cfg: CompareConfig) -> None:
    """Raise :class:`DBAError` for a comparison that cannot run or would compare the same thing twice."""
    if not cfg.domains:
        raise DBAError("No domain given; name at least one (e.g. finance).")
    keys = [_domain_key(d) for d in cfg.domains]
    if len(set(keys)) != len(keys):
        raise DBAError(f"Domains repeat: {', '.join(cfg.domains)}.")
    if cfg.domain_eval and len(cfg.domains) > 1:
        raise DBAError("domain_eval names one file; with several domains each uses its own bundled eval set.")
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise DBAError(f"Unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}.")
    if not cfg.methods:
        raise DBAError("No methods to compare.")
    if len(set(cfg.methods)) != len(cfg.methods):
        raise DBAError("A method is listed twice.")
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise DBAError("steps, batch_size and grad_accum must be at least 1.")
    if cfg.eval_every < 0:
        raise DBAError("eval_every must be 0 or more.")
    if cfg.eval_items is not None and cfg.eval_items < 1:
        raise DBAError("eval_items must be at least 1.")
    if cfg.anchor_batches < 1:
        raise DBAError("anchor_batches must be at least 1.")
    if "mixture" in cfg.methods:
        if not cfg.ratios:
            raise DBAError("The mixture sweep needs at least one ratio.")
        seen: dict[int, float] = {}
        for r in cfg.ratios:
            if not 0.0 < r < 1.0:
                raise DBAError(f"Mixture ratio {r} is not in (0, 1) (0 is direct, 1 is general data only).")
            n = round(r * cfg.batch_size)
            if n < 1 or n >= cfg.batch_size:
                raise DBAError(f"Mixture ratio {r} gives {n} general examples in a batch of {cfg.batch_size}, "
                               "i.e. no mixture; choose a ratio in (0.5/batch, 1 - 0.5/batch) or a larger batch.")
            if n in seen:
                raise DBAError(f"Mixture ratios {seen[n]} and {r} both give {n} general examples per batch of "
                               f"{cfg.batch_size}: the same run twice. Choose distinct ratios or a larger batch.")
            seen[n] = r


def plan_runs(cfg: CompareConfig) -> list[RunSpec]:
    """Every run of the comparison, in order: per domain, the methods in :data:`METHODS` order."""
    from .train import FinetuneConfig

    validate(cfg)
    out = Path(cfg.output_dir)
    several = len(cfg.domains) > 1
    specs = []
    for domain in cfg.domains:
        for method in [m for m in METHODS if m in cfg.methods]:
            ratios = list(cfg.ratios) if method == "mixture" else [None]
            for r in ratios:
                label = f"mixture-{r:g}" if r is not None else method
                run_dir = out / "runs" / _domain_key(domain) / label if several else out / "runs" / label
                ft = FinetuneConfig(
                    method="mixture" if method == "mixture" else "direct" if method == "direct" else "dba",
                    model=cfg.model, quantization=cfg.quantization, lora=copy.deepcopy(cfg.lora), domain=domain,
                    general=cfg.general, domain_eval=cfg.domain_eval, general_eval=cfg.general_eval,
                    anchor=None, anchor_batches=cfg.anchor_batches, anchor_energy=cfg.anchor_energy,
                    mixture_ratio=r if r is not None else 0.5, steps=cfg.steps, batch_size=cfg.batch_size,
                    grad_accum=cfg.grad_accum, max_length=cfg.max_length, max_grad_norm=cfg.max_grad_norm,
                    seed=cfg.seed, dba=_variant(method, cfg.dba), eval_every=cfg.eval_every,
                    eval_items=cfg.eval_items, eval_scorer=cfg.eval_scorer,
                    # The base model is scored once by compare, and the final model right after the run, outside
                    # its clock (see the module docstring).
                    evaluate_at_end=False, output_dir=str(run_dir), device=cfg.device, dtype=cfg.dtype,
                    trust_remote_code=cfg.trust_remote_code)
                specs.append(RunSpec(domain, method, label, r, run_dir, ft))
    return specs


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
                f"{_domain_key(domain)}: DBA total {t['seconds']:.1f} s = run {d['dba']['run']['seconds']:.1f} s + "
                f"anchor {d['dba']['anchor_amortised']['seconds']:.1f} s ({t['tokens']:,.0f} tokens) vs the "
                f"{d['mixture']['ratios']}-ratio mixture sweep {m['seconds']:.1f} s ({m['tokens']:,.0f} tokens): "
                f"DBA costs {pct(s['seconds'])} of the sweep in seconds, {pct(s['device_seconds'])} in "
                f"device-seconds, {pct(s['tokens'])} in tokens.")
        elif "dba" in d:
            lines.append(f"{_domain_key(domain)}: DBA total {d['dba']['total']['seconds']:.1f} s (no mixture sweep "
                         "to compare).")
        elif "mixture" in d:
            lines.append(f"{_domain_key(domain)}: mixture sweep ({d['mixture']['ratios']} ratios) "
                         f"{d['mixture']['total']['seconds']:.1f} s (no DBA run to compare).")
    if "dba_share_of_sweeps" in cost and len(cost["domains"]) > 1:
        s = cost["dba_share_of_sweeps"]
        lines.append(f"All domains: DBA {cost['dba_all_domains']['seconds']:.1f} s (one anchor pass + "
                     f"{len(cost['domains'])} runs) vs mixture sweeps {cost['mixture_all_domains']['seconds']:.1f} "
                     f"s: {pct(s['seconds'])} in seconds, {pct(s['tokens'])} in tokens.")
    return lines


# --------------------------------------------------------------------------------------------------------------------
# Running


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[compare] {msg}", flush=True)


def _rewrite_metrics(run_dir: Path, base_rec: dict | None, final_rec: dict) -> None:
    """The run's metrics with the shared base evaluation as step 0 and the final evaluation last (atomically)."""
    recs = [m for m in read_jsonl(run_dir / "metrics.jsonl")
            if not (m.get("type") == "eval" and (m.get("shared") or m.get("step") == final_rec["step"]))]
    if base_rec is not None:
        recs.insert(0, base_rec)
    recs.append(final_rec)
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in recs))


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
        lines.append(f"| {_domain_key(r['domain'])} | {r['label']} | {f(r['s_d'])} | {f(r['s_g'])} | {f(r['s'])} | "
                     f"{f(r['d_s_d'], True)} | {f(r['d_s_g'], True)} | {f(r['d_s'], True)} | "
                     f"{r['tokens'] if r['tokens'] is not None else '–'} | "
                     f"{r['wall_seconds'] if r['wall_seconds'] is not None else '–'} | {r['status']} |")
    return "\n".join(lines)


def compare(cfg: CompareConfig, cancel: threading.Event | Callable[[], bool] | None = None,
            callback: Callable[[dict], None] | None = None, *, progress: bool = True,
            resume: bool = False) -> CompareResult:
    """Run the comparison described in the module docstring and write its output folder.

    - ``cancel``: a ``threading.Event`` or a callable returning True; checked during the anchor pass and before
      every step. A cancelled comparison writes what it has (results.csv, cost.json, summary.md) and returns
      status ``cancelled``; the run that was interrupted is left as a cancelled run folder.
    - ``callback(event)``: ``{"type": "compare", "phase": ..., "message": ..., "domain", "label", "index",
      "total"}`` events, and every record of the runs (steps, evaluations, phases) with ``"run"`` (label) and
      ``"domain"`` added.
    - ``resume``: continue a comparison in the same output folder: completed runs are kept, the anchor and base
      scores are reused, unfinished runs are started again from scratch (so their cost stays honest).
    """
    import torch

    from .global_gradient import GlobalGradient
    from .models import load_model
    from .scores import harmonic_mean
    from .data import resolve_corpus
    from .train import (FinetuneConfig, _cancelled, _device_seconds, _seed_everything, evaluate_model, finetune,
                        load_eval_sets, prepare_anchor)

    t_start = time.perf_counter()
    specs = plan_runs(cfg)
    out = Path(cfg.output_dir)
    if (out / "compare.json").exists() and not resume:
        raise DBAError(f"{out} already holds a comparison; choose another output folder or resume it.")
    if resume:
        if not (out / "compare.json").exists():
            raise DBAError(f"Nothing to resume in {out}: no compare.json.")
        saved = json.loads((out / "compare.json").read_text())["config"]
        if CompareConfig.from_dict(saved).to_dict() != cfg.to_dict():
            raise DBAError(f"The config differs from the one saved in {out}/compare.json; resume needs the same "
                           "config.")
    elif out.exists() and any(out.iterdir()):
        raise DBAError(f"{out} exists and is not empty; choose a new output folder.")
    warnings: list[str] = []
    # Eval sets and corpora first: a missing file fails now, before anything is written or loaded.
    sets = {}
    for d in cfg.domains:
        ft = FinetuneConfig(domain=d, general=cfg.general, domain_eval=cfg.domain_eval,
                            general_eval=cfg.general_eval)
        sets[d] = load_eval_sets(ft)
        if not resolve_corpus(d, "train").exists():
            raise DBAError(f"Domain corpus not found: {d}")
        if not sets[d][1]:
            warnings.append(f"{d}: no domain eval set, so S_D and S are not measured.")
    if cfg.anchor is not None:
        GlobalGradient.read_metadata(cfg.anchor)  # exists and is an anchor file (its fit is checked per run)
    if not sets[cfg.domains[0]][0]:
        warnings.append("No general eval set (data_samples/general/eval.jsonl or general_eval), so S_G and S are "
                        "not measured.")

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "compare.json", {"config": cfg.to_dict(), "runs": [
        {"domain": s.domain, "method": s.method, "label": s.label, "ratio": s.ratio,
         "run_dir": str(s.run_dir.relative_to(out))} for s in specs]})

    total = len(specs)

    def event(phase, message, **kw):
        _say(progress, message)
        if callback is not None:
            callback({"type": "compare", "phase": phase, "message": message, "total": total, **kw})

    # ---- one model load: the anchor pass and the base evaluation ----------------------------------------------------
    need_anchor = any(s.method in DBA_FAMILY for s in specs)
    anchor = None
    anchor_path: Path | None = None
    anchor_cost = None
    base_file = out / "base.json"
    base_scores: dict = json.loads(base_file.read_text()) if resume and base_file.exists() else {}
    have_anchor = (cfg.anchor is not None) or (resume and (out / "anchor.safetensors").exists())
    lm = None
    if (need_anchor and not have_anchor) or set(cfg.domains) - set(base_scores):
        event("load", f"loading {cfg.model} for the anchor pass and the base evaluation")
        _seed_everything(cfg.seed)
        lm = load_model(cfg.model, quantization=cfg.quantization, lora=cfg.lora, device=cfg.device,
                        dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    if need_anchor:
        if cfg.anchor is not None:
            anchor_path = Path(cfg.anchor)
            anchor = GlobalGradient.load(anchor_path)
            event("anchor", f"reusing the anchor {anchor_path}")
        elif have_anchor:
            anchor_path = out / "anchor.safetensors"
            anchor = GlobalGradient.load(anchor_path)
            event("anchor", f"reusing {anchor_path} (resume)")
        else:
            event("anchor", f"estimating the global gradient once ({cfg.anchor_batches} general batches)")
            ft = specs[0].config  # prepare_anchor reads only the general corpus, batch and anchor settings

            def on_batch(done, n, seconds):
                if _cancelled(cancel):
                    raise _Cancelled()
                if callback is not None:
                    callback({"type": "compare", "phase": "anchor", "done": done, "total_batches": n,
                              "seconds": seconds, "message": f"anchor batch {done}/{n}"})
            try:
                anchor, anchor_path = prepare_anchor(ft, lm, None, out, progress, on_batch)
            except _Cancelled:
                event("cancelled", "cancelled during the anchor pass")
                return _finish(cfg, out, specs, "cancelled", base_scores, None, None, warnings, progress, t_start)
        anchor_path = anchor_path.resolve()
        anchor.meta["path"] = str(anchor_path)  # every run's config records the same absolute file
        seconds = float(anchor.meta.get("seconds") or 0.0)
        device = lm.device if lm is not None else torch.device("cuda" if torch.cuda.is_available() and
                                                                cfg.device != "cpu" else "cpu")
        anchor_cost = {"seconds": seconds, "device_seconds": _device_seconds(seconds, device),
                       "tokens": int(anchor.meta.get("tokens") or 0), "batches": anchor.meta.get("batches"),
                       "path": str(anchor_path), "estimated_by_this_compare": cfg.anchor is None}

    for d in cfg.domains:
        if d in base_scores:
            continue
        if _cancelled(cancel):
            event("cancelled", "cancelled before the base evaluation")
            return _finish(cfg, out, specs, "cancelled", base_scores, anchor, anchor_cost, warnings, progress,
                           t_start)
        gen_eval, dom_eval = sets[d]
        # the general set is the same for every domain: score it once
        first = next((base_scores[k] for k in base_scores), None)
        event("base", f"scoring the base model on {d} (once, shared by every {d} run)")
        t0 = time.perf_counter()
        probe = specs[0].config
        sc_dom = evaluate_model(lm.model, lm.tokenizer, [], dom_eval, probe)
        if first is not None:
            s_g, g_detail = first["s_g"], first["detail"].get("general")
        else:
            sc_gen = evaluate_model(lm.model, lm.tokenizer, gen_eval, [], probe)
            s_g, g_detail = sc_gen["s_g"], sc_gen["detail"].get("general")
        s_d = sc_dom["s_d"]
        base_scores[d] = {"s_g": s_g, "s_d": s_d,
                          "s": None if s_g is None or s_d is None else harmonic_mean(s_g, s_d),
                          "detail": {"scorer": cfg.eval_scorer, "general": g_detail,
                                     "domain": sc_dom["detail"].get("domain")},
                          "seconds": round(time.perf_counter() - t0, 3)}
        atomic_write_json(base_file, base_scores)
    lm = None
    _free_memory()

    # ---- the runs ---------------------------------------------------------------------------------------------------
    status = "completed"
    for i, spec in enumerate(specs):
        tag = f"{spec.domain}/{spec.label}" if len(cfg.domains) > 1 else spec.label
        st_file = spec.run_dir / "status.json"
        if resume and st_file.exists():
            st = json.loads(st_file.read_text())
            if st.get("status") == "completed" and st.get("scores"):
                event("skip", f"[{i + 1}/{total}] {tag}: completed earlier, kept", label=spec.label,
                      domain=spec.domain, index=i)
                continue
            shutil.rmtree(spec.run_dir)  # unfinished: start again, so its cost is one clean run
        if _cancelled(cancel):
            status = "cancelled"
            break
        event("run", f"[{i + 1}/{total}] {tag}", label=spec.label, domain=spec.domain, index=i)
        ft = spec.config
        if spec.method in DBA_FAMILY:
            ft = copy.copy(ft)
            ft.anchor = str(anchor_path)  # recorded in config.json; the loaded anchor itself is passed below
        clock = {"last": time.perf_counter(), "eval": 0.0}

        def on_record(rec, spec=spec, clock=clock):
            now = time.perf_counter()
            if rec.get("type") == "step":
                clock["last"] = now
            elif rec.get("type") == "eval":
                clock["eval"] += now - clock["last"]  # the evaluation ran since the step before it
                clock["last"] = now
            if callback is not None:
                callback({**rec, "run": spec.label, "domain": spec.domain})

        try:
            r = finetune(ft, cancel=cancel, callback=on_record, progress=progress,
                         anchor=anchor if spec.method in DBA_FAMILY else None, keep_model=True)
        except DBAError as e:  # e.g. a diverging ablation: record it and go on with the others
            msg = f"{tag} failed: {e}"
            warnings.append(msg)
            event("failed", msg, label=spec.label, domain=spec.domain, index=i)
            continue
        if r.status == "cancelled":
            status = "cancelled"
            event("cancelled", f"{tag} cancelled after {r.steps_done} steps", label=spec.label,
                  domain=spec.domain, index=i)
            break
        # the final evaluation, outside the run's clock; the shared base evaluation becomes its step-0 record
        gen_eval, dom_eval = sets[spec.domain]
        t_eval = time.perf_counter()
        final = {"type": "eval", "step": ft.steps,
                 **evaluate_model(r.loaded.model, r.loaded.tokenizer, gen_eval, dom_eval, ft)}
        final_eval_seconds = time.perf_counter() - t_eval
        b = base_scores[spec.domain]
        base_rec = {"type": "eval", "step": 0, "s_g": b["s_g"], "s_d": b["s_d"], "s": b["s"],
                    "detail": b["detail"], "shared": True}
        _rewrite_metrics(spec.run_dir, base_rec, final)
        st = json.loads(st_file.read_text())
        st.update(scores={k: final[k] for k in ("s_g", "s_d", "s")}, eval_seconds=round(clock["eval"], 3),
                  final_eval_seconds=round(final_eval_seconds, 3),  # outside wall_seconds, like the base's
                  base_evaluation="shared: measured once by dba compare (base.json)")
        atomic_write_json(st_file, st)
        r.loaded = None
        _free_memory()
        if callback is not None:
            callback({**final, "run": spec.label, "domain": spec.domain})
        event("run-done", f"[{i + 1}/{total}] {tag}: S_D {_pct(final['s_d'])}, S_G {_pct(final['s_g'])}, "
                          f"S {_pct(final['s'])} in {st.get('wall_seconds', 0):.0f} s",
              label=spec.label, domain=spec.domain, index=i)
    return _finish(cfg, out, specs, status, base_scores, anchor, anchor_cost, warnings, progress, t_start)


def _free_memory() -> None:
    """Drop the last run's model before the next one loads (matters on a GPU)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _pct(x):
    return "–" if x is None else f"{100 * x:.1f}"


def _finish(cfg, out: Path, specs: list[RunSpec], status: str, base_scores: dict, anchor, anchor_cost,
            warnings: list[str], progress: bool, t_start: float) -> CompareResult:
    """results.csv, cost.json, plots and summary.md from what is on disk."""
    rows, statuses, methods = [], {}, {}
    for d in cfg.domains:
        b = base_scores.get(d)
        if b is not None:
            rows.append({"domain": d, "method": "base", "label": "base", "ratio": None, "general_per_batch": None,
                         "status": "base", "s_d": _num(b["s_d"]), "s_g": _num(b["s_g"]), "s": _num(b["s"]),
                         "d_s_d": 0.0 if b["s_d"] is not None else None,
                         "d_s_g": 0.0 if b["s_g"] is not None else None,
                         "d_s": 0.0 if b["s"] is not None else None, "tokens": 0, "wall_seconds": None,
                         "device_seconds": None, "eval_seconds": b.get("seconds"), "steps": 0, "run_dir": None})
        for s in (s for s in specs if s.domain == d):
            f = s.run_dir / "status.json"
            if not f.exists():
                continue
            st = json.loads(f.read_text())
            rows.append(_row(s, st, b or {}, out))
            if st.get("status") == "completed" and st.get("scores"):
                statuses.setdefault(d, {})[s.label] = st
                methods[s.label] = s.method
    atomic_write_text(out / "results.csv", results_csv(rows))
    cost = cost_accounting(statuses, methods, anchor_cost, len(cfg.domains))
    cost["status"] = status
    # everything this call did: model loads, anchor, base and final evaluations, runs (plots excluded)
    cost["compare_wall_seconds"] = round(time.perf_counter() - t_start, 1)
    atomic_write_json(out / "cost.json", cost)

    plots = _plots(cfg, out, rows, cost, base_scores, anchor, warnings) if statuses or anchor is not None else {}
    _summary(cfg, out, rows, cost, plots, status, warnings)
    if warnings:
        for w in warnings:
            _say(progress, f"warning: {w}")
    _say(progress, f"{status} in {time.perf_counter() - t_start:.0f} s: {out}/results.csv, cost.json, summary.md, "
                   f"{len(plots)} plots")
    for line in cost_lines(cost):
        _say(progress, line)
    return CompareResult(output_dir=out, status=status, rows=rows, cost=cost,
                         base={d: {k: v.get(k) for k in ("s_g", "s_d", "s")} for d, v in base_scores.items()},
                         anchor_path=Path(anchor_cost["path"]) if anchor_cost else None, plots=plots,
                         warnings=warnings)


def load_runs(out_dir: str | Path, domain: str | None = None) -> list[dict]:
    """The run dicts of a comparison folder (``dba.train.read_run`` plus ``label``, ``method``, ``domain``), in run
    order, for plots and the app. Runs not started yet are left out."""
    from .train import read_run

    out = Path(out_dir)
    if not (out / "compare.json").exists():
        raise DBAError(f"{out} is not a comparison folder (no compare.json).")
    listing = json.loads((out / "compare.json").read_text())["runs"]
    runs = []
    for r in listing:
        if domain is not None and r["domain"] != domain:
            continue
        d = out / r["run_dir"]
        if (d / "status.json").exists():
            runs.append({**read_run(d), "label": r["label"], "method": r["method"], "domain": r["domain"]})
    return runs


def _plots(cfg: CompareConfig, out: Path, rows: list[dict], cost: dict, base_scores: dict, anchor,
           warnings: list[str]) -> dict[str, Path]:
    """Every plot of the comparison as PNG; a plot that fails is reported, not fatal (the runs are worth more)."""
    from . import plots as P

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
        key = _domain_key(d)
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
            attempt(f"{key}_dc_function", P.dc_function, cfg.dba.correction, rho, rho[-1] if rho else None)
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


def _summary(cfg: CompareConfig, out: Path, rows, cost, plots, status, warnings) -> None:
    a = cfg.dba
    lines = [
        "# DBA compare", "",
        f"Status: **{status}**. Model `{cfg.model}` ({cfg.quantization}, "
        f"{'LoRA r=' + str(cfg.lora.rank) if cfg.lora else 'full fine-tuning'}), domains {', '.join(cfg.domains)}, "
        f"{cfg.steps} steps × batch {cfg.batch_size}, η_0 = {a.anneal.lr:g} ({a.anneal.schedule}), seed {cfg.seed}; "
        f"eval: scorer {cfg.eval_scorer}, "
        f"{'all' if cfg.eval_items is None else 'first ' + str(cfg.eval_items)} items per set"
        f"{', every ' + str(cfg.eval_every) + ' steps' if cfg.eval_every else ''}. "
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
# The command


def config_from_args(args) -> CompareConfig:
    from .cli import _lora
    from .optim import AnnealConfig, BoostConfig, CorrectionConfig

    if args.quick:
        for k, v in QUICK.items():
            if getattr(args, k, None) is None:
                setattr(args, k, v)
    b, a = BoostConfig(), AnnealConfig()
    dba = DBAConfig(
        boost=BoostConfig(k0=args.k0, k0_max=args.k0_max if args.k0_max is not None else b.k0_max,
                          decay=args.boost_decay),
        correction=CorrectionConfig(function=args.dc_function, beta=args.dc_beta),
        anneal=AnnealConfig(lr=args.lr if args.lr is not None else a.lr, schedule=args.schedule,
                            warmup_steps=args.warmup))
    if args.lora_rank is None:
        args.lora_rank = 16
    methods = list(METHODS) if args.methods in (None, "all") else [m.strip() for m in args.methods.split(",")
                                                                  if m.strip()]
    try:
        ratios = list(DEFAULT_RATIOS) if args.ratios is None else [float(x) for x in args.ratios.split(",")
                                                                   if x.strip()]
    except ValueError:
        raise DBAError(f"--ratios must be numbers separated by commas, got {args.ratios!r}.") from None
    out = args.output or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}"
    return CompareConfig(
        model=args.model or "default", quantization=args.quantization, lora=_lora(args),
        domains=[d.strip() for d in args.domains.split(",") if d.strip()], general=args.general,
        general_eval=args.general_eval, domain_eval=args.domain_eval, methods=methods, ratios=ratios,
        steps=args.steps or 60, batch_size=args.batch_size or 8, grad_accum=args.grad_accum,
        max_length=args.max_length or 256, seed=args.seed, dba=dba, anchor=args.anchor,
        anchor_batches=args.anchor_batches or 16, eval_every=args.eval_every or 0, eval_items=args.eval_items,
        eval_scorer=args.scorer, output_dir=out, device=args.device, trust_remote_code=args.trust_remote_code)


def cmd_compare(args) -> int:
    if args.resume:
        p = Path(args.resume)
        if not (p / "compare.json").exists():
            raise DBAError(f"{p} is not a comparison folder (no compare.json).")
        cfg = CompareConfig.from_dict(json.loads((p / "compare.json").read_text())["config"])
    else:
        cfg = config_from_args(args)
    n_runs = len(plan_runs(cfg))
    print(f"comparison folder: {cfg.output_dir} ({n_runs} runs on {', '.join(cfg.domains)}, {cfg.steps} steps each)")
    stop = threading.Event()
    try:
        res = compare(cfg, cancel=stop, progress=not args.quiet, resume=bool(args.resume))
    except KeyboardInterrupt:
        stop.set()
        raise
    if args.json:
        print(json.dumps({"status": res.status, "rows": res.rows, "cost": res.cost}, indent=2, default=str))
    else:
        print((res.output_dir / "results.csv").read_text(), end="")
    return 0 if res.status == "completed" else 3


def add_command(sub) -> None:
    """Register ``dba compare`` on the CLI's subparsers."""
    from .cli import _add_model_args
    from .optim import AnnealConfig, BoostConfig, CorrectionConfig

    b, c, a = BoostConfig(), CorrectionConfig(), AnnealConfig()
    p = sub.add_parser("compare", help="direct vs mixture sweep vs DBA (+ ablations), one shared anchor, with cost",
                       description="Run direct, a mixture ratio sweep, DBA, its ablations (GGB/DC/AL off) and "
                                   "variants (projection, relative scaling) on the same model, data and budget, "
                                   "reusing one global gradient; write results.csv, cost.json, plots, summary.md.")
    _add_model_args(p)
    for action in p._actions:  # --lora-rank: None = 16, or the --quick preset's rank
        if action.dest == "lora_rank":
            action.default = None
            action.help = "LoRA rank; 0 = full fine-tuning (default 16; quick 8)"
    d = p.add_argument_group("data")
    d.add_argument("--domains", default="finance", help="comma-separated domains (bundled names or paths)")
    d.add_argument("--general", default="general", help="general corpus (anchor and mixture)")
    d.add_argument("--general-eval", default=None, help="general MC eval file (default: bundled)")
    d.add_argument("--domain-eval", default=None, help="domain MC eval file (one domain only; default: bundled)")
    d.add_argument("--max-length", type=int, default=None, help="longest example in tokens (default 256)")
    r = p.add_argument_group("runs")
    r.add_argument("--methods", default=None, help=f"comma-separated subset of: {', '.join(METHODS)} (default all)")
    r.add_argument("--ratios", default=None,
                   help=f"mixture ratios, comma-separated (default {','.join(f'{x:g}' for x in DEFAULT_RATIOS)})")
    r.add_argument("--steps", type=int, default=None, help=f"steps per run (default 60; quick {QUICK['steps']})")
    r.add_argument("--batch-size", type=int, default=None, help="default 8")
    r.add_argument("--grad-accum", type=int, default=1)
    r.add_argument("--lr", type=float, default=None, help=f"η_0 for every run (default {a.lr:g})")
    r.add_argument("--schedule", choices=["cosine", "linear", "constant"], default=a.schedule)
    r.add_argument("--warmup", type=int, default=0)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--eval-items", type=int, default=None, help=f"first N items per eval set (quick "
                                                                f"{QUICK['eval_items']})")
    r.add_argument("--eval-every", type=int, default=None, help="score every N steps (default 0: start and end)")
    r.add_argument("--scorer", choices=["mean", "loglik", "gen"], default="mean")
    g = p.add_argument_group("DBA")
    g.add_argument("--anchor", default=None, help="reuse a saved global gradient (default: estimate once)")
    g.add_argument("--anchor-batches", type=int, default=None, help=f"default 16; quick {QUICK['anchor_batches']}")
    g.add_argument("--k0", type=float, default=None)
    g.add_argument("--k0-max", type=float, default=None, help=f"short-run cap on 200/T (default {b.k0_max})")
    g.add_argument("--boost-decay", choices=["linear", "constant", "cosine"], default=b.decay)
    g.add_argument("--dc-function", choices=["paper", "conservative", "off"], default=c.function)
    g.add_argument("--dc-beta", type=float, default=c.beta)
    o = p.add_argument_group("output")
    o.add_argument("-o", "--output", default=None, help="output folder (default runs/compare-<time>)")
    o.add_argument("--resume", default=None, metavar="DIR", help="continue a comparison (completed runs are kept)")
    o.add_argument("--quick", action="store_true",
                   help="the embedded default on one domain within 30 minutes on 2 CPU cores")
    o.add_argument("--json", action="store_true", help="print rows and cost as JSON at the end")
    o.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_compare)
