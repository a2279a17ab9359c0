"""What the Studio's background jobs do — each one a thin sequence of engine calls (``dba.*``), reporting to a
:class:`app.jobs.Job` as it goes. No training logic or formula lives here."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dba.data import batch_plan, collate, load_corpus, resolve_corpus
from dba.global_gradient import GlobalGradient, estimate_global_gradient
from dba.models import load_model
from dba.optim import AnnealConfig, BoostConfig, CorrectionConfig, DBAConfig
from dba.train import FinetuneConfig, finetune

from . import teaching
from .jobs import Job
from .session import ModelChoice, Workspace
from .settings import eval_every_for


class JobCancelled(Exception):
    """Raised inside a job to stop a phase that has no cancel hook of its own (the anchor pass)."""


def corpus_path(name_or_path: str, split: str = "train") -> Path:
    """A bundled data set name or a (checked, uploaded) file, as the engine resolves it."""
    return resolve_corpus(name_or_path, split)


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


# --------------------------------------------------------------------------------------------------------------------
# Global gradient


@dataclass
class AnchorForm:
    """The Global gradient tab's settings."""

    corpus: str = "general"
    """A bundled name or the path of a checked upload."""
    batches: int = 16
    batch_size: int = 8
    energy: float = 0.9
    """Share of each matrix's energy kept by the SVD compression."""
    max_length: int = 256
    seed: int = 0


def estimate_anchor(job: Job, choice: ModelChoice, form: AnchorForm, out: Path, lm=None) -> tuple[GlobalGradient, Path]:
    """Estimate ĝ_G with the engine, reporting batches done; cancellable between batches."""
    if lm is None:
        job.set_phase("load", f"loading {choice.describe()}")
        lm = load_choice(choice)
    job.set_phase("load", "reading the general corpus")
    corpus = load_corpus(corpus_path(form.corpus), lm.tokenizer, form.max_length)
    plan = batch_plan(len(corpus), form.batch_size, form.batches, form.seed)
    batches = (collate([corpus.examples[i] for i in idx], lm.tokenizer.pad_token_id) for idx in plan)
    job.set_phase("anchor", f"global gradient: averaging {form.batches} general batches", total=form.batches,
                  unit="batch")

    def on_batch(done, total, seconds):
        job.advance(done, total or form.batches)
        if job.cancel.is_set():
            raise JobCancelled()

    g = estimate_global_gradient(lm.model, batches, energy=form.energy, max_batches=form.batches, progress=False,
                                 callback=on_batch, base_model_id=choice.name, corpus_name=corpus.name,
                                 corpus_hash=corpus.content_hash)
    path = g.save(out)
    return g, path


def anchor_job(ws: Workspace, form: AnchorForm):
    """The Global gradient tab's Compute button."""
    choice = ModelChoice(**ws.model.as_dict())

    def work(job: Job) -> None:
        out = ws.new_run_dir("anchor") / "anchor.safetensors"
        try:
            g, path = estimate_anchor(job, choice, form, out)
        except JobCancelled:
            return
        with ws.lock:
            ws.anchor_path, ws.anchor_model = str(path), choice.as_dict()
        job.touch(result={"anchor": str(path), "summary": g.summary()})
    return work


def check_anchor(ws: Workspace, path: str) -> GlobalGradient:
    """Load a saved anchor against the session's model (AnchorMismatchError when it belongs to another)."""
    lm = load_choice(ws.model)
    g = GlobalGradient.load(path, lm.model)
    with ws.lock:
        ws.anchor_path, ws.anchor_model = str(path), ws.model.as_dict()
    return g


# --------------------------------------------------------------------------------------------------------------------
# Fine-tuning


@dataclass
class TrainForm:
    """The Fine-tune tab's settings (defaults = the engine's own)."""

    domain: str = "finance"
    method: str = "dba"
    steps: int = 60
    batch_size: int = 8
    lr: float = AnnealConfig().lr
    max_length: int = 256
    eval_every: int = 0
    eval_items: int | None = None
    eval_scorer: str = "mean"
    mixture_ratio: float = 0.5
    seed: int = 0
    anchor_batches: int = 16
    boost_mode: str = BoostConfig().mode
    k0: float | None = None
    k0_max: float | None = BoostConfig().k0_max
    boost_decay: str = BoostConfig().decay
    anchor_scale: str = BoostConfig().scale
    dc_function: str = CorrectionConfig().function
    dc_beta: float = CorrectionConfig().beta
    lam_min: float = CorrectionConfig().lam_min
    lam_max: float = CorrectionConfig().lam_max
    schedule: str = AnnealConfig().schedule
    warmup: int = 0
    ablate: tuple[str, ...] = ()
    """Pieces switched off: any of "GGB", "DC", "AL"."""


def train_config(ws: Workspace, form: TrainForm, output_dir: Path) -> FinetuneConfig:
    """The engine config for a fine-tune started from the page."""
    choice = ws.model
    choice.check()
    dba = DBAConfig(
        boost=BoostConfig(enabled="GGB" not in form.ablate, mode=form.boost_mode, k0=form.k0, k0_max=form.k0_max,
                          decay=form.boost_decay, scale=form.anchor_scale),
        correction=CorrectionConfig(enabled="DC" not in form.ablate, function=form.dc_function, beta=form.dc_beta,
                                    lam_min=form.lam_min, lam_max=form.lam_max),
        anneal=AnnealConfig(lr=form.lr, enabled="AL" not in form.ablate, schedule=form.schedule,
                            warmup_steps=form.warmup),
    )
    anchor = ws.anchor_path if form.method == "dba" and ws.anchor_fits() else None
    return FinetuneConfig(
        method=form.method, model=choice.name, quantization=choice.quantization, lora=choice.lora(),
        domain=form.domain, anchor=anchor, anchor_batches=form.anchor_batches, mixture_ratio=form.mixture_ratio,
        steps=form.steps, batch_size=form.batch_size, max_length=form.max_length, seed=form.seed, dba=dba,
        eval_every=form.eval_every, eval_items=form.eval_items, eval_scorer=form.eval_scorer,
        output_dir=str(output_dir), device=choice.device,
    )


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
# Teaching mode: direct vs DBA on quick settings, narrated


def _teach_choice(ws: Workspace) -> ModelChoice:
    """The Model tab's model, quantisation and device with the preset's LoRA rank (full fine-tuning stays full)."""
    p = ws.settings.preset
    return ModelChoice(**{**ws.model.as_dict(), "lora_rank": p.lora_rank if ws.model.lora_rank > 0 else 0})


def teach_intro(ws: Workspace, domain: str) -> str:
    return teaching.INTRO.format(model=_teach_choice(ws).describe(), domain=domain, steps=ws.settings.preset.steps)


def teach_job(ws: Workspace, domain: str):
    """One click: estimate ĝ_G, fine-tune direct, fine-tune DBA with the same data, seed and budget; narrate."""
    p = ws.settings.preset
    choice = _teach_choice(ws)

    def cfg_for(method: str, folder: Path, anchor_path: str | None) -> FinetuneConfig:
        dba = DBAConfig(anneal=AnnealConfig(lr=p.lr)) if p.lr is not None else DBAConfig()
        return FinetuneConfig(
            method=method, model=choice.name, quantization=choice.quantization, lora=choice.lora(), domain=domain,
            anchor=anchor_path, anchor_batches=p.anchor_batches, steps=p.steps, batch_size=p.batch_size,
            max_length=p.max_length, eval_every=eval_every_for(p), eval_items=p.eval_items,
            eval_scorer=p.eval_scorer, dba=dba, output_dir=str(folder / method), device=choice.device)

    def work(job: Job) -> None:
        folder = ws.new_run_dir(f"teach-{domain}")
        t0 = time.time()
        job.note(teach_intro(ws, domain))
        # 1. the global gradient (reused when the session already has one for this model)
        if ws.anchor_fits():
            g = GlobalGradient.load(ws.anchor_path)
            anchor_path, anchor_seconds, reused = ws.anchor_path, 0.0, True
            job.note(teaching.ANCHOR_REUSED)
        else:
            job.note(teaching.ANCHOR)
            try:
                form = AnchorForm(batches=p.anchor_batches, batch_size=p.batch_size, max_length=p.max_length)
                g, path = estimate_anchor(job, choice, form, folder / "anchor.safetensors")
            except JobCancelled:
                return
            anchor_path, anchor_seconds, reused = str(path), float(g.meta.get("seconds") or 0.0), False
            with ws.lock:
                ws.anchor_path, ws.anchor_model = anchor_path, choice.as_dict()
        job.touch(result={"anchor": anchor_path, "teach_dir": str(folder), "anchor_seconds": anchor_seconds})
        # 2. direct, 3. DBA — same data order, seed and steps
        results = {}
        for method, text in (("direct", teaching.DIRECT), ("dba", teaching.DBA)):
            if job.cancel.is_set():
                return
            job.note(text)
            cfg = cfg_for(method, folder, anchor_path if method == "dba" else None)
            trace = job.add_run(method, method, cfg.steps, cfg.output_dir)
            trace.config = cfg.to_dict()
            with ws.lock:
                ws.runs.append(cfg.output_dir)
            res = finetune(cfg, cancel=job.cancel, callback=lambda rec, tr=trace: job.record(tr, rec),
                           progress=False, anchor=g if method == "dba" else None)
            results[method] = res
            if res.status != "completed":
                return
        summary = teaching.summarise(job.runs, anchor_seconds=anchor_seconds, total_seconds=time.time() - t0,
                                     anchor_reused=reused)
        job.note(summary["text"])
        job.touch(result={**job.result, "runs": {m: str(r.run_dir) for m, r in results.items()},
                          "summary": summary["numbers"], "seconds": round(time.time() - t0, 1)})
    return work


# --------------------------------------------------------------------------------------------------------------------
# Compare


@dataclass
class CompareForm:
    """The Compare tab's settings (dba.compare's defaults unless changed)."""

    domain: str = "finance"
    methods: tuple[str, ...] = ()
    """Entries of dba.compare.METHODS (empty = all)."""
    ratios: tuple[float, ...] = ()
    """Mixture sweep (empty = dba.compare.DEFAULT_RATIOS)."""
    steps: int = 24
    batch_size: int = 8
    lr: float | None = None
    max_length: int = 128
    eval_every: int = 0
    eval_items: int | None = None
    eval_scorer: str = "mean"
    anchor_batches: int = 8


def compare_config(ws: Workspace, form: CompareForm, output_dir: Path):
    from dba.compare import DEFAULT_RATIOS, METHODS, CompareConfig, validate

    choice = ws.model
    choice.check()
    dba = DBAConfig(anneal=AnnealConfig(lr=form.lr)) if form.lr else DBAConfig()
    cfg = CompareConfig(
        model=choice.name, quantization=choice.quantization, lora=choice.lora(), domains=[form.domain],
        methods=list(form.methods or METHODS), ratios=list(form.ratios or DEFAULT_RATIOS), steps=form.steps,
        batch_size=form.batch_size, max_length=form.max_length, dba=dba,
        anchor=ws.anchor_path if ws.anchor_fits() else None, anchor_batches=form.anchor_batches,
        eval_every=form.eval_every, eval_items=form.eval_items, eval_scorer=form.eval_scorer,
        output_dir=str(output_dir), device=choice.device)
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
