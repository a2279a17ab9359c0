"""DBA inside the Hugging Face ``Trainer`` (and TRL's trainers, which are Trainers): a guard and DBA's logs.

:class:`DBAOptimizer` already drops into a Trainer (``optimizers=(opt, opt.scheduler())``, docs/algorithm.md). Two
things a drop-in cannot do by itself, :class:`DBACallback` does:

1. **Refuse a step count that is not T.** γ_t and lr_t are functions of t/T with T = ``DBAConfig.total_steps``. When
   the Trainer runs another number of optimiser steps — typically ``num_train_epochs`` with a ``max_steps`` left at -1
   — the steps after T run at the annealed floor (lr 0.0 with the default cosine), or the run stops before the
   schedule ends, without a word. The callback raises :class:`TrainerMismatchError` at train start, before any step,
   naming both numbers. It also refuses a scheduler other than DBA's no-op one (the Trainer's own would be logged as
   the learning rate, and the Trainer's logged lr must be DBA's lr_t·λ_t) and an optimiser whose step counter is not
   the Trainer's (reused or restored from another run).
2. **Log DBA's step record.** At every Trainer log, the last step's ρ_t, γ_t, λ_t, ‖ĝ‖, ‖g_D‖ and lr_t join the
   logged values as ``dba/rho``, ``dba/gamma``, ``dba/lambda``, ``dba/anchor_norm``, ``dba/grad_norm`` and
   ``dba/lr``, so ``trainer.state.log_history`` and every ``report_to`` integration (TensorBoard, trackio, W&B,
   MLflow ...) receive them. (The Trainer's own ``learning_rate`` is already lr_t·λ_t; its ``grad_norm`` is the norm
   before clipping.)

Reporting integrations are callbacks that the Trainer registers before the user's, so :func:`attach` puts the DBA
callback FIRST (its values must be in the logs before the integrations write them)::

    opt = DBAOptimizer(model, anchor, DBAConfig(total_steps=T))
    trainer = SFTTrainer(model=model, args=SFTConfig(max_steps=T, report_to="tensorboard", ...),
                         train_dataset=ds, optimizers=(opt, opt.scheduler()))
    dba.hf.attach(trainer)
    trainer.train()

or use :class:`DBATrainer` (a ``Trainer`` that attaches itself). ``examples/trl_sft_dba.py`` is a complete TRL run.
"""
from __future__ import annotations

from transformers import Trainer, TrainerCallback

from .errors import DBAError
from .optim import AppliedLR, DBAOptimizer

LOGGED = {"rho": "dba/rho", "gamma": "dba/gamma", "lam": "dba/lambda", "anchor_norm": "dba/anchor_norm",
          "grad_norm": "dba/grad_norm", "lr": "dba/lr"}
"""Step-record field -> the name it is logged under."""


class TrainerMismatchError(DBAError):
    """A Trainer set up in a way that would run DBA's schedule wrongly (step count, scheduler, step counter)."""


def dba_optimizer(optimizer) -> DBAOptimizer | None:
    """The :class:`DBAOptimizer` under Accelerate's wrapper (``AcceleratedOptimizer.optimizer``), or None."""
    seen = 0
    while optimizer is not None and not isinstance(optimizer, DBAOptimizer) and seen < 4:
        optimizer = getattr(optimizer, "optimizer", None)
        seen += 1
    return optimizer if isinstance(optimizer, DBAOptimizer) else None


class DBACallback(TrainerCallback):
    """Refuses a Trainer whose optimiser steps ≠ ``DBAConfig.total_steps`` and logs DBA's step record (see the module
    docstring). Register it with :func:`attach` so that ``report_to`` integrations see the values."""

    def __init__(self):
        self.optimizer: DBAOptimizer | None = None

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        opt = dba_optimizer(optimizer)
        if opt is None:
            raise TrainerMismatchError(
                "DBACallback needs the Trainer to use a DBAOptimizer: Trainer(..., optimizers=(opt, opt.scheduler())).")
        T = opt.config.total_steps
        if state.max_steps != T:
            how = (f"max_steps={args.max_steps}" if args.max_steps and args.max_steps > 0 else
                   f"num_train_epochs={args.num_train_epochs} over the training data")
            raise TrainerMismatchError(
                f"The Trainer will run {state.max_steps} optimiser steps ({how}), but DBAConfig.total_steps = {T}. "
                "γ_t and the annealed learning rate are functions of t/T, so "
                + (f"steps {T}..{state.max_steps - 1} would run at the schedule's floor (lr "
                   f"{opt.config.anneal.lr * opt.config.anneal.min_lr_ratio:g}) "
                   if state.max_steps > T else "the run would stop before the schedule ends ")
                + f"without a word. Set TrainingArguments(max_steps={T}) or DBAConfig(total_steps={state.max_steps}).")
        if lr_scheduler is not None and not isinstance(lr_scheduler, AppliedLR):
            raise TrainerMismatchError(
                f"The Trainer uses its own learning-rate scheduler ({type(lr_scheduler).__name__}); DBA sets the "
                "learning rate itself. Pass optimizers=(opt, opt.scheduler()) so that the logged learning_rate is "
                "DBA's lr_t·λ_t.")
        if opt.t != state.global_step:
            raise TrainerMismatchError(
                f"The DBA optimiser has taken {opt.t} steps but the Trainer starts at step {state.global_step}: use a "
                "fresh DBAOptimizer for each run (or resume both from the same checkpoint).")
        self.optimizer = opt
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        rec = self.optimizer.last_record if self.optimizer is not None else None
        if logs is None or rec is None or "loss" not in logs:  # only training logs carry the step record
            return control
        fields = {name: rec[key] for key, name in LOGGED.items() if rec.get(key) is not None}
        if rec.get("skipped"):
            fields["dba/skipped"] = 1.0
        logs.update(fields)
        # Trainer.log appended a copy of `logs` to the history just before this call: complete that copy too
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(fields)
        return control


def attach(trainer: Trainer) -> DBACallback:
    """Register a :class:`DBACallback` on ``trainer`` (any Trainer subclass: TRL's SFTTrainer, DPOTrainer ...),
    FIRST among its callbacks so that the ``report_to`` integrations log DBA's values. Returns the callback."""
    handler = trainer.callback_handler
    for cb in handler.callbacks:
        if isinstance(cb, DBACallback):
            handler.callbacks.remove(cb)
            break
    cb = DBACallback()
    handler.callbacks.insert(0, cb)
    return cb


class DBATrainer(Trainer):
    """A ``Trainer`` with :func:`attach` done: ``DBATrainer(..., optimizers=(opt, opt.scheduler()))``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        attach(self)


def trainer_kwargs(optimizer: DBAOptimizer) -> dict:
    """``optimizers=(opt, opt.scheduler())`` for a Trainer's constructor (then call :func:`attach`)."""
    return {"optimizers": (optimizer, optimizer.scheduler())}
