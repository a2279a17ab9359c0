"""Fine-tuning runs: ``direct``, ``mixture`` and ``dba`` on the same data order, seed, steps and budget.

One entry point, :func:`finetune`. A run folder holds:

- ``config.json``    — the full :class:`FinetuneConfig` (and the anchor it used: path, hash, provenance);
- ``status.json``    — the state (see below), the last step, tokens, cumulative times, and who runs it
  (``pid``, ``host``, ``heartbeat``: the time of the last write) so that a killed run can be told from a live one;
- ``metrics.jsonl``  — one ``{"type": "step", ...}`` line per optimiser step (loss, ‖g_D‖, ‖ĝ‖, ρ, γ, λ, lr,
  ‖w‖ ...) and ``{"type": "eval", ...}`` lines with S_G, S_D, S and the held-out answer NLL per token (``nll_g``,
  ``nll_d``; :func:`load_heldout_pairs`), each with its 95 % interval, at each evaluation (step 0 is the base model);
- ``adapter/`` (PEFT ``save_pretrained``) or ``model/`` (full fine-tuning) — the result;
- ``checkpoint/``    — trainable weights + optimiser + RNG state, for ``resume``: saved every ``checkpoint_minutes``
  (and every ``checkpoint_every`` steps), on cancel, Ctrl-C and SIGTERM, and at the end of training until the result
  is saved; removed when the run completes.

States (``status.json``'s ``status``): ``running``; ``completed``; ``cancelled`` (the cancel event / callback);
``interrupted`` (Ctrl-C or SIGTERM; a ``running`` folder whose process is gone also reads as ``interrupted``);
``failed`` (an error, e.g. a full disk); ``diverged`` (stopped by the collapse guard).

Every file is written atomically (temp + rename); a new checkpoint replaces the old one only once complete.
Cancelling stops before the next step, writes a checkpoint and marks the folder ``cancelled``; ``resume=True``
continues the same schedule bit for bit, from the folder named by ``cfg.output_dir`` (see :func:`resume_config`).
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .config import FinetuneConfig, Method  # noqa: F401  (moved to dba.config; re-exported)
from .data import Corpus, MCItem, batch_plan, collate, load_corpus, load_mc, resolve_corpus
from .errors import DBAError, DiskFullError, DivergedError, TrainingError
from .global_gradient import GlobalGradient, estimate_global_gradient, file_hash
from .io import atomic_dir, atomic_write_json, atomic_write_text, is_disk_full, overwrite_text, read_jsonl, recover_dir
from .models import LoadedModel, load_model
from .optim import DBAOptimizer
from .runs import (STALE_OTHER_HOST_SECONDS, _ACTIVE, _proc_start, effective_state,  # noqa: F401  (moved)
                   owner_alive, read_run)
from .export import make_shareable, refresh_card  # shareable adapters and model cards

STATES = ("running", "completed", "cancelled", "interrupted", "failed", "diverged")
"""The values of ``status.json``'s ``status``."""

class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run; the folder is marked ``interrupted`` and resumable. Raised by :func:`finetune`
    (so a script stops as on any Ctrl-C); the message says what was saved and how to continue."""


@dataclass
class RunResult:
    """What :func:`finetune` returns."""

    run_dir: Path
    status: str
    steps_done: int
    metrics: list[dict]
    scores: dict | None
    loaded: LoadedModel | None = None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _device_seconds(wall: float, device: torch.device) -> float:
    """Seconds an accelerator (or the CPU, as one device) was held by the run."""
    return wall * (torch.cuda.device_count() if device.type == "cuda" else 1)




# --------------------------------------------------------------------------------------------------------------------
# Signals: Ctrl-C / SIGTERM stop at the next step boundary with a checkpoint; a second one stops at once


class _StopSignals:
    """While a run is in its training loop, the first SIGINT/SIGTERM asks it to stop after the current step (it then
    saves a checkpoint and marks the folder ``interrupted``); a second one, or one outside the loop, raises
    KeyboardInterrupt at once. Installed only in the main thread (Python delivers signals there) and only where the
    signal is not ignored; the previous handlers come back afterwards."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.requested: str | None = None
        self.in_loop = False
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in ("SIGINT", "SIGTERM"):
                sig = getattr(signal, name, None)
                if sig is None:
                    continue
                old = signal.getsignal(sig)
                if old is signal.SIG_IGN or old is None:
                    continue
                try:
                    signal.signal(sig, self._handle)
                except (ValueError, OSError):
                    continue
                self._old[sig] = old
        return self

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.in_loop and self.requested is None:
            self.requested = name
            print(f"\n{name}: stopping after this step and saving a checkpoint in {self.run_dir} "
                  "(Ctrl-C again stops at once, keeping the previous checkpoint)", file=sys.stderr, flush=True)
            return
        raise KeyboardInterrupt(name)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (ValueError, OSError):
                pass
        return False


# --------------------------------------------------------------------------------------------------------------------
# The collapse guard


class CollapseGuard:
    """Tells a collapsed run from a slow one, from its step records and weight norm.

    Diverged when any of these holds (each is a config field of :class:`FinetuneConfig`):

    - the loss is exactly the same for ``window`` steps in a row (different batches cannot give the same float
      unless the model's output no longer depends on its input);
    - the gradient ‖g_D‖ is exactly zero for ``window`` steps in a row;
    - the mean loss of the latest ``window`` steps exceeds ``loss_rise`` × the mean of the first ``window``;
    - the trainable weights hold NaN/inf, or their global L2 norm exceeds ``weight_growth`` × its start value.

    Steps skipped by the optimiser (non-finite gradients) are left out; the optimiser itself stops the run after
    ``DBAConfig.max_nonfinite_in_a_row`` of them, which the run also reports as diverged.
    """

    def __init__(self, window: int = 10, loss_rise: float = 3.0, weight_growth: float = 100.0,
                 weight_norm0: float | None = None, enabled: bool = True):
        self.window, self.loss_rise, self.weight_growth = window, loss_rise, weight_growth
        self.weight_norm0, self.enabled = weight_norm0, enabled
        self.first: list[float] = []
        self.recent: deque[float] = deque(maxlen=window)
        self.seen = 0
        self.prev_loss: float | None = None
        self.same_loss = 0
        self.zero_grad = 0

    def observe(self, rec: dict) -> str | None:
        """Feed one step record; returns why the run collapsed, or None."""
        if rec.get("skipped"):
            return None
        loss, g = rec.get("loss"), rec.get("grad_norm")
        why = None
        if loss is not None:
            loss = float(loss)
            self.same_loss = self.same_loss + 1 if self.prev_loss is not None and loss == self.prev_loss else 1
            self.prev_loss = loss
            self.seen += 1
            if len(self.first) < self.window:
                self.first.append(loss)
            self.recent.append(loss)
            if self.same_loss >= self.window:
                why = f"the loss stayed exactly {loss:.6g} for {self.same_loss} steps in a row"
            elif self.loss_rise and self.seen >= 2 * self.window:
                m0, m = sum(self.first) / len(self.first), sum(self.recent) / len(self.recent)
                if m0 > 0 and math.isfinite(m) and m > self.loss_rise * m0:
                    why = (f"the mean loss of the last {self.window} steps ({m:.4g}) is {m / m0:.1f}× that of the "
                           f"first {self.window} ({m0:.4g})")
        if g is not None:
            self.zero_grad = self.zero_grad + 1 if float(g) == 0.0 else 0
            if self.zero_grad >= self.window and why is None:
                why = f"the gradient was exactly zero for {self.zero_grad} steps in a row"
        return why if self.enabled else None

    def check_weights(self, norm: float) -> str | None:
        """The trainable weights' global L2 norm now; returns why the run collapsed, or None."""
        if not self.enabled:
            return None
        if not math.isfinite(norm):
            return "the trainable weights hold NaN/inf"
        n0 = self.weight_norm0
        if self.weight_growth and n0 and norm > self.weight_growth * n0:
            return f"the trainable weights' norm grew {norm / n0:.3g}× (from {n0:.4g} to {norm:.4g})"
        return None


def weight_norm(params) -> float:
    """Global L2 norm of ``params`` in fp32 (one host sync per device)."""
    by_dev: dict = {}
    for p in params:
        by_dev.setdefault(p.device, []).append(torch.linalg.vector_norm(p.detach(), dtype=torch.float32))
    total = sum(float(torch.stack(ns).square().sum()) for ns in by_dev.values())
    return math.sqrt(total) if math.isfinite(total) else float("nan")


# --------------------------------------------------------------------------------------------------------------------
# A run and its files


class _Run:
    """Internals of one run; :func:`finetune` is the public face."""

    def __init__(self, cfg: FinetuneConfig, *, resume: bool, progress: bool):
        self.cfg, self.progress = cfg, progress
        self.dir = Path(cfg.output_dir)
        self.resume = resume
        self.status: dict = {}
        self.metrics: list[dict] = []
        self.phase = "starting"
        self.t_start = time.perf_counter()
        self.t_train: float | None = None   # start of this session's training loop
        self.train_seconds = 0.0            # this session's, once the loop ended
        self.prior = {"wall_seconds": 0.0, "train_seconds": 0.0, "device_seconds": 0.0}  # earlier sessions'
        self.device: torch.device | None = None
        self.checkpoint_step: int | None = None

    # ---- files --------------------------------------------------------------------------------------------------
    def clock(self) -> dict:
        """Times so far, summed over every session of this run (a resumed run adds to its earlier sessions)."""
        wall = time.perf_counter() - self.t_start
        train = self.train_seconds or (time.perf_counter() - self.t_train if self.t_train is not None else 0.0)
        dev = _device_seconds(wall, self.device) if self.device is not None else wall
        return {"wall_seconds": round(self.prior["wall_seconds"] + wall, 3),
                "train_seconds": round(self.prior["train_seconds"] + train, 3),
                "device_seconds": round(self.prior["device_seconds"] + dev, 3)}

    def write_status(self, **kw) -> None:
        self.status.update(kw)
        self.status["heartbeat"] = round(time.time(), 3)
        atomic_write_json(self.dir / "status.json", self.status)

    def write_status_anyway(self, **kw) -> None:
        """For the error path: never raises; on a full disk rewrites status.json in place (it keeps its blocks)."""
        self.status.update(kw)
        self.status["heartbeat"] = round(time.time(), 3)
        try:
            atomic_write_json(self.dir / "status.json", self.status)
        except OSError:
            try:
                overwrite_text(self.dir / "status.json", json.dumps(self.status, default=str))
            except OSError:
                pass

    def append_metric(self, rec: dict) -> None:
        line = json.dumps(rec) + "\n"
        with open(self.dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            size = f.tell()
            try:
                f.write(line)
                f.flush()
            except OSError:  # a full disk: leave no torn line behind
                try:
                    f.truncate(size)
                except OSError:
                    pass
                raise
        self.metrics.append(rec)


def _recorded(cfg: FinetuneConfig) -> dict:
    """The config as ``config.json`` records it: every default decided (:meth:`FinetuneConfig.resolved`)."""
    return (cfg.resolved() if hasattr(cfg, "resolved") else cfg).to_dict()


def resume_config(run_dir: str | Path) -> FinetuneConfig:
    """The config to resume the run in ``run_dir``: the one saved in its ``config.json``, with ``output_dir`` set to
    ``run_dir`` itself (a copied or moved folder resumes where it is, not where it was made)."""
    run_dir = Path(run_dir).expanduser()
    f = run_dir / "config.json"
    if not run_dir.exists():
        raise DBAError(f"Run folder not found: {run_dir}.")
    if not f.exists():
        raise DBAError(f"{run_dir} has no config.json: not a run folder.")
    try:
        saved = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DBAError(f"{f} is damaged ({e}); the run cannot be resumed.") from None
    saved.pop("anchor_info", None)
    cfg = FinetuneConfig.from_dict(saved)
    cfg.output_dir = str(run_dir)
    return cfg


def load_eval_sets(cfg: FinetuneConfig) -> tuple[list[MCItem], list[MCItem]]:
    """The general and domain MC sets: the files named in the config, else the bundled ones (when they exist)."""
    def one(explicit: str | None, corpus: str) -> list[MCItem]:
        if explicit:
            return load_mc(explicit)
        try:
            return load_mc(resolve_corpus(corpus, "eval"))
        except DBAError:  # a user corpus without a bundled eval set: no score for it
            return []
    return one(cfg.general_eval, cfg.general), one(cfg.domain_eval, cfg.domain)


def load_heldout_pairs(cfg: FinetuneConfig) -> tuple[list, list]:
    """The general and domain held-out question/answer pairs (:class:`dba.scores.QAPair`) for the answer NLL per
    token: the files named in the config (``general_heldout`` / ``domain_heldout``), else the bundled
    ``heldout_pairs.jsonl`` when the corpus is a bundled name (none for a user corpus); "none" = none."""
    from .data import BUNDLED_NAMES
    from .scores import heldout_pairs_path, load_qa_pairs

    def one(explicit: str | None, corpus: str) -> list:
        if explicit is not None:
            return [] if explicit.strip().lower() in ("", "none") else load_qa_pairs(Path(explicit).expanduser())
        key = corpus.strip().lower().replace("-", "_")
        if key not in BUNDLED_NAMES or Path(corpus).expanduser().exists():
            return []  # a user corpus: no held-out pairs unless named
        try:
            return load_qa_pairs(heldout_pairs_path(corpus))
        except DBAError:  # an older checkout without the bundled pairs: no NLL
            return []
    return one(cfg.general_heldout, cfg.general), one(cfg.domain_heldout, cfg.domain)


def evaluate_model(model, tokenizer, general: list[MCItem], domain: list[MCItem], cfg: FinetuneConfig,
                   pairs: tuple[list, list] | None = None) -> dict:
    """S_G, S_D, S of the model as it is now, and the held-out answer NLL per token (``nll_g``, ``nll_d``), with
    their 95 % intervals (a dict for metrics.jsonl). ``pairs``: (general, domain) held-out pairs; None = those of
    ``cfg`` (:func:`load_heldout_pairs`)."""
    from .scores import evaluate

    gen_pairs, dom_pairs = load_heldout_pairs(cfg) if pairs is None else pairs
    sc = evaluate(model, tokenizer, general, domain, scorer=cfg.eval_scorer, max_items=cfg.eval_items,
                  general_nll=gen_pairs or None, domain_nll=dom_pairs or None)
    return sc.to_record()  # s_g, s_d, s, nll_*, "ci" (95 % intervals), "n" and the per-item "detail"


def prepare_anchor(cfg: FinetuneConfig, lm: LoadedModel, general: Corpus | None, run_dir: Path,
                   progress: bool = True, callback=None) -> tuple[GlobalGradient, Path]:
    """The anchor of a ``dba`` run: the file named in the config, or one estimated now into the run folder."""
    if cfg.anchor:
        path = Path(cfg.anchor)
        return GlobalGradient.load(path, lm.model), path
    from .anchor import estimate_from_corpus  # the one corpus -> batches -> anchor pipeline (its seed rule)

    g = estimate_from_corpus(lm, cfg.anchor_config(), corpus=general, progress=progress, callback=callback)
    path = g.save(run_dir / "anchor.safetensors")
    return g, path


def _check_run_fields(cfg: FinetuneConfig) -> None:
    if cfg.steps < 1:
        raise DBAError("steps must be at least 1.")
    if cfg.method not in ("dba", "direct", "mixture"):
        raise DBAError(f"Unknown method {cfg.method!r}; use dba, direct or mixture.")
    if not 0.0 <= cfg.mixture_ratio <= 1.0:
        raise DBAError("mixture_ratio must be in [0, 1].")


def _prepare_resume(cfg: FinetuneConfig, out: Path) -> dict:
    """Check that ``out`` can be resumed with ``cfg``; returns its old status. Refuses completed, diverged and live
    runs; a ``running`` folder whose process is gone is taken as interrupted."""
    if not out.exists():
        raise DBAError(f"Nothing to resume: run folder not found: {out}.")
    if not (out / "config.json").exists():
        raise DBAError(f"Nothing to resume in {out}: no config.json (not a run folder).")
    saved = resume_config(out)
    mine, theirs = _recorded(cfg), _recorded(saved)
    mine.pop("output_dir"), theirs.pop("output_dir")
    if theirs != mine:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise DBAError(f"The config differs from the one saved in {out}/config.json ({', '.join(diff)}); resume "
                       "needs the same config (use dba.train.resume_config).")
    try:
        old = json.loads((out / "status.json").read_text(encoding="utf-8")) if (out / "status.json").exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = {}  # torn by a crash: the checkpoint decides where to continue
    st = old.get("status")
    if st == "completed":
        raise DBAError(f"{out} is a completed run ({old.get('step', cfg.steps)} of {cfg.steps} steps); there is "
                       "nothing to resume. Start a new run in another folder.")
    if st == "diverged":
        raise DBAError(f"{out} diverged ({old.get('error', 'collapse guard')}); resuming would repeat the same "
                       "steps. Start a new run with a lower learning rate in another folder.")
    if st == "running" and owner_alive(old, out):
        if old.get("host") != socket.gethostname():
            age = time.time() - float(old.get("heartbeat") or 0)
            raise DBAError(f"{out} is running on host {old.get('host')} (pid {old.get('pid')}, last heartbeat "
                           f"{age:.0f} s ago); stop it there, or, if it is gone, resume once the heartbeat is "
                           f"{STALE_OTHER_HOST_SECONDS // 60} minutes old.")
        raise DBAError(f"{out} is still running (pid {old.get('pid')} on {old.get('host')}); cancel or stop that "
                       "run first.")
    for name in ("checkpoint", "adapter", "model"):
        recover_dir(out / name)  # a replacement cut by kill -9 between its two renames
    for tmp in out.glob(".*.tmp"):  # atomic_write_text temps of a killed process
        try:
            tmp.unlink()
        except OSError:
            pass
    if st == "running":
        old["resumed_from"] = "running (its process is gone: taken as interrupted)"
    return old


def finetune(
    cfg: FinetuneConfig,
    *,
    resume: bool = False,
    cancel: threading.Event | Callable[[], bool] | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
    anchor: GlobalGradient | None = None,
    keep_model: bool = False,
) -> RunResult:
    """Run one fine-tune (see the module docstring for the folder it writes).

    ``callback(record)`` receives every metrics record (steps and evaluations) as it is written, plus
    ``{"type": "phase", ...}`` notes, for live UIs. ``anchor`` passes an already-loaded global gradient (the compare
    job reuses one for every run). ``keep_model`` returns the trained model in the result.

    ``resume=True`` continues the run in ``cfg.output_dir`` (build ``cfg`` with :func:`resume_config`) from its last
    checkpoint, or from step 0 when it has none; completed and diverged runs are refused.

    Returns a result with status ``completed`` or ``cancelled``. Raises :class:`RunInterrupted` after Ctrl-C/SIGTERM
    (folder ``interrupted``, checkpoint saved), :class:`~dba.errors.DivergedError` when the collapse guard stops the
    run (folder ``diverged``), :class:`~dba.errors.DiskFullError` when the disk fills up (folder ``failed``, last
    good checkpoint kept), and other :class:`~dba.errors.DBAError` for bad input.
    """
    _check_run_fields(cfg)
    run = _Run(cfg, resume=resume, progress=progress)
    out = run.dir
    if resume:
        old = _prepare_resume(cfg, out)
    elif (out / "status.json").exists():
        raise DBAError(f"{out} already holds a run; choose another output folder or resume it.")
    else:
        old = {}
    out.mkdir(parents=True, exist_ok=True)
    key = str(out.resolve())
    if key in _ACTIVE:
        raise DBAError(f"{out} is already running in this process.")

    def note(**kw):
        run.phase = kw.get("message", run.phase)
        if callback is not None:
            callback({"type": "phase", **kw})

    for k in run.prior:
        run.prior[k] = float(old.get(k) or 0.0)
    run.status = {"status": "running", "method": cfg.method, "step": old.get("step", 0), "steps": cfg.steps,
                  "tokens": old.get("tokens", 0),
                  "pid": os.getpid(), "host": socket.gethostname(), "pid_start": _proc_start(os.getpid()),
                  "run_dir": key, "started": round(time.time(), 3), "sessions": int(old.get("sessions", 0)) + 1,
                  "anchor_seconds": old.get("anchor_seconds", 0.0)}
    run.metrics = read_jsonl(out / "metrics.jsonl") if resume else []
    _ACTIVE.add(key)
    signals = _StopSignals(out)
    try:
        with signals:
            if not resume:
                atomic_write_json(out / "config.json", {**_recorded(cfg), "anchor_info": None})
            run.write_status(**run.clock())
            return _execute(cfg, run, resume=resume, cancel=cancel, callback=callback, progress=progress,
                            anchor=anchor, keep_model=keep_model, note=note, signals=signals)
    except RunInterrupted:
        raise
    except BaseException as e:
        if run.status.get("status") == "running":
            ck = (f"its last checkpoint (step {run.checkpoint_step}) is kept" if run.checkpoint_step is not None
                  else "it has no checkpoint yet, so resuming starts again from step 0")
            if isinstance(e, KeyboardInterrupt):
                msg = (f"stopped by {str(e) or 'Ctrl-C'} while {run.phase} in {out}; {ck}. Continue with: "
                       f"dba train --resume {out}")
                run.write_status_anyway(status="interrupted", error=msg, **run.clock())
                raise RunInterrupted(msg) from None
            if is_disk_full(e):
                where = getattr(e, "filename", None)
                msg = (f"No space left on the device{f' ({where})' if where else ''} while {run.phase}; the run "
                       f"stopped at step {run.status.get('step', 0)} and {ck}. Free some space and continue with: "
                       f"dba train --resume {out}")
                run.write_status_anyway(status="failed", error=msg, disk_full=True, **run.clock())
                raise DiskFullError(msg) from e
            run.write_status_anyway(status="failed", error=f"{type(e).__name__}: {e}", **run.clock())
        raise
    finally:
        _ACTIVE.discard(key)


@dataclass
class _Session:
    """What one training session works with: the model, the data in its batch order, the optimiser and the guard.
    Built by :func:`_load_model_and_data` and :func:`_make_optimizer`; ``start``/``tokens`` advance as it trains."""

    cfg: FinetuneConfig
    run: "_Run"
    lm: LoadedModel
    domain: Corpus
    general: Corpus | None
    gen_eval: list
    dom_eval: list
    pairs: tuple
    scored: bool  # anything to evaluate
    dom_plan: list
    gen_plan: list | None
    callback: Callable[[dict], None] | None
    opt: DBAOptimizer | None = None
    params: list | None = None
    guard: CollapseGuard | None = None
    start: int = 0  # the first step this session runs (the checkpoint's step when resuming)
    tokens: int = 0
    final_ckpt: bool = False  # the checkpoint is the weights-only one written after the last step

    @property
    def model(self):
        return self.lm.model

    @property
    def tok(self):
        return self.lm.tokenizer

    @property
    def ckpt(self) -> Path:
        return self.run.dir / "checkpoint"

    def checkpoint(self, step: int, final: bool = False) -> None:
        self.run.phase = f"saving the checkpoint of step {step}"
        _save_checkpoint(self.ckpt, self.model, self.opt, step, tokens=self.tokens, final=final)
        self.run.checkpoint_step = step

    def evaluate(self, step: int) -> dict:
        """Score the model now, record the eval line and pass it to the callback."""
        rec = {"type": "eval", "step": step,
               **evaluate_model(self.model, self.tok, self.gen_eval, self.dom_eval, self.cfg, self.pairs)}
        self.run.append_metric(rec)
        if self.callback:
            self.callback(rec)
        return rec


def _execute(cfg: FinetuneConfig, run: "_Run", *, resume, cancel, callback, progress, anchor, keep_model, note,
             signals: _StopSignals) -> RunResult:
    # A resumed DBA run reuses the anchor it estimated before (unless one is given), so it needs no general data.
    reuse_anchor = _reuses_own_anchor(cfg, run, resume, anchor)
    s = _load_model_and_data(cfg, run, reuse_anchor=reuse_anchor, anchor=anchor, callback=callback, note=note)
    anchor, anchor_path, estimated = _prepare_run_anchor(s, anchor, reuse_anchor=reuse_anchor, resume=resume,
                                                         progress=progress, note=note)
    _make_optimizer(s, anchor)
    if resume:  # continue bit for bit: the checkpoint's weights, optimiser, step, tokens, metrics and guard state
        _restore(s, note)
    _record_config(s, anchor, anchor_path, estimated)
    if s.start == 0 and cfg.evaluate_at_end and s.scored:
        note(phase="eval", message="scoring the base model")
        s.evaluate(0)

    status, why, step = _train_loop(s, cancel=cancel, progress=progress, signals=signals)
    run.train_seconds = time.perf_counter() - run.t_train

    scores = None
    if status in ("cancelled", "interrupted"):
        _finish_stopped(s, status, step, signals, note)  # raises RunInterrupted on a signal
    elif status == "diverged":
        _finish_diverged(s, step, why, note)  # always raises DivergedError
    else:
        scores = _finish_completed(s, status, step, note)
    return RunResult(run_dir=run.dir, status=status, steps_done=step, metrics=run.metrics, scores=scores,
                     loaded=s.lm if keep_model else None)


def _reuses_own_anchor(cfg: FinetuneConfig, run: "_Run", resume, anchor) -> bool:
    """Resuming a DBA run that estimated its own anchor: load it from the run folder, wherever that was copied."""
    return bool(resume and cfg.method == "dba" and anchor is None and not cfg.anchor
                and (run.dir / "anchor.safetensors").exists())


def _load_model_and_data(cfg: FinetuneConfig, run: "_Run", *, reuse_anchor: bool, anchor, callback,
                         note) -> _Session:
    note(phase="load", message=f"loading model {cfg.model}")
    _seed_everything(cfg.seed)  # before LoRA init: same seed, same adapter start
    lm = load_model(cfg.model, quantization=cfg.quantization, lora=cfg.lora, device=cfg.device, dtype=cfg.dtype,
                    trust_remote_code=cfg.trust_remote_code)
    run.device = lm.device
    tok = lm.tokenizer
    note(phase="data", message="reading the data")
    domain = load_corpus(resolve_corpus(cfg.domain, "train"), tok, cfg.max_length)
    general = None
    if cfg.method == "mixture" or (cfg.method == "dba" and anchor is None and not cfg.anchor and not reuse_anchor):
        general = load_corpus(resolve_corpus(cfg.general, "train"), tok, cfg.max_length)
    gen_eval, dom_eval = load_eval_sets(cfg)
    pairs = load_heldout_pairs(cfg)
    scored = bool(gen_eval or dom_eval or pairs[0] or pairs[1])

    # The same domain data order for every method; mixture swaps a share of each batch for general examples.
    n_general = round(cfg.mixture_ratio * cfg.batch_size) if cfg.method == "mixture" else 0
    micro_steps = cfg.steps * cfg.grad_accum
    dom_plan = batch_plan(len(domain), cfg.batch_size - n_general, micro_steps, cfg.seed) \
        if cfg.batch_size - n_general > 0 else [[] for _ in range(micro_steps)]
    gen_plan = batch_plan(len(general), n_general, micro_steps, cfg.seed + 1) if n_general else None
    return _Session(cfg=cfg, run=run, lm=lm, domain=domain, general=general, gen_eval=gen_eval, dom_eval=dom_eval,
                    pairs=pairs, scored=scored, dom_plan=dom_plan, gen_plan=gen_plan, callback=callback)


def _prepare_run_anchor(s: _Session, anchor, *, reuse_anchor: bool, resume, progress, note):
    """The DBA anchor: the given one, the run's own (resuming), or a fresh estimate. Returns (anchor, its path,
    whether this session estimated it)."""
    cfg = s.cfg
    anchor_path = None
    estimated = False
    if cfg.method == "dba":
        if anchor is not None:
            anchor.check_compatible(s.model, weights=not resume)
            anchor_path = anchor.meta.get("path")
        elif reuse_anchor:  # resuming: the anchor this run estimated (in this folder, wherever it was copied)
            note(phase="anchor", message="loading the run's anchor")
            own_anchor = s.run.dir / "anchor.safetensors"
            anchor, anchor_path = GlobalGradient.load(own_anchor, s.model), own_anchor
        else:
            note(phase="anchor", message="estimating the global gradient")
            anchor, anchor_path = prepare_anchor(cfg, s.lm, s.general, s.run.dir, progress)
            estimated = not cfg.anchor
    return anchor, anchor_path, estimated


def _make_optimizer(s: _Session, anchor) -> None:
    cfg = s.cfg
    s.opt = DBAOptimizer(s.model, anchor if cfg.method == "dba" else None, cfg.optimizer_config())
    s.params = [p for g in s.opt.param_groups for p in g["params"]]
    s.guard = CollapseGuard(cfg.guard_window, cfg.guard_loss_rise, cfg.guard_weight_growth,
                            weight_norm(s.params), enabled=cfg.collapse_guard)  # the start norm: before any checkpoint


def _restore(s: _Session, note) -> None:
    """Resume: load the checkpoint (if any) and cut the metrics back to it."""
    run = s.run
    if (s.ckpt / "state.json").exists():
        note(phase="resume", message="loading the checkpoint")
        meta = _load_checkpoint(s.ckpt, s.model, s.opt)
        s.start, s.final_ckpt = int(meta["step"]), bool(meta.get("final"))
        run.checkpoint_step = s.start
        s.tokens = meta.get("tokens")
        if s.tokens is None:  # checkpoints from before tokens were saved: the last step record before it
            s.tokens = max((m.get("tokens", 0) for m in run.metrics if m.get("type") == "step"
                            and m.get("step", 0) < s.start), default=0)
    start = s.start
    # drop metrics of steps after the checkpoint: they will be run again (all of them when starting over)
    run.metrics = [m for m in run.metrics if start and (m.get("step", 0) < start or
                   (m.get("type") == "eval" and m.get("step", 0) <= start))]
    atomic_write_text(run.dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in run.metrics))
    for m in run.metrics:
        if m.get("type") == "step":
            s.guard.observe(m)  # the guard continues exactly where the interrupted session left it


def _record_config(s: _Session, anchor, anchor_path, estimated: bool) -> None:
    """config.json with the anchor's provenance, and the status before the first step."""
    run = s.run
    info = None
    if anchor is not None:
        info = {"path": str(anchor_path) if anchor_path else None,
                "sha256_16": file_hash(anchor_path) if anchor_path and Path(anchor_path).exists() else None,
                **{k: anchor.meta.get(k) for k in ("base_model", "weight_fingerprint", "space", "corpus",
                                                   "corpus_hash", "batches", "tokens", "energy", "rank")}}
    atomic_write_json(run.dir / "config.json", {**_recorded(s.cfg), "anchor_info": info})
    if estimated:
        run.status["anchor_seconds"] = anchor.meta.get("seconds") or 0.0
    run.write_status(step=s.start, tokens=s.tokens, checkpoint_step=run.checkpoint_step, **run.clock())


def _train_loop(s: _Session, *, cancel, progress, signals: _StopSignals):
    """Train from ``s.start`` to ``cfg.steps``. Returns (status, why it diverged or None, the step it stopped at)."""
    from tqdm.auto import tqdm

    cfg, run = s.cfg, s.run
    run.t_train = time.perf_counter()
    last_ckpt = time.monotonic()
    s.model.train()
    bar = tqdm(total=cfg.steps, initial=s.start, desc=f"{cfg.method}", unit="step", disable=not progress)
    status, why = "completed", None
    step = s.start
    signals.in_loop = True
    try:
        for step in range(s.start, cfg.steps):
            # Stop requests are honoured between steps, so the checkpoint written on the way out is of whole steps.
            if _cancelled(cancel):
                status = "cancelled"
                break
            if signals.requested:
                status = "interrupted"
                break
            run.phase = f"training step {step}"
            rec, loss_sum, opt_error = _train_step(s, step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.3f}", rho=f"{rec.get('rho', 0):+.2f}", lam=f"{rec.get('lam', 1):.2f}")
            done = step + 1
            if opt_error is not None:  # too many non-finite gradients in a row
                status, why = "diverged", opt_error
            else:
                why = s.guard.check_weights(rec["weight_norm"]) or s.guard.observe(rec)
                if why:
                    status = "diverged"
            if status == "diverged":
                step = done
                break
            if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps and s.scored:
                run.phase = f"scoring at step {done}"
                s.evaluate(done)
                s.model.train()
            if done < cfg.steps and ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or
                                     (cfg.checkpoint_minutes and
                                      time.monotonic() - last_ckpt >= 60 * cfg.checkpoint_minutes)):
                s.checkpoint(done)
                last_ckpt = time.monotonic()
            run.write_status(step=done, tokens=s.tokens, checkpoint_step=run.checkpoint_step, **run.clock())
        else:
            step = cfg.steps
    finally:
        signals.in_loop = False
        bar.close()
    return status, why, step


def _train_step(s: _Session, step: int):
    """One optimiser step over ``grad_accum`` micro-batches. Returns (the step record, the summed loss, the
    optimiser's divergence message or None)."""
    cfg, opt = s.cfg, s.opt
    loss_sum = 0.0
    for k in range(cfg.grad_accum):
        i = step * cfg.grad_accum + k
        examples = [s.domain.examples[j] for j in s.dom_plan[i]]
        if s.gen_plan is not None:
            examples += [s.general.examples[j] for j in s.gen_plan[i]]
        batch = {key: v.to(s.lm.device) for key, v in collate(examples, s.tok.pad_token_id).items()}
        loss = s.model(**batch).loss / cfg.grad_accum
        loss.backward()
        loss_sum += float(loss.detach())
        s.tokens += int(batch["attention_mask"].sum())
    clip = {}
    if cfg.max_grad_norm is not None:
        # grad_norm in the record is ‖g_D‖ as DBA sees it (after clipping); keep the raw norm next to it
        clip["grad_norm_raw"] = float(torch.nn.utils.clip_grad_norm_(s.params, cfg.max_grad_norm))
        opt.note_clip(clip["grad_norm_raw"], cfg.max_grad_norm)  # for the clip-consistent boost
    opt.set_loss(loss_sum)
    opt_error = None
    try:
        opt.step()
    except TrainingError as e:  # too many non-finite gradients in a row
        opt_error = str(e).rstrip(".")
    opt.zero_grad(set_to_none=True)
    w_norm = weight_norm(s.params)
    rec = {"type": "step", **opt.last_record, **clip, "weight_norm": w_norm, "tokens": s.tokens,
           "elapsed": s.run.clock()["wall_seconds"]}
    s.run.append_metric(rec)
    if s.callback:
        s.callback(rec)
    return rec, loss_sum, opt_error


def _finish_stopped(s: _Session, status: str, step: int, signals: _StopSignals, note) -> None:
    """Cancelled or interrupted: keep a checkpoint of the last whole step so the run can be resumed."""
    run, out = s.run, s.run.dir
    if run.checkpoint_step != step:
        s.checkpoint(step)
    ck = f"checkpoint of step {step} saved"
    run.write_status(status=status, step=step, tokens=s.tokens, checkpoint_step=step, device=str(s.lm.device),
                     **run.clock())
    if status == "interrupted":
        msg = (f"stopped by {signals.requested} before step {step} of {s.cfg.steps}; {ck}. Continue with: "
               f"dba train --resume {out}")
        run.write_status(error=msg)
        note(phase=status, message=msg)
        raise RunInterrupted(msg)
    note(phase="cancelled", message=f"cancelled before step {step}; {ck}, resumable")


def _finish_diverged(s: _Session, step: int, why, note) -> None:
    """Diverged: save nothing from the broken weights; say what to change."""
    run, out = s.run, s.run.dir
    lr = s.cfg.dba.anneal.lr
    ck = (f"its last good checkpoint (step {run.checkpoint_step}) is kept" if run.checkpoint_step is not None
          else "no checkpoint was saved")
    msg = (f"Run diverged at step {step}: {why}. Nothing was saved as a result ({ck}); lower the learning rate "
           f"(η_0 = {lr:g}) or check the data; collapse_guard=False turns the guard off. Folder: {out}")
    run.write_status(status="diverged", step=step, tokens=s.tokens, error=msg, device=str(s.lm.device),
                     checkpoint_step=run.checkpoint_step, **run.clock())
    note(phase="diverged", message=msg)
    raise DivergedError(msg)


def _finish_completed(s: _Session, status: str, step: int, note) -> dict | None:
    """Completed: save the result, score it, and drop the checkpoint once the result is on disk. Returns the scores."""
    cfg, run, out = s.cfg, s.run, s.run.dir
    # Keep the finished training safe until the result is on disk: a weights-only checkpoint of the last step
    # (the previous checkpoint stays until this one is complete; this one stays until the result is saved).
    if cfg.save_weights:
        if not s.final_ckpt:
            s.checkpoint(step, final=True)
        run.phase = "saving the result"
        note(phase="save", message="saving the result")
        _save_result(out, s.lm)
    scores = None
    if cfg.evaluate_at_end and s.scored:
        note(phase="eval", message="scoring the fine-tuned model")
        erec = s.evaluate(cfg.steps)
        scores = {k: erec[k] for k in ("s_g", "s_d", "s")}
        refresh_card(out)  # the model card, now with the final scores
    run.write_status(status=status, step=step, tokens=s.tokens, device=str(s.lm.device), scores=scores,
                     checkpoint_step=None, **run.clock())
    shutil.rmtree(s.ckpt, ignore_errors=True)  # the result is saved; the checkpoint is no longer needed
    note(phase=status, message=f"run {status}")
    return scores


def _cancelled(cancel) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model, ckpt: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(ckpt / "trainable.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


def _save_checkpoint(ckpt: Path, model, opt: DBAOptimizer, step: int, *, tokens: int = 0,
                     final: bool = False) -> None:
    """Trainable weights and optimiser moments as safetensors (no pickle), counters and RNG as JSON; atomically.

    ``final``: the end of training: weights and RNG only (no more steps need the optimiser), kept until the result
    is saved. The new checkpoint is built in a temp folder and replaces the previous one only once complete."""
    from safetensors.torch import save_file

    def build(tmp: Path):
        save_file({n: t.contiguous() for n, t in _trainable_state(model).items()},
                  str(tmp / "trainable.safetensors"))
        tensors, scalars, groups = {}, {}, None
        if not final:
            sd = opt.state_dict()
            groups = sd["param_groups"]
            for idx, st in sd["state"].items():
                for key, val in st.items():
                    if torch.is_tensor(val):
                        tensors[f"{idx}.{key}"] = val.detach().cpu().contiguous()
                    else:
                        scalars[f"{idx}.{key}"] = val
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on a GPU draws from these
            for i, st in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = st
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        atomic_write_json(tmp / "state.json", {"step": step, "tokens": tokens, "final": final, "param_groups": groups,
                                               "scalars": scalars, "py_rng": random.getstate()})

    atomic_dir(ckpt, build)


def _load_checkpoint(ckpt: Path, model, opt: DBAOptimizer) -> dict:
    """Restore weights, optimiser and RNG from :func:`_save_checkpoint`; returns its ``state.json`` (``step`` is the
    step to continue from)."""
    from safetensors.torch import load_file

    _load_trainable(model, ckpt)
    meta = json.loads((ckpt / "state.json").read_text())
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng.torch"))
    cuda = [tensors.pop(k) for k in sorted((k for k in list(tensors) if k.startswith("rng.cuda.")),
                                           key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if not meta.get("final"):
        state: dict[int, dict] = {}
        for key, val in list(tensors.items()) + list(meta["scalars"].items()):
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = val
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    v = meta["py_rng"]
    random.setstate((v[0], tuple(v[1]), v[2]))
    return meta


def _save_result(out: Path, lm: LoadedModel) -> None:
    """The adapter (PEFT format) or the whole model (full fine-tuning), atomically, with a model card and (adapter)
    a base name that resolves on another machine (dba.export.make_shareable)."""
    if lm.lora is not None:
        def build_adapter(tmp):
            lm.model.save_pretrained(tmp)
            make_shareable(tmp, out, "adapter")
        atomic_dir(out / "adapter", build_adapter)
    else:
        def build(tmp):
            lm.model.save_pretrained(tmp)
            lm.tokenizer.save_pretrained(tmp)
            make_shareable(tmp, out, "model")
        atomic_dir(out / "model", build)

