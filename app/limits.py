"""What a request from the page may ask for: numbers that make sense in any mode, and in public mode the caps of
:class:`app.settings.Limits`, the fixed model list and the per-session disk quota. Every refusal is one
:class:`dba.DBAError` sentence that says what is allowed and which variable the operator changes."""
from __future__ import annotations

import math

from dba.errors import DBAError

from .settings import StudioSettings


def number(value, what: str) -> float:
    """``value`` as a finite float, or one clear message."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DBAError(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(x):
        raise DBAError(f"{what} must be a finite number, got {value!r}.")
    return x


def whole(value, what: str, lo: int = 1) -> int:
    """``value`` as an int ≥ ``lo`` (a float with a fraction is refused, not rounded)."""
    x = number(value, what)
    if x != int(x) or x < lo:
        raise DBAError(f"{what} must be a whole number of at least {lo}, got {value!r}.")
    return int(x)


def _cap(settings: StudioSettings, value: int, cap: int, what: str, var: str) -> None:
    if settings.public and value > cap:
        raise DBAError(f"{what} is limited to {cap} on this server (got {value}; the operator sets {var}).")


def check_model(settings: StudioSettings, name: str) -> str:
    """The model name, when this server allows it (public mode: only the configured list, no typed paths)."""
    name = (name or "default").strip()
    if settings.public and name not in settings.allowed_models:
        raise DBAError(f"This server offers the models {', '.join(settings.allowed_models)} only (the operator adds "
                       "more with DBA_STUDIO_MODELS).")
    return name


def check_rank(settings: StudioSettings, rank) -> int:
    rank = whole(rank, "The LoRA rank", lo=0)
    if settings.public:
        if rank == 0 and not settings.limits.allow_full:
            raise DBAError("Full fine-tuning (LoRA rank 0) is off on this server: choose a LoRA rank of 1 or more "
                           "(the operator allows it with DBA_STUDIO_ALLOW_FULL=1).")
        _cap(settings, rank, settings.limits.max_rank, "The LoRA rank", "DBA_STUDIO_MAX_RANK")
    return rank


def check_lr(settings: StudioSettings, lr) -> float:
    lr = number(lr, "The learning rate η₀")
    if lr <= 0:
        raise DBAError(f"The learning rate η₀ must be above 0, got {lr:g}.")
    lim = settings.limits
    if settings.public and not lim.lr_min <= lr <= lim.lr_max:
        raise DBAError(f"The learning rate η₀ must lie between {lim.lr_min:g} and {lim.lr_max:g} on this server "
                       f"(got {lr:g}; the operator sets DBA_STUDIO_LR_MIN / DBA_STUDIO_LR_MAX).")
    return lr


def check_steps(settings: StudioSettings, steps) -> int:
    steps = whole(steps, "Steps")
    _cap(settings, steps, settings.limits.max_steps, "Steps", "DBA_STUDIO_MAX_STEPS")
    return steps


def check_batch(settings: StudioSettings, batch_size) -> int:
    batch_size = whole(batch_size, "The batch size")
    _cap(settings, batch_size, settings.limits.max_batch, "The batch size", "DBA_STUDIO_MAX_BATCH")
    return batch_size


def check_eval_items(settings: StudioSettings, items) -> int | None:
    """Quiz questions per eval set; 0 or empty = all (refused in public mode)."""
    n = 0 if items in (None, "") else whole(items, "Quiz questions", lo=0)
    if settings.public:
        if n == 0:
            raise DBAError(f"Choose a number of quiz questions (at most {settings.limits.max_eval_items} on this "
                           "server; 0 = all is not offered here).")
        _cap(settings, n, settings.limits.max_eval_items, "Quiz questions", "DBA_STUDIO_MAX_EVAL_ITEMS")
    return n or None


def check_anchor_batches(settings: StudioSettings, batches) -> int:
    batches = whole(batches, "General batches")
    _cap(settings, batches, settings.limits.max_anchor_batches, "General batches", "DBA_STUDIO_MAX_ANCHOR_BATCHES")
    return batches


def check_runs(settings: StudioSettings, runs: int) -> None:
    _cap(settings, runs, settings.limits.max_runs, "The number of runs in one comparison", "DBA_STUDIO_MAX_RUNS")


def check_new_tokens(settings: StudioSettings, n) -> int:
    n = whole(n, "Max new tokens")
    if n > settings.limits.max_new_tokens:
        raise DBAError(f"Max new tokens is limited to {settings.limits.max_new_tokens}.")
    return n


def check_run(settings: StudioSettings, cfg) -> None:
    """A whole run config (a preset's, e.g. the lesson's) against the limits: the same checks as the forms'."""
    check_model(settings, cfg.model)
    check_rank(settings, cfg.lora.rank if cfg.lora is not None else 0)
    check_steps(settings, cfg.steps)
    check_batch(settings, cfg.batch_size)
    check_lr(settings, cfg.dba.anneal.lr)
    check_eval_items(settings, cfg.eval_items)
    check_anchor_batches(settings, cfg.anchor_batches)


def check_preset(settings: StudioSettings) -> None:
    """At start (public mode): the preset the lesson runs must fit the limits, or the operator hears it at once."""
    if not settings.public:
        return
    try:
        check_run(settings, settings.preset.run_config(model=settings.model))
    except DBAError as e:
        raise SystemExit(f"DBA_STUDIO_PRESET={settings.preset_name} does not fit public mode's limits: {e} Choose "
                         "another preset or raise the limit.") from None


def max_queue(settings: StudioSettings) -> int | None:
    """How many jobs may wait for the machine (None = no limit, outside public mode)."""
    return settings.limits.max_queue if settings.public else None


def check_quota(settings: StudioSettings, ws, adding: int = 0) -> None:
    """Refuse new work or uploads once a session's folders hold its quota (public mode)."""
    if not settings.public:
        return
    quota = settings.limits.quota_mb * 2**20
    used = ws.disk_bytes()
    if used + adding > quota:
        raise DBAError(f"This session's files use {used / 2**20:.0f} MB of its {settings.limits.quota_mb} MB "
                       f"(DBA_STUDIO_QUOTA_MB). They are removed {settings.limits.session_hours:g} hours after the "
                       "session's last activity; a new session (another browser) starts empty.")
