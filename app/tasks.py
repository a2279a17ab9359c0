"""What the Studio's background jobs do — each one a thin sequence of engine calls (``dba.*``), reporting to a
:class:`app.jobs.Job` as it goes. No training logic or formula lives here: every config starts from the Studio's
preset (:func:`dba.config.preset`, the same object the CLI's ``--preset`` uses) with the page's choices applied, and
the global gradient comes from the library's one corpus → anchor pipeline (:func:`dba.anchor.estimate_from_corpus`)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from dba.anchor import estimate_from_corpus, load_anchor_corpus
from dba.config import AnchorConfig, CompareConfig, FinetuneConfig, Preset
from dba.global_gradient import GlobalGradient
from dba.models import load_model
from dba.train import finetune

from .jobs import Job
from .session import ModelChoice, Workspace


class JobCancelled(Exception):
    """Raised inside a job to stop a phase that has no cancel hook of its own (the anchor pass)."""


def load_choice(choice: ModelChoice):
    """Load the session's model choice with the engine."""
    choice.check()
    return load_model(choice.name, quantization=choice.quantization, lora=choice.lora(), device=choice.device)


def load_job(choice: ModelChoice):
    """The Model tab's Load button: load the choice once and report its size and memory. A job like any other, so
    loading (or failing to reach the hub) waits its turn for the machine and holds no page worker."""
    def work(job: Job) -> None:
        job.set_phase("load", f"loading {choice.describe()}")
        lm = load_choice(choice)
        try:
            job.touch(result={"summary": lm.summary()})
        finally:
            del lm
    return work


def model_fields(choice: ModelChoice) -> dict:
    """The run-config fields the Model tab decides."""
    choice.check()
    return dict(model=choice.name, quantization=choice.quantization, lora=choice.lora(), device=choice.device)


# --------------------------------------------------------------------------------------------------------------------
# Global gradient


def estimate_anchor(job: Job, choice: ModelChoice, cfg: AnchorConfig, out: Path,
                    lm=None) -> tuple[GlobalGradient, Path]:
    """Estimate ĝ_G with the library's pipeline, reporting batches done; cancellable between batches."""
    if lm is None:
        job.set_phase("load", f"loading {choice.describe()}")
        lm = load_choice(choice)
    job.set_phase("load", "reading the general corpus")
    corpus = load_anchor_corpus(cfg, lm.tokenizer)
    job.set_phase("anchor", f"global gradient: averaging {cfg.batches} general batches", total=cfg.batches,
                  unit="batch")

    def on_batch(done, total, seconds):
        job.advance(done, total or cfg.batches)
        if job.cancel.is_set():
            raise JobCancelled()

    g = estimate_from_corpus(lm, cfg, corpus=corpus, progress=False, callback=on_batch)
    return g, g.save(out)


def anchor_config(preset: Preset, **changes) -> AnchorConfig:
    """The Global gradient tab's pass: the preset's anchor config with the page's changes (corpus, batches, ...)."""
    return preset.anchor_config(**changes)


def anchor_job(ws: Workspace, cfg: AnchorConfig):
    """The Global gradient tab's Compute button."""
    choice = ModelChoice(**ws.model.as_dict())

    def work(job: Job) -> None:
        out = ws.new_run_dir("anchor") / "anchor.safetensors"
        try:
            g, path = estimate_anchor(job, choice, cfg, out)
        except JobCancelled:
            return
        with ws.lock:
            ws.anchor_path, ws.anchor_model = str(path), choice.as_dict()
        job.touch(result={"anchor": str(path), "summary": g.summary()})
    return work


def check_anchor_job(ws: Workspace, path: Path):
    """The "load a saved anchor" upload: load it against the session's model (it fails with the engine's
    AnchorMismatchError when it belongs to another, and the stored copy is deleted). A job, since it loads the model."""
    choice = ModelChoice(**ws.model.as_dict())

    def work(job: Job) -> None:
        job.set_phase("load", f"loading {choice.describe()} to check the anchor")
        try:
            lm = load_choice(choice)
            g = GlobalGradient.load(str(path), lm.model)
        except BaseException:
            Path(path).unlink(missing_ok=True)
            raise
        with ws.lock:
            ws.anchor_path, ws.anchor_model = str(path), choice.as_dict()
        job.note("Anchor loaded: it fits the model; DBA runs of this session will use it.")
        job.touch(result={"anchor": str(path), "summary": g.summary()})
    return work


# --------------------------------------------------------------------------------------------------------------------
# Fine-tuning


def train_config(ws: Workspace, preset: Preset, output_dir: Path, *, boost: dict | None = None,
                 correction: dict | None = None, anneal: dict | None = None, ablate=(), **run) -> FinetuneConfig:
    """The engine config for a fine-tune started from the page: the preset's run with the Model tab's choice, the
    form's run fields (``run``: method, domain, steps, ...) and DBA knobs (``boost``/``correction``/``anneal``
    fields), and the pieces in ``ablate`` ("GGB", "DC", "AL") switched off. The library validates it."""
    base = preset.run.dba
    dba = dataclasses.replace(
        base,
        boost=dataclasses.replace(base.boost, enabled="GGB" not in ablate, **(boost or {})),
        correction=dataclasses.replace(base.correction, enabled="DC" not in ablate, **(correction or {})),
        anneal=dataclasses.replace(base.anneal, enabled="AL" not in ablate, **(anneal or {})))
    anchor = ws.anchor_path if run.get("method", preset.run.method) == "dba" and ws.anchor_fits() else None
    return preset.run_config(**model_fields(ws.model), anchor=anchor, dba=dba, output_dir=str(output_dir), **run)


def run_label(cfg: FinetuneConfig) -> str:
    if cfg.method == "mixture":
        return f"mixture (r={cfg.mixture_ratio:g})"
    return cfg.method


def finetune_job(ws: Workspace, cfg: FinetuneConfig):
    """The Fine-tune tab's Start button."""
    def work(job: Job) -> None:
        trace = job.add_run(run_label(cfg), cfg.method, cfg.steps, cfg.output_dir)
        trace.config = cfg.to_dict()
        with ws.lock:
            ws.runs.append(cfg.output_dir)
        res = finetune(cfg, cancel=job.cancel, callback=lambda rec: job.record(trace, rec), progress=False)
        job.touch(result={"run_dir": str(res.run_dir), "status": res.status, "scores": res.scores,
                          "steps_done": res.steps_done})
    return work


# --------------------------------------------------------------------------------------------------------------------
# Compare


def compare_config(ws: Workspace, preset: Preset, output_dir: Path, *, domain: str, methods=(), ratios=(),
                   lr: float | None = None, **run) -> CompareConfig:
    """The Compare tab's experiment: the preset's comparison (its run, its ratio sweep) with the Model tab's choice,
    the session's anchor when it fits, and the form's changes (``run``: steps, batch_size, eval_items, ...)."""
    from dba.compare import validate

    if lr is not None:
        base = preset.run.dba
        run["dba"] = dataclasses.replace(base, anneal=dataclasses.replace(base.anneal, lr=lr))
    changes = dict(domains=[domain], methods=list(methods) or None, output_dir=str(output_dir))
    if ratios:
        changes["ratios"] = list(ratios)
    cfg = preset.compare_config(**changes, **model_fields(ws.model),
                                anchor=ws.anchor_path if ws.anchor_fits() else None, **run)
    validate(cfg)
    return cfg


def compare_job(ws: Workspace, cfg):
    """The Compare tab's Run button: dba.compare.compare with live records of every run."""
    from dba.compare import compare, plan_runs

    specs = {s.label: s for s in plan_runs(cfg)}
    choice = ModelChoice(**ws.model.as_dict())

    def work(job: Job) -> None:
        traces = {}
        job.touch(result={"compare_dir": cfg.output_dir, "runs_total": len(specs)})

        def on_event(ev: dict) -> None:
            if ev.get("type") != "compare":
                trace = traces.get(ev.get("run"))
                if trace is not None:
                    job.record(trace, ev)
                return
            phase, msg = ev.get("phase"), ev.get("message", "")
            if phase == "anchor" and ev.get("total_batches"):
                if job.phase != "anchor":
                    job.set_phase("anchor", msg, total=int(ev["total_batches"]), unit="batch")
                job.advance(int(ev.get("done", 0)), int(ev["total_batches"]))
            elif phase == "run":
                spec = specs.get(ev.get("label"))
                trace = job.add_run(ev.get("label", "run"), spec.method if spec else "run",
                                    spec.config.steps if spec else cfg.steps, str(spec.run_dir) if spec else None)
                if spec is not None:
                    trace.config = spec.config.to_dict()
                traces[trace.label] = trace
                job.set_phase("load", msg, total=trace.steps)
            else:
                job.touch(message=msg)
                if phase in ("load", "base"):
                    job.set_phase("eval" if phase == "base" else "load", msg)

        res = compare(cfg, cancel=job.cancel, callback=on_event, progress=False)
        with ws.lock:
            ws.compare_dir = str(res.output_dir)
            ws.runs.extend(str(s.run_dir) for s in specs.values() if (s.run_dir / "status.json").exists())
            if res.anchor_path is not None and not ws.anchor_fits():
                ws.anchor_path, ws.anchor_model = str(res.anchor_path), choice.as_dict()
        job.touch(result={**job.result, "status": res.status, "warnings": list(res.warnings),
                          "plots": {k: str(v) for k, v in res.plots.items()}})
    return work
