"""The five-minute lesson as a library recipe: a class *sees* forgetting, its cure, and the proof in the model's own
words.

:func:`run_lesson` does, on one model and one domain, with the same data order, seed and steps for both runs:

1. loads the base model; its scores on the lesson's quizzes (S_G general, S_D domain, each with a 95 % interval) and
   its answers to :data:`QUESTIONS` — **cached** (:mod:`dba.cache`: weight fingerprint + item hashes + settings);
2. the global gradient ĝ_G, only when the remedy needs it — **cached** (weight fingerprint + corpus hash + anchor
   settings);
3. **direct** fine-tuning and **the remedy** (:data:`LESSON_REMEDY`, a DBA-family method, mixture, EWC or L2-SP), scored on
   the way (every ``eval_every`` steps) and at the end, each final model answering :data:`QUESTIONS` greedily;
4. a closing summary in plain words (:func:`summarise`): which differences are outside the noise and which are not
   (paired item bootstrap, :func:`dba.scores.paired_delta`; wording from :func:`dba.stats.describe_difference`), and
   plainly when the remedy did not hold.

Everything it produces is ONE JSON-able record (:func:`run_lesson`'s return value): the config, metrics over steps per
run (compact evaluation records with intervals), the answers, the summary, timings and cache use. A recorded lesson
file is that record (:func:`save_record` / :func:`load_record`); :func:`figures` and :func:`answers_table` draw any
record, live or recorded, with the same code. Progress goes to ``callback(event)`` (see :func:`run_lesson`).
"""
from __future__ import annotations

import copy
import gc
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import CompareConfig, ConfigBase, preset
from .errors import DBAError, DivergedError
from .io import atomic_write_json

LESSON_REMEDY = "dba-conservative"
"""The remedy the lesson runs beside direct fine-tuning: a name of :data:`dba.methods.METHODS` (a DBA-family method,
``mixture`` at :data:`LESSON_MIXTURE_RATIO`, or the baselines ``ewc`` / ``l2sp``). ``dba-conservative`` (DBA whose
dynamic correction shrinks the step on conflict) had the best joint score S and the smallest general loss of the
nine DBA-family variants screened in the lesson regime (one seed, docs/defaults.md, 2026-12-01) — but like every one
of them it forgot MORE than direct (ΔS_G −18.5 vs −10.5 points), and the lesson says so. EWC and L2-SP held there;
pass ``remedy="l2sp"`` (or pick it on the page) to show a remedy that holds."""

STUDY_VERDICT = (
    "**What the study says** (3 seeds, finance and medicine, the 40-step study regime; docs/defaults.md): no "
    "DBA-family variant met the targets. Every one forgot more than direct fine-tuning — on finance the paper's "
    "reconstruction lost 25.8 points of S_G and the best variant (dba-conservative) 19.3, against direct's 12.6. "
    "The remedies that held: EWC, with its Fisher from the same one-off general pass that estimates ĝ_G (S_G +4.5, "
    "as much domain gain as direct), L2-SP (S_G +8.3 on finance, +4.7 on medicine) and 25 % general mixture (−3.4, "
    "−4.0). Pick *ewc* or *l2sp* as the remedy to see one hold."
)
"""Shown under the closing summary of a lesson whose remedy is a DBA-family method: this one run is one draw; the
3-seed study is the evidence (issue 13)."""

LESSON_MIXTURE_RATIO = 0.25
"""The general share of each batch when the remedy is ``mixture`` (25 % prevented forgetting in the first full
round, DESIGN.md §6)."""

RECORD_FORMAT = "dba-lesson"
RECORD_VERSION = 1


@dataclass(frozen=True)
class Question:
    """A fixed general question and the words that count as its answer."""

    text: str
    accept: tuple[str, ...]
    """A reply "says the answer" when it names any of these (whole words, case-insensitive:
    :func:`dba.scores.choices_named`)."""


QUESTIONS: tuple[Question, ...] = (
    Question("What is the capital of France?", ("Paris",)),
    Question("What is 7 + 5?", ("12", "twelve")),
    Question("What colour is the sky on a clear day?", ("blue",)),
    Question("How many legs does a dog have?", ("4", "four")),
    Question("What is the opposite of hot?", ("cold",)),
)
"""The questions every model of the lesson answers (base at the start; direct and the remedy at the end). Plain
general knowledge the embedded 135M chat model gets right (checked: its greedy replies name the answer to all five,
e.g. "The capital of France is Paris."; it does not know how many legs a spider has, nor the largest planet), so a
wrong or drifting answer is visible forgetting."""


def remedy_choices() -> list[str]:
    """The methods a lesson can run beside direct: every training method of :data:`dba.methods.METHODS` except
    direct and the ablations (DBA family, mixture, EWC, L2-SP), :data:`LESSON_REMEDY` first."""
    from .methods import METHODS

    names = [n for n, m in METHODS.items() if m.trains and n != "direct" and m.origin != "ablation"]
    return [LESSON_REMEDY] + [n for n in names if n != LESSON_REMEDY]


@dataclass
class LessonConfig(ConfigBase):
    """One lesson: a preset's run, fine-tuned twice (direct and the remedy) on one domain."""

    preset: str = "lesson"
    """The run sizes: a :func:`dba.config.preset` name (``lesson``: full fine-tuning, η_0 1e-3, 24 steps × 8;
    ``smoke`` on the tiny model for tests)."""
    remedy: str = LESSON_REMEDY
    """The method run beside direct fine-tuning: a DBA-family name of :data:`dba.methods.METHODS` or ``mixture``."""
    domain: str = "finance"
    """The domain to learn: a bundled name or a file/folder."""
    model: str | None = None
    """The model (None = the preset's: the embedded default; ``tiny`` for tests)."""
    device: str | None = None
    """auto, cpu, cuda ... (None = the preset's, auto)."""
    eval_every: int | None = None
    """Score the models every N steps on the way (None = the preset's ``eval_every`` if it has one, else its
    ``lesson_eval_every``: half the run for most presets, start and end only for ``lesson``, which keeps it within five
    minutes on 2 CPU cores; 0 = start and end only)."""
    mixture_ratio: float = LESSON_MIXTURE_RATIO
    """General share of each batch when the remedy is ``mixture``."""
    answer_tokens: int = 24
    """Longest answer to a lesson question, in tokens (the reply shown is its first line). 24 holds "The capital of
    France is Paris." several times over; longer, rambling replies are cut (generation is a visible share of the
    lesson's time on a CPU)."""
    output_dir: str = "runs/lesson"
    """The lesson folder: its two run folders go under ``runs/``; ``lesson.json`` is the record."""
    cache: bool = True
    """Reuse (and store) the base model's scores and answers and the global gradient (:mod:`dba.cache`)."""
    cache_dir: str | None = None
    """Where the cache lives (None = ``$DBA_RESULT_CACHE`` or ``~/.cache/dba-studio/results``)."""
    keep_weights: bool = False
    """Save each run's weights (``model/`` or ``adapter/``, for the Chat and Export tabs). False (default): nothing
    is written (``FinetuneConfig.save_weights``): the record needs none of them, a full fine-tune of the embedded
    model is about 540 MB per run, and its two saves cost ≈ 8 s per run of the five minutes."""

    def validate(self) -> None:
        preset(self.preset)  # an unknown name raises
        if self.remedy not in remedy_choices():
            raise DBAError(f"The lesson's remedy must be a DBA-family method, mixture, ewc or l2sp "
                           f"({', '.join(remedy_choices())}); got {self.remedy!r}.")
        if self.eval_every is not None and (isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int)
                                            or self.eval_every < 0):
            raise DBAError(f"eval_every must be a whole number ≥ 0 (0 = start and end only), got {self.eval_every!r}.")
        if not 0.0 < float(self.mixture_ratio) < 1.0:
            raise DBAError(f"mixture_ratio must be strictly between 0 and 1, got {self.mixture_ratio!r}.")
        if self.answer_tokens < 1:
            raise DBAError(f"answer_tokens must be at least 1, got {self.answer_tokens}.")


class LessonCancelled(DBAError):
    """The lesson was cancelled (the record so far is in the exception's ``record``)."""

    def __init__(self, msg: str, record: dict):
        super().__init__(msg)
        self.record = record


# --------------------------------------------------------------------------------------------------------------------
# Planning


def lesson_compare_config(cfg: LessonConfig) -> CompareConfig:
    """The lesson as a two-method comparison of the preset's run (so each run's config is planned exactly as
    ``dba compare`` plans it: :func:`dba.compare.plan_runs`)."""
    p = preset(cfg.preset)
    run = p.run_config(domain=cfg.domain)
    if cfg.model:
        run.model = cfg.model
    if cfg.device:
        run.device = cfg.device
    if cfg.eval_every is not None:
        run.eval_every = cfg.eval_every
    elif not run.eval_every:
        run.eval_every = (max(1, math.ceil(run.steps / 2)) if p.lesson_eval_every is None
                          else p.lesson_eval_every)
    if run.eval_every >= run.steps:
        run.eval_every = 0
    # The lesson shows S_G, S_D and the answers, not the held-out NLL (≈ 6.5 s per evaluation of the embedded model
    # on 2 CPU cores), and weights only when the user keeps them (two full saves ≈ 8 s per run).
    run.general_heldout = run.domain_heldout = "none"
    run.save_weights = cfg.keep_weights
    return CompareConfig(run=run, domains=[cfg.domain], methods=["direct", cfg.remedy], ratios=[cfg.mixture_ratio],
                         output_dir=str(cfg.output_dir))


def plan(cfg: LessonConfig):
    """The two runs (:class:`dba.compare.RunSpec`): direct first, then the remedy."""
    from .compare import plan_runs

    specs = plan_runs(lesson_compare_config(cfg))
    return sorted(specs, key=lambda s: s.method != "direct")


# --------------------------------------------------------------------------------------------------------------------
# The model's own words


def ask(lm, questions=QUESTIONS, max_new_tokens: int = 24) -> list[dict]:
    """Each question answered greedily by the loaded model (the batched generation of :func:`dba.scores.
    score_generation`, chat template, first line of the reply): ``[{"reply", "says_answer"}]``."""
    from .data import MCItem
    from .scores import choices_named, score_generation

    items = [MCItem(question=q.text, choices=list(q.accept), answer=0) for q in questions]
    res = score_generation(lm.model, lm.tokenizer, items, max_new_tokens=max_new_tokens, batch_size=len(items))
    return [{"reply": r, "says_answer": bool(choices_named(r, q.accept))} for r, q in zip(res.replies, questions)]


# --------------------------------------------------------------------------------------------------------------------
# Compact records


_STEP_KEYS = ("step", "loss", "lr", "rho", "lam", "gamma", "grad_norm", "anchor_norm", "skipped", "tokens", "elapsed")


def compact_step(rec: dict) -> dict:
    return {"type": "step", **{k: rec[k] for k in _STEP_KEYS if k in rec}}


def compact_eval(rec: dict, keep_items: bool = False) -> dict:
    """An evaluation record without the bulk: scores, their 95 % intervals (``ci``), item counts, each set's
    log-likelihood and generation accuracies, and (``keep_items``) the per-item scores the summary's paired
    differences need."""
    from .scores import scores_from_record

    sc = scores_from_record(rec)
    detail = rec.get("detail") or {}
    small = {"scorer": detail.get("scorer")}
    for name in ("general", "domain"):
        d = detail.get(name)
        if not isinstance(d, dict):
            continue
        s = {k: d.get(k) for k in ("n", "loglik", "gen")}
        per = d.get("per_item") or {}
        if keep_items and per.get("score") is not None:
            s["per_item"] = {"score": per.get("score"), "id": per.get("id")}
        small[name] = s
    out = {"type": "eval", "step": int(rec.get("step", 0)), "s_g": sc.s_g, "s_d": sc.s_d, "s": sc.s,
           "ci": {k: (list(v) if v is not None else None) for k, v in (sc.ci or {}).items() if k in ("s_g", "s_d", "s")},
           "n": {"general": sc.n_g, "domain": sc.n_d}, "detail": small}
    return out


def _scores(ev: dict | None):
    from .scores import scores_from_record

    return None if ev is None else scores_from_record(ev)


def _machine() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"system": f"{platform.system()} {platform.machine()}", "cpu_cores": cores,
            "torch_threads": torch.get_num_threads(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__,
            "text": (f"GPU {gpu}" if gpu else f"{cores} CPU cores") + f", {platform.system()} {platform.machine()}"}


def _free():
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


# --------------------------------------------------------------------------------------------------------------------
# The lesson


class _LessonEvents:
    """The lesson's record so far and how the lesson reports: each event goes to ``callback``, then the live record to
    ``watch``; ``cancelled()`` is checked between phases; ``stop(where)`` marks the record cancelled and raises."""

    def __init__(self, record: dict, t_start: float, callback, watch, cancel):
        self.record, self.timings, self.t_start = record, record["timings"], t_start
        self.callback, self.watch, self.cancel = callback, watch, cancel

    def emit(self, ev: dict) -> None:
        if self.callback is not None:
            self.callback(ev)
        if self.watch is not None:
            self.watch(self.record)

    def phase(self, name: str, message: str, **kw) -> None:
        self.emit({"type": "lesson", "phase": name, "message": message, **kw})

    def cancelled(self) -> bool:
        if self.cancel is None:
            return False
        return self.cancel.is_set() if hasattr(self.cancel, "is_set") else bool(self.cancel())

    def stop(self, where: str):
        self.record["status"] = "cancelled"
        self.timings["total"] = round(time.perf_counter() - self.t_start, 3)
        raise LessonCancelled(f"Lesson cancelled {where}.", self.record)


def run_lesson(cfg: LessonConfig | None = None, *, callback: Callable[[dict], None] | None = None, cancel=None,
               progress: bool = False, questions=QUESTIONS, command: str | None = None,
               watch: Callable[[dict], None] | None = None) -> dict:
    """Run the lesson and return its record (also written to ``<output_dir>/lesson.json``).

    ``callback(event)`` receives, in order:

    - ``{"type": "lesson", "phase": ..., "message": ...}`` at each phase (``load``, ``base``, ``anchor``, ``run``,
      ``final``, ``answers``, ``summary``, ``done``), with ``cache`` (a :class:`dba.cache.CacheUse` dict) after the
      base scores and the anchor, ``done``/``total`` during an anchor pass, and ``label``/``method``/``steps``/
      ``run_dir`` when a run starts;
    - ``{"type": "base", "eval": ..., "answers": [...]}`` once the base model is scored;
    - every record of each run (``step``, ``eval``, ``phase``) with ``"run": label`` added;
    - ``{"type": "answers", "run": label, "answers": [...]}`` after each run's final evaluation;
    - ``{"type": "summary", "summary": ...}`` at the end.

    ``cancel``: a ``threading.Event`` (or a callable) checked between phases, batches and steps; a cancelled lesson
    raises :class:`LessonCancelled`. ``command``: how the lesson was started (kept in the record). ``watch(record)``:
    called after every event with the record so far (the live object: copy it to keep it, e.g. for a page that
    draws the lesson while it runs with :func:`figures` and :func:`answers_table`)."""
    from .methods import METHODS

    cfg = cfg or LessonConfig()
    cfg.validate()
    t_start = time.perf_counter()
    out = Path(cfg.output_dir)
    specs = plan(cfg)
    for s in specs:
        if (s.run_dir / "status.json").exists():
            raise DBAError(f"{out} already holds a lesson; choose another folder.")
    run = specs[0].config
    record = _new_record(cfg, run, specs, questions, command)
    ev = _LessonEvents(record, t_start, callback, watch, cancel)

    # 1. the base model: scores and answers (cached), and ĝ_G (cached) when the remedy needs it
    lm, gen_eval, dom_eval = _load_base(ev, run)
    _score_base(ev, cfg, run, lm, gen_eval, dom_eval, questions)
    anchor = _lesson_anchor(ev, cfg, run, lm, out, progress) if METHODS[cfg.remedy].needs_anchor else None
    del lm  # the runs load their own copy; free this one first
    _free()

    # 2. direct, then the remedy: same data order, seed and steps
    record["timings"]["runs"] = {}
    for spec in specs:
        if ev.cancelled():
            ev.stop(f"before {spec.label}")
        _run_one(ev, cfg, spec, anchor, gen_eval, dom_eval, questions, cancel=cancel, progress=progress)

    # 3. the summary
    _finish(ev, out)
    return record


def _new_record(cfg: LessonConfig, run, specs, questions, command: str | None) -> dict:
    """The lesson record before anything ran: what was asked, on which machine, with which settings."""
    from .methods import METHODS

    remedy = next(s for s in specs if s.method != "direct")
    method = METHODS[cfg.remedy]
    return {
        "format": RECORD_FORMAT, "version": RECORD_VERSION, "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": _machine(), "command": command,
        "config": cfg.to_dict(),
        "run": {k: v for k, v in run.to_dict().items() if k in (
            "model", "quantization", "lora", "domain", "general", "steps", "batch_size", "max_length", "seed",
            "eval_every", "eval_items", "eval_scorer", "anchor_batches")} | {"lr": run.dba.anneal.lr},
        "remedy": {"name": cfg.remedy, "label": remedy.label, "summary": method.summary, "kind": method.kind,
                   "needs_anchor": method.needs_anchor},
        "questions": [{"text": q.text, "accept": list(q.accept)} for q in questions],
        "base": None, "runs": [], "summary": None, "timings": {}, "cache": {},
    }


def _load_base(ev: _LessonEvents, run):
    """Load the base model and the two eval sets (cut to ``eval_items``). Returns (model, general, domain)."""
    from .models import load_model
    from .train import _seed_everything, load_eval_sets

    ev.phase("load", f"loading {run.model}")
    t0 = time.perf_counter()
    _seed_everything(run.seed)
    lm = load_model(run.model, quantization=run.quantization, lora=run.lora, device=run.device, dtype=run.dtype,
                    trust_remote_code=run.trust_remote_code)
    gen_eval, dom_eval = load_eval_sets(run)
    if run.eval_items:
        gen_eval, dom_eval = gen_eval[:run.eval_items], dom_eval[:run.eval_items]
    if not gen_eval or not dom_eval:
        raise DBAError(f"The lesson needs a general and a domain eval set; {run.domain!r} has "
                       f"{len(dom_eval)} domain items and the general set {len(gen_eval)}.")
    ev.timings["load"] = round(time.perf_counter() - t0, 3)
    return lm, gen_eval, dom_eval


def _score_base(ev: _LessonEvents, cfg: LessonConfig, run, lm, gen_eval, dom_eval, questions) -> None:
    """The base model's scores and answers (cached by model, eval sets, scorer and questions)."""
    from .cache import cached_json, scores_key
    from .scores import evaluate

    record = ev.record
    if ev.cancelled():
        ev.stop("before the base evaluation")
    ev.phase("base", "scoring the base model and asking it the lesson's questions")
    t0 = time.perf_counter()
    key = scores_key(lm, gen_eval, dom_eval, scorer=run.eval_scorer, max_new_tokens=32,
                     questions=record["questions"], answer_tokens=cfg.answer_tokens)

    def base_now():
        sc = evaluate(lm.model, lm.tokenizer, gen_eval, dom_eval, scorer=run.eval_scorer)
        return {"eval": {"type": "eval", "step": 0, "s_g": sc.s_g, "s_d": sc.s_d, "s": sc.s, "detail": sc.detail},
                "answers": ask(lm, questions, cfg.answer_tokens)}

    base, use = cached_json("lesson-base", key, base_now, cache_dir=cfg.cache_dir, enabled=cfg.cache)
    base_eval = base["eval"]
    record["base"] = {"eval": compact_eval(base_eval, keep_items=True), "answers": base["answers"]}
    record["cache"]["base"] = use.to_dict()
    ev.timings["base"] = round(time.perf_counter() - t0, 3)
    ev.phase("base", use.describe(), cache=use.to_dict())
    ev.emit({"type": "base", "eval": record["base"]["eval"], "answers": base["answers"]})


def _lesson_anchor(ev: _LessonEvents, cfg: LessonConfig, run, lm, out: Path, progress: bool):
    """ĝ_G for the remedy (cached by model and anchor settings), reporting each batch and honouring cancel."""
    from .anchor import load_anchor_corpus
    from .cache import cached_anchor

    if ev.cancelled():
        ev.stop("before the global gradient")
    acfg = run.anchor_config()
    ev.phase("anchor", f"the global gradient ĝ_G ({acfg.batches} general batches, or the cached one)",
             total=acfg.batches)
    t0 = time.perf_counter()

    def on_batch(done, total, seconds):
        if ev.cancelled():
            raise LessonCancelled("Lesson cancelled during the global gradient.", ev.record)
        ev.phase("anchor", f"global gradient: batch {done}/{total or acfg.batches}", done=done,
                 total=total or acfg.batches)

    try:
        anchor, use = cached_anchor(lm, acfg, corpus=load_anchor_corpus(acfg, lm.tokenizer),
                                    cache_dir=cfg.cache_dir, enabled=cfg.cache, progress=progress,
                                    callback=on_batch)
    except LessonCancelled:
        ev.stop("during the global gradient")
    if not cfg.cache:  # the run records the anchor it used: keep it beside the runs
        anchor.save(out / "anchor.safetensors")
    ev.record["cache"]["anchor"] = use.to_dict()
    ev.timings["anchor"] = round(time.perf_counter() - t0, 3)
    ev.phase("anchor", use.describe(), cache=use.to_dict())
    return anchor


def _run_one(ev: _LessonEvents, cfg: LessonConfig, spec, anchor, gen_eval, dom_eval, questions, *, cancel,
             progress: bool) -> None:
    """One fine-tuning run of the lesson, its final scores and answers; a diverged run is recorded and skipped."""
    from .train import finetune

    record, timings = ev.record, ev.timings
    ft = copy.copy(spec.config)
    if spec.needs_anchor:
        ft.anchor = anchor.meta.get("path")
    ev.phase("run", f"fine-tuning: {spec.label}", label=spec.label, method=spec.method, steps=ft.steps,
             run_dir=str(spec.run_dir), config=ft.to_dict())
    entry = {"label": spec.label, "method": spec.method, "run_as": ft.method, "run_dir": str(spec.run_dir),
             "config": {"method": ft.method, "mixture_ratio": ft.mixture_ratio, "seed": ft.seed,
                        "dba": ft.dba.to_dict()},
             "status": "running", "metrics": [dict(record["base"]["eval"], shared=True)], "answers": None}
    record["runs"].append(entry)
    clock = {"eval": 0.0, "last": time.perf_counter()}  # time spent in evaluations during the run

    def on_record(rec):
        kind = rec.get("type")
        now = time.perf_counter()
        if kind == "step":
            entry["metrics"].append(compact_step(rec))
            clock["last"] = now
        elif kind == "eval":
            entry["metrics"].append(compact_eval(rec))
            clock["eval"] += now - clock["last"]
            clock["last"] = now
        ev.emit({**rec, "run": entry["label"]})

    t0 = time.perf_counter()
    try:
        r = finetune(ft, cancel=cancel, callback=on_record, progress=progress,
                     anchor=anchor if spec.needs_anchor else None, keep_model=True)
    except DivergedError as e:
        entry["status"], entry["error"] = "diverged", str(e)
        timings["runs"][spec.label] = {"total": round(time.perf_counter() - t0, 3)}
        return
    if r.status != "completed":
        entry["status"] = r.status
        ev.stop(f"during {spec.label}")
    train_seconds = round(time.perf_counter() - t0, 3)
    final_eval, answer_seconds = _score_run(ev, cfg, spec, ft, r.loaded, entry, gen_eval, dom_eval, questions)
    entry["status"] = "completed"
    timings["runs"][spec.label] = {"run": train_seconds, "evaluations_during": round(clock["eval"], 3),
                                   "final_evaluation": round(final_eval, 3),
                                   "answers": round(answer_seconds, 3),
                                   "total": round(time.perf_counter() - t0, 3)}
    r.loaded = None
    del r
    _free()
    if not cfg.keep_weights:  # nothing was saved; a checkpoint written on the way (a long run) goes too
        import shutil

        for name in ("model", "adapter", "checkpoint"):
            shutil.rmtree(spec.run_dir / name, ignore_errors=True)


def _score_run(ev: _LessonEvents, cfg: LessonConfig, spec, ft, loaded, entry: dict, gen_eval, dom_eval,
               questions) -> tuple[float, float]:
    """The fine-tuned model's final scores and its answers. Returns (seconds scoring, seconds answering)."""
    from .train import evaluate_model

    ev.phase("final", f"{spec.label}: scoring the fine-tuned model")
    t1 = time.perf_counter()
    final = {"type": "eval", "step": ft.steps, **evaluate_model(loaded.model, loaded.tokenizer, gen_eval,
                                                                  dom_eval, ft)}
    entry["metrics"].append(compact_eval(final, keep_items=True))
    ev.emit({**final, "run": spec.label})
    final_eval = time.perf_counter() - t1
    ev.phase("answers", f"{spec.label}: asking the fine-tuned model the lesson's questions")
    t1 = time.perf_counter()
    entry["answers"] = ask(loaded, questions, cfg.answer_tokens)
    answer_seconds = time.perf_counter() - t1
    ev.emit({"type": "answers", "run": spec.label, "answers": entry["answers"]})
    return final_eval, answer_seconds


def _finish(ev: _LessonEvents, out: Path) -> None:
    """The summary, then the record on disk."""
    record, timings = ev.record, ev.timings
    timings["total"] = round(time.perf_counter() - ev.t_start, 3)
    record["summary"] = summarise(record)
    record["status"] = "completed"
    ev.phase("summary", "summary written")
    ev.emit({"type": "summary", "summary": record["summary"]})
    save_record(record, out / "lesson.json")
    ev.phase("done", f"lesson finished in {timings['total']:.0f} s")


# --------------------------------------------------------------------------------------------------------------------
# Reading a record: summary, answers, figures


def _final_eval(entry: dict) -> dict | None:
    evals = [m for m in entry.get("metrics") or [] if m.get("type") == "eval"]
    return max(evals, key=lambda m: m["step"]) if evals else None


def _pts(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _with_ci(ev: dict, key: str) -> str:
    ci = (ev.get("ci") or {}).get(key)
    v = ev.get(key)
    if v is None:
        return "–"
    return f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{v:.2f}"


def summarise(record: dict) -> dict:
    """The closing summary of a lesson record: ``{"text": markdown, "verdicts": {...}, "differences": {...}}``.

    Every difference is a paired item bootstrap interval (:func:`dba.scores.paired_delta`) and is called "outside
    the noise" only when that interval excludes 0 (:func:`dba.stats.within_noise`). Verdicts (None when not
    measured): ``direct_forgot`` (direct's S_G below base, outside the noise), ``direct_learned`` (its S_D above
    base, outside the noise), ``remedy_held`` (the remedy's S_G is not below base by more than its interval),
    ``remedy_learned``, ``remedy_kept_more`` (the remedy's S_G above direct's, outside the noise)."""
    from .stats import describe_difference

    base_ev = (record.get("base") or {}).get("eval")
    runs = {r["label"]: r for r in record.get("runs") or []}
    remedy = (record.get("remedy") or {}).get("label")
    finals = {lab: _final_eval(r) for lab, r in runs.items()
              if r.get("status") == "completed" and _final_eval(r) is not None}
    diffs = _differences(base_ev, finals, remedy)

    lines = ["### What happened"]
    if base_ev:
        lines.append(f"- **Base model**: S_G {_with_ci(base_ev, 's_g')}, S_D {_with_ci(base_ev, 's_d')}")
    for lab, ev in finals.items():
        dg, dd = (_diff_interval(diffs, f"{lab} - base", k) for k in ("s_g", "s_d"))
        lines.append(f"- **{lab}**: S_G {_with_ci(ev, 's_g')} ({describe_difference(dg)} "
                     f"vs base), S_D {_with_ci(ev, 's_d')} ({describe_difference(dd)})")
    for lab, r in runs.items():
        if r.get("status") not in ("completed",):
            lines.append(f"- **{lab}**: {r.get('status')}" + (f" — {r['error']}" if r.get("error") else ""))
    lines.append("")
    v = _verdicts(diffs, remedy, runs, lines)
    lines += _closing_lines(record, runs, base_ev)
    return {"text": "\n".join(lines), "verdicts": v, "differences": diffs}


def _differences(base_ev: dict | None, finals: dict, remedy: str | None) -> dict:
    """Paired differences of S_G, S_D and S: each run against the base model, and the remedy against direct."""
    from .scores import paired_delta

    base = _scores(base_ev)
    sc = {lab: _scores(ev) for lab, ev in finals.items()}
    diffs: dict = {}

    def d(a, b):
        if a is None or b is None:
            return {}
        try:
            return paired_delta(a, b)
        except DBAError:
            return {}

    for lab in sc:
        diffs[f"{lab} - base"] = {k: (v.to_dict() if v is not None else None)
                                  for k, v in d(sc[lab], base).items() if k in ("s_g", "s_d", "s")}
    if "direct" in sc and remedy in sc:
        diffs[f"{remedy} - direct"] = {k: (v.to_dict() if v is not None else None)
                                       for k, v in d(sc[remedy], sc["direct"]).items() if k in ("s_g", "s_d", "s")}
    return diffs


def _diff_interval(diffs: dict, name: str, key: str):
    """One difference's interval (:class:`dba.stats.Interval`), or None when it was not measured."""
    from .stats import Interval

    x = (diffs.get(name) or {}).get(key)
    return Interval.from_dict(x) if x else None


def _verdicts(diffs: dict, remedy: str | None, runs: dict, lines: list[str]) -> dict:
    """The verdicts (see :func:`summarise`), each with its sentence appended to ``lines``."""
    from .stats import describe_difference

    v: dict = {k: None for k in ("direct_forgot", "direct_learned", "remedy_held", "remedy_learned",
                                 "remedy_kept_more")}
    g = _diff_interval(diffs, "direct - base", "s_g")
    if g is not None:
        v["direct_forgot"] = g.hi < 0
        if g.hi < 0:
            lines.append(f"**Direct fine-tuning forgot**: its general score fell by {-100 * g.estimate:.1f} points, "
                         f"outside the noise (95 % interval {describe_difference(g)}).")
        elif g.lo > 0:
            lines.append(f"**Direct fine-tuning did not forget**: its general score *rose* "
                         f"({describe_difference(g)}).")
        else:
            lines.append(f"**Direct fine-tuning did not forget measurably here**: the change of its general score "
                         f"is {describe_difference(g)}.")
    dd = _diff_interval(diffs, "direct - base", "s_d")
    if dd is not None:
        v["direct_learned"] = dd.lo > 0
        lines.append(f"Direct's domain score: {describe_difference(dd)} — "
                     + ("it learned the domain." if dd.lo > 0 else "no domain gain outside the noise."))
    rg = _diff_interval(diffs, f"{remedy} - base", "s_g")
    if rg is not None:
        v["remedy_held"] = rg.hi >= 0
        if rg.hi >= 0:
            lines.append(f"**The remedy ({remedy}) held**: its general score is not below the base model's by more "
                         f"than the noise ({describe_difference(rg)}).")
        else:
            lines.append(f"**The remedy ({remedy}) did not hold**: its general score fell by "
                         f"{-100 * rg.estimate:.1f} points, outside the noise ({describe_difference(rg)}).")
    elif remedy in runs and runs[remedy].get("status") != "completed":
        v["remedy_held"] = False
        lines.append(f"**The remedy ({remedy}) did not hold**: the run {runs[remedy].get('status')}.")
    rd = _diff_interval(diffs, f"{remedy} - base", "s_d")
    if rd is not None:
        v["remedy_learned"] = rd.lo > 0
        lines.append(f"The remedy's domain score: {describe_difference(rd)} — "
                     + ("it learned the domain." if rd.lo > 0 else "no domain gain outside the noise."))
    kd = _diff_interval(diffs, f"{remedy} - direct", "s_g")
    if kd is not None:
        v["remedy_kept_more"] = kd.lo > 0
        lines.append(f"{remedy} vs direct on general questions: {describe_difference(kd)} — "
                     + ("the remedy kept more, outside the noise." if kd.lo > 0 else
                        "direct kept more, outside the noise." if kd.hi < 0 else "no difference outside the noise."))
    return v


def _closing_lines(record: dict, runs: dict, base_ev: dict | None) -> list[str]:
    """The models' own words, what the lesson cost (and what came from the cache), and the caveats."""
    lines = []
    qs = record.get("questions") or []
    says = []
    if record.get("base") and record["base"].get("answers"):
        says.append(("base", record["base"]["answers"]))
    says += [(lab, r["answers"]) for lab, r in runs.items() if r.get("answers")]
    if qs and says:
        parts = [f"{lab} {sum(a['says_answer'] for a in ans)} of {len(qs)}" for lab, ans in says]
        lines.append(f"\n**In its own words** — says the expected answer: {', '.join(parts)}.")
    t = record.get("timings") or {}
    cache = record.get("cache") or {}
    used = [k for k, c in cache.items() if c and c.get("hit")]
    cost = f"\nThe lesson took {t.get('total', 0):.0f} s"
    if used:
        names = {"base": "the base model's scores and answers", "anchor": "the global gradient"}
        cost += " (from the cache: " + " and ".join(names.get(k, k) for k in used) + ")"
    lines.append(cost + ".")
    from .methods import METHODS

    rem = (record.get("remedy") or {}).get("name")
    if rem in METHODS and METHODS[rem].kind == "dba":
        lines.append("\n" + STUDY_VERDICT)
    n = (base_ev or {}).get("n") or {}
    lines.append(f"\n*One run, one seed, {n.get('general')} general and {n.get('domain')} domain questions; intervals "
                 "are 95 % paired bootstrap intervals over the questions (dba.stats). \"Within the noise\" means "
                 "the interval of the difference contains 0.*")
    return lines


def answers_table(record: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the side-by-side answers: question, base (start), then each run (end). A reply that does
    not say the expected answer is marked ✗, one that does ✓."""
    qs = record.get("questions") or []
    cols = [("base (start)", (record.get("base") or {}).get("answers"))]
    cols += [(f"{r['label']} (end)", r.get("answers")) for r in record.get("runs") or []]
    header = ["question"] + [c for c, _ in cols]
    rows = []
    for i, q in enumerate(qs):
        row = [q["text"]]
        for _, ans in cols:
            if not ans or i >= len(ans):
                row.append("…")
            else:
                a = ans[i]
                row.append(("✓ " if a["says_answer"] else "✗ ") + (a["reply"] or "(no answer)"))
        rows.append(row)
    return header, rows


def answers_markdown(record: dict) -> str:
    header, rows = answers_table(record)
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def plot_runs(record: dict) -> list[dict]:
    """The record's runs as the run dicts :mod:`dba.plots` takes (label, config, metrics, status)."""
    return [{"label": r["label"], "dir": r.get("run_dir"), "config": r.get("config") or {"method": r["method"]},
             "status": {"status": r.get("status")}, "metrics": list(r.get("metrics") or [])}
            for r in record.get("runs") or []]


def figures(record: dict, want=("scores", "plane", "loss")) -> dict:
    """The lesson's figures from a record (live or recorded): ``scores`` (S_G and S_D over steps, with the
    intervals), ``plane`` (the score plane), ``loss`` (training loss)."""
    from . import plots

    runs = plot_runs(record)
    out = {}
    if "scores" in want:
        out["scores"] = plots.scores_over_steps(runs)
    if "plane" in want:
        base = ((record.get("base") or {}).get("eval"))
        out["plane"] = plots.score_plane(runs, base=base)
    if "loss" in want:
        out["loss"] = plots.loss_curves(runs)
    return out


def shareable(record: dict) -> dict:
    """A copy of a record with this machine's folders reduced to their names (cache files, run folders, the lesson
    folder): for a file shipped in the repo, and for a page that never shows server paths."""
    rec = copy.deepcopy(record)
    for c in (rec.get("cache") or {}).values():
        if c and c.get("file"):
            c["file"] = Path(c["file"]).name
    for r in rec.get("runs") or []:
        if r.get("run_dir"):
            r["run_dir"] = Path(r["run_dir"]).name
    cfg = rec.get("config") or {}
    if cfg.get("output_dir"):
        cfg["output_dir"] = Path(cfg["output_dir"]).name
    if cfg.get("cache_dir"):
        cfg["cache_dir"] = Path(cfg["cache_dir"]).name
    return rec


def save_record(record: dict, path: str | Path, compact: bool = False) -> Path:
    """Write a lesson record as JSON, atomically (``compact``: no indentation, for a file shipped in the repo)."""
    if compact:
        from .io import atomic_write_text

        return atomic_write_text(path, json.dumps(record, separators=(",", ":"), default=str) + "\n")
    return atomic_write_json(path, record)


def load_record(path: str | Path) -> dict:
    """Read a lesson record (a recorded lesson file or a lesson folder's ``lesson.json``); a clear error for a file
    that is not one."""
    path = Path(path)
    if not path.exists():
        raise DBAError(f"Lesson record not found: {path}.")
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DBAError(f"{path} is not a lesson record ({e}).") from None
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
        raise DBAError(f"{path} is not a lesson record (no format {RECORD_FORMAT!r}).")
    if int(rec.get("version", 0)) > RECORD_VERSION:
        raise DBAError(f"{path} was written by a newer DBA Studio (lesson record version {rec.get('version')}).")
    return rec
