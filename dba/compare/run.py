"""Running a comparison: one model load for the anchor pass and the base evaluation, then every planned run, each
scored at its end outside its clock; a cancelled or failed run does not lose the others (see :mod:`dba.compare`)."""
from __future__ import annotations

import copy
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import CompareConfig
from ..errors import DBAError
from ..io import atomic_write_json, atomic_write_text, read_jsonl
from .plan import RunSpec, plan_runs
from .posthoc import score_wiseft
from .report import cost_accounting, cost_lines, make_plots, result_rows, results_csv, write_summary


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


@dataclass
class _Job:
    """One comparison in progress: what it was asked, what it has so far."""

    cfg: CompareConfig
    specs: list[RunSpec]
    out: Path
    cancel: threading.Event | Callable[[], bool] | None
    callback: Callable[[dict], None] | None
    progress: bool
    resume: bool
    t_start: float
    sets: dict = field(default_factory=dict)
    """domain -> (general eval items, domain eval items)."""
    pairs: dict = field(default_factory=dict)
    """domain -> (general held-out pairs, domain held-out pairs) for the answer NLL (dba.train.load_heldout_pairs)."""
    warnings: list[str] = field(default_factory=list)
    anchor: object = None
    anchor_path: Path | None = None
    anchor_cost: dict | None = None
    base_scores: dict = field(default_factory=dict)

    def event(self, phase: str, message: str, **kw) -> None:
        if self.progress:
            print(f"[compare] {message}", flush=True)
        if self.callback is not None:
            self.callback({"type": "compare", "phase": phase, "message": message, "total": len(self.specs), **kw})

    def cancelled(self) -> bool:
        from ..train import _cancelled

        return _cancelled(self.cancel)


def compare(cfg: CompareConfig, cancel: threading.Event | Callable[[], bool] | None = None,
            callback: Callable[[dict], None] | None = None, *, progress: bool = True,
            resume: bool = False) -> CompareResult:
    """Run the comparison described in :mod:`dba.compare` and write its output folder.

    - ``cancel``: a ``threading.Event`` or a callable returning True; checked during the anchor pass and before
      every step. A cancelled comparison writes what it has (results.csv, cost.json, summary.md) and returns
      status ``cancelled``; the run that was interrupted is left as a cancelled run folder.
    - ``callback(event)``: ``{"type": "compare", "phase": ..., "message": ..., "domain", "label", "index",
      "total"}`` events, and every record of the runs (steps, evaluations, phases) with ``"run"`` (label) and
      ``"domain"`` added.
    - ``resume``: continue a comparison in the same output folder: completed runs are kept, the anchor and base
      scores are reused, unfinished runs are started again from scratch (so their cost stays honest).
    """
    job = _Job(cfg, plan_runs(cfg), Path(cfg.output_dir), cancel, callback, progress, resume, time.perf_counter())
    _check_folder(job)
    _check_inputs(job)
    job.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job.out / "compare.json", {"config": cfg.to_dict(), "runs": [
        {"domain": s.domain, "method": s.method, "label": s.label, "ratio": s.ratio, "seed": s.seed,
         "run_dir": str(s.run_dir.relative_to(job.out))} for s in job.specs]})
    try:
        lm = _anchor_pass(job)
        _base_evaluation(job, lm)
    except _Cancelled as c:
        job.event("cancelled", str(c))
        return _finish(job, "cancelled")
    del lm
    _free_memory()
    status = "completed"
    for i, spec in enumerate(job.specs):
        if _run_one(job, i, spec) == "cancelled":
            status = "cancelled"
            break
    return _finish(job, status)


# --------------------------------------------------------------------------------------------------------------------
# Before anything is written


def resume_config(out_dir: str | Path) -> CompareConfig:
    """The config to resume the comparison in ``out_dir``: the one saved in its ``compare.json``, with
    ``output_dir`` set to ``out_dir`` itself (a copied or moved folder resumes where it is, not where it was made;
    as :func:`dba.train.resume_config` does for a run)."""
    out = Path(out_dir).expanduser()
    f = out / "compare.json"
    if not out.is_dir():
        raise DBAError(f"Comparison folder not found: {out}.")
    if not f.exists():
        raise DBAError(f"{out} is not a comparison folder (no compare.json).")
    try:
        saved = json.loads(f.read_text(encoding="utf-8"))["config"]
        cfg = CompareConfig.from_dict(saved)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise DBAError(f"{f} is damaged ({type(e).__name__}: {e}); the comparison cannot be resumed.") from None
    cfg.output_dir = str(out)
    return cfg


def _check_folder(job: _Job) -> None:
    out, cfg = job.out, job.cfg
    if (out / "compare.json").exists() and not job.resume:
        raise DBAError(f"{out} already holds a comparison; choose another output folder or resume it.")
    if job.resume:
        if not (out / "compare.json").exists():
            raise DBAError(f"Nothing to resume in {out}: no compare.json.")
        theirs, mine = resume_config(out).to_dict(), cfg.to_dict()
        theirs.pop("output_dir"), mine.pop("output_dir")  # a copied or moved folder resumes where it is
        if theirs != mine:
            raise DBAError(f"The config differs from the one saved in {out}/compare.json; resume needs the same "
                           "config (use dba.compare.resume_config).")
        base_file = out / "base.json"
        job.base_scores = json.loads(base_file.read_text()) if base_file.exists() else {}
    elif out.exists() and any(out.iterdir()):
        raise DBAError(f"{out} exists and is not empty; choose a new output folder.")


def _check_inputs(job: _Job) -> None:
    """Eval sets and corpora first: a missing file fails now, before anything is written or loaded."""
    from ..data import resolve_corpus
    from ..global_gradient import GlobalGradient
    from ..train import load_eval_sets, load_heldout_pairs

    cfg = job.cfg
    for d in cfg.domains:
        job.sets[d] = load_eval_sets(cfg.run_config(domain=d))
        job.pairs[d] = load_heldout_pairs(cfg.run_config(domain=d))
        if not resolve_corpus(d, "train").exists():
            raise DBAError(f"Domain corpus not found: {d}")
        if not job.sets[d][1]:
            job.warnings.append(f"{d}: no domain eval set, so S_D and S are not measured.")
    if cfg.run.anchor is not None:
        GlobalGradient.read_metadata(cfg.run.anchor)  # exists and is an anchor file (its fit is checked per run)
    if not job.sets[cfg.domains[0]][0]:
        job.warnings.append("No general eval set (data_samples/general/eval.jsonl or general_eval), so S_G and S "
                            "are not measured.")


# --------------------------------------------------------------------------------------------------------------------
# One model load: the anchor pass (once, for every DBA-family run of every domain) and the base evaluation


def _anchor_pass(job: _Job):
    """Load the base model when the anchor or a base score is missing; estimate or load ĝ_G. Returns the model."""
    import torch

    from ..anchor import estimate_from_corpus
    from ..global_gradient import GlobalGradient
    from ..models import load_model
    from ..train import _device_seconds, _seed_everything

    cfg, out = job.cfg, job.out
    run = cfg.run
    need_anchor = any(s.needs_anchor for s in job.specs)
    have_anchor = (run.anchor is not None) or (job.resume and (out / "anchor.safetensors").exists())
    lm = None
    if (need_anchor and not have_anchor) or set(cfg.domains) - set(job.base_scores):
        job.event("load", f"loading {run.model} for the anchor pass and the base evaluation")
        _seed_everything(run.seed)
        lm = load_model(run.model, quantization=run.quantization, lora=run.lora, device=run.device,
                        dtype=run.dtype, trust_remote_code=run.trust_remote_code)
    if not need_anchor:
        return lm
    if run.anchor is not None or have_anchor:
        path = Path(run.anchor) if run.anchor is not None else out / "anchor.safetensors"
        job.anchor = GlobalGradient.load(path)
        job.event("anchor", f"reusing the anchor {path}" if run.anchor is not None else f"reusing {path} (resume)")
    else:
        anchor_cfg = run.anchor_config()
        job.event("anchor", f"estimating the global gradient once ({anchor_cfg.batches} general batches)")

        def on_batch(done, n, seconds):
            if job.cancelled():
                raise _Cancelled("cancelled during the anchor pass")
            if job.callback is not None:
                job.callback({"type": "compare", "phase": "anchor", "done": done, "total_batches": n,
                              "seconds": seconds, "message": f"anchor batch {done}/{n}"})
        job.anchor = estimate_from_corpus(lm, anchor_cfg, progress=job.progress, callback=on_batch)
        path = job.anchor.save(out / "anchor.safetensors")
    job.anchor_path = Path(path).resolve()
    job.anchor.meta["path"] = str(job.anchor_path)  # every run's config records the same absolute file
    seconds = float(job.anchor.meta.get("seconds") or 0.0)
    device = lm.device if lm is not None else torch.device("cuda" if torch.cuda.is_available() and
                                                            run.device != "cpu" else "cpu")
    job.anchor_cost = {"seconds": seconds, "device_seconds": _device_seconds(seconds, device),
                       "tokens": int(job.anchor.meta.get("tokens") or 0), "batches": job.anchor.meta.get("batches"),
                       "path": str(job.anchor_path), "estimated_by_this_compare": run.anchor is None}
    return lm


def _base_evaluation(job: _Job, lm) -> None:
    """Score the base model once per domain (the general set once for all), into base.json."""
    from ..scores import harmonic_mean
    from ..train import evaluate_model

    probe = job.specs[0].config
    for d in job.cfg.domains:
        if d in job.base_scores:
            continue
        if job.cancelled():
            raise _Cancelled("cancelled before the base evaluation")
        gen_eval, dom_eval = job.sets[d]
        gen_pairs, dom_pairs = job.pairs[d]
        first = next(iter(job.base_scores.values()), None)  # the general set is the same for every domain
        job.event("base", f"scoring the base model on {d} (once, shared by every {d} run)")
        t0 = time.perf_counter()
        sc_dom = (evaluate_model(lm.model, lm.tokenizer, [], dom_eval, probe, pairs=([], dom_pairs))
                  if dom_eval or dom_pairs else {"s_d": None, "nll_d": None, "detail": {}})  # nothing to score
        if first is not None:
            s_g, nll_g, g_detail = first["s_g"], first.get("nll_g"), first["detail"].get("general")
        else:
            sc_gen = (evaluate_model(lm.model, lm.tokenizer, gen_eval, [], probe, pairs=(gen_pairs, []))
                      if gen_eval or gen_pairs else {"s_g": None, "nll_g": None, "detail": {}})
            s_g, nll_g, g_detail = sc_gen["s_g"], sc_gen["nll_g"], sc_gen["detail"].get("general")
        s_d = sc_dom["s_d"]
        job.base_scores[d] = {"s_g": s_g, "s_d": s_d,
                              "s": None if s_g is None or s_d is None else harmonic_mean(s_g, s_d),
                              "nll_g": nll_g, "nll_d": sc_dom["nll_d"],
                              "detail": {"scorer": job.cfg.run.eval_scorer, "general": g_detail,
                                         "domain": sc_dom["detail"].get("domain")},
                              "seconds": round(time.perf_counter() - t0, 3)}
        atomic_write_json(job.out / "base.json", job.base_scores)


# --------------------------------------------------------------------------------------------------------------------
# The runs


def _run_one(job: _Job, i: int, spec: RunSpec) -> str:
    """Train one planned run and score it at its end; returns its status ("skipped" when kept from before)."""
    from ..train import evaluate_model, finetune

    total = len(job.specs)
    tag = f"{spec.domain}/{spec.label}" if len(job.cfg.domains) > 1 else spec.label
    tag += f" (seed {spec.seed})" if job.cfg.seeds > 1 else ""
    where = dict(label=spec.label, domain=spec.domain, index=i, seed=spec.seed)
    st_file = spec.run_dir / "status.json"
    if job.resume and st_file.exists():
        st = json.loads(st_file.read_text())
        if st.get("status") == "completed" and st.get("scores"):
            job.event("skip", f"[{i + 1}/{total}] {tag}: completed earlier, kept", **where)
            _wiseft_of_folder(job, spec, tag)
            return "skipped"
        shutil.rmtree(spec.run_dir)  # unfinished: start again, so its cost is one clean run
    if job.cancelled():
        return "cancelled"
    job.event("run", f"[{i + 1}/{total}] {tag}", **where)
    ft = spec.config
    if spec.needs_anchor:
        ft = copy.copy(ft)
        ft.anchor = str(job.anchor_path)  # recorded in config.json; the loaded anchor itself is passed below
    clock = {"last": time.perf_counter(), "eval": 0.0}

    def on_record(rec):
        now = time.perf_counter()
        if rec.get("type") == "step":
            clock["last"] = now
        elif rec.get("type") == "eval":
            clock["eval"] += now - clock["last"]  # the evaluation ran since the step before it
            clock["last"] = now
        if job.callback is not None:
            job.callback({**rec, "run": spec.label, "domain": spec.domain})

    try:
        r = finetune(ft, cancel=job.cancel, callback=on_record, progress=job.progress,
                     anchor=job.anchor if spec.needs_anchor else None, keep_model=True)
    except DBAError as e:  # e.g. a diverging ablation: record it and go on with the others
        msg = f"{tag} failed: {e}"
        job.warnings.append(msg)
        job.event("failed", msg, **where)
        return "failed"
    if r.status == "cancelled":
        job.event("cancelled", f"{tag} cancelled after {r.steps_done} steps", **where)
        return "cancelled"
    # the final evaluation, outside the run's clock; the shared base evaluation becomes its step-0 record
    gen_eval, dom_eval = job.sets[spec.domain]
    t_eval = time.perf_counter()
    final = {"type": "eval", "step": ft.steps, **evaluate_model(r.loaded.model, r.loaded.tokenizer, gen_eval,
                                                                  dom_eval, ft, job.pairs[spec.domain])}
    final_eval_seconds = time.perf_counter() - t_eval
    _rewrite_metrics(spec.run_dir, _base_record(job.base_scores[spec.domain]), final)
    st = json.loads(st_file.read_text())
    st.update(scores={k: final[k] for k in ("s_g", "s_d", "s")}, eval_seconds=round(clock["eval"], 3),
              final_eval_seconds=round(final_eval_seconds, 3),  # outside wall_seconds, like the base's
              base_evaluation="shared: measured once by dba compare (base.json)")
    atomic_write_json(st_file, st)
    if job.cfg.wiseft:
        job.event("wiseft", f"{tag}: scoring WiSE-FT at α = {', '.join(f'{a:g}' for a in job.cfg.wiseft)}", **where)
        score_wiseft(r.loaded.model, r.loaded.tokenizer, job.sets[spec.domain], ft, spec.run_dir, job.cfg.wiseft)
    r.loaded = None
    _free_memory()
    if job.callback is not None:
        job.callback({**final, "run": spec.label, "domain": spec.domain})
    job.event("run-done", f"[{i + 1}/{total}] {tag}: S_D {_pct(final['s_d'])}, S_G {_pct(final['s_g'])}, "
                          f"S {_pct(final['s'])} in {st.get('wall_seconds', 0):.0f} s", **where)
    return "completed"


def _base_record(b: dict) -> dict:
    """The shared base evaluation as a run's step-0 record, with its intervals (recomputed from the per-item
    results in base.json)."""
    from ..scores import scores_from_record

    return {"type": "eval", "step": 0, **scores_from_record(b).to_record(), "shared": True}


def _wiseft_of_folder(job: _Job, spec: RunSpec, tag: str) -> None:
    """A run kept from before: score its WiSE-FT points that are still missing (resume with new α values)."""
    from .posthoc import missing_alphas, score_wiseft_of_folder

    if not job.cfg.wiseft or not missing_alphas(spec.run_dir, job.cfg.wiseft) or job.cancelled():
        return
    job.event("wiseft", f"{tag}: scoring its missing WiSE-FT points", label=spec.label, domain=spec.domain)
    try:
        score_wiseft_of_folder(spec.run_dir, job.sets[spec.domain], spec.config, job.cfg.wiseft,
                               device=job.cfg.run.device)
    except DBAError as e:
        job.warnings.append(f"{tag}: WiSE-FT not scored: {e}")
    _free_memory()


def _rewrite_metrics(run_dir: Path, base_rec: dict | None, final_rec: dict) -> None:
    """The run's metrics with the shared base evaluation as step 0 and the final evaluation last (atomically)."""
    recs = [m for m in read_jsonl(run_dir / "metrics.jsonl")
            if not (m.get("type") == "eval" and (m.get("shared") or m.get("step") == final_rec["step"]))]
    if base_rec is not None:
        recs.insert(0, base_rec)
    recs.append(final_rec)
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in recs))


def _free_memory() -> None:
    """Drop the last run's model before the next one loads (matters on a GPU)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _pct(x):
    return "–" if x is None else f"{100 * x:.1f}"


# --------------------------------------------------------------------------------------------------------------------
# The end: what is on disk, reported


def _finish(job: _Job, status: str) -> CompareResult:
    """results.csv, cost.json, plots and summary.md from what is on disk."""
    cfg, out = job.cfg, job.out
    rows, statuses, methods, wiseft = result_rows(cfg, job.specs, job.base_scores, out)
    atomic_write_text(out / "results.csv", results_csv(rows))
    cost = cost_accounting(statuses, methods, job.anchor_cost, len(cfg.domains), wiseft)
    cost["status"] = status
    # everything this call did: model loads, anchor, base and final evaluations, runs (plots excluded)
    cost["compare_wall_seconds"] = round(time.perf_counter() - job.t_start, 1)
    atomic_write_json(out / "cost.json", cost)
    plots = make_plots(cfg, out, rows, cost, job.base_scores, job.anchor, job.warnings) \
        if statuses or job.anchor is not None else {}
    write_summary(cfg, out, rows, cost, plots, status, job.warnings)
    say = job.progress
    for w in job.warnings if say else []:
        print(f"[compare] warning: {w}", flush=True)
    if say:
        print(f"[compare] {status} in {time.perf_counter() - job.t_start:.0f} s: {out}/results.csv, cost.json, "
              f"summary.md, {len(plots)} plots", flush=True)
        for line in cost_lines(cost):
            print(f"[compare] {line}", flush=True)
    return CompareResult(output_dir=out, status=status, rows=rows, cost=cost,
                         base={d: {k: v.get(k) for k in ("s_g", "s_d", "s")} for d, v in job.base_scores.items()},
                         anchor_path=Path(job.anchor_cost["path"]) if job.anchor_cost else None, plots=plots,
                         warnings=job.warnings)
