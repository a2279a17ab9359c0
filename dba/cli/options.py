"""Command-line options whose defaults and help text come from the config dataclasses (:mod:`dba.config`).

Every option defaults to "not given" (None); a command starts from a preset's config (``--preset NAME`` / ``--quick``,
else the dataclass defaults) and applies only the options the user gave. So a number lives once, in :mod:`dba.config`,
and ``--help`` shows it from there.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
import typing
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Callable

from ..config import PRESET_NAMES, FinetuneConfig, LoraSettings, field_help, preset
from ..errors import DBAError

NONE = "none"
"""Typed for an option whose field may be None (e.g. ``--k0-max none`` = no cap)."""


class _Unset:
    """The value of an option given as ``none`` (distinct from "not given", which argparse leaves as None)."""

    def __repr__(self):
        return "none"


EXPLICIT_NONE = _Unset()


def float_or_none(text: str):
    if text.strip().lower() in (NONE, "null"):
        return EXPLICIT_NONE
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def int_or_none(text: str):
    if text.strip().lower() in (NONE, "null"):
        return EXPLICIT_NONE
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'none', got {text!r}") from None


@dataclass(frozen=True)
class Opt:
    """One option mapped onto a field of a config, by dotted path (``dba.anneal.lr``)."""

    flags: tuple[str, ...]
    path: str
    type: Callable | None = None
    choices: tuple | None = None
    const: Any = None
    """For a flag without a value (``--no-boost``): the value it sets."""
    help: str | None = None
    """Replaces the field's own help text."""
    metavar: str | None = None


def _field_at(root_cls, path: str):
    """(owning dataclass, field name) of a dotted path from ``root_cls``."""
    cls = root_cls
    parts = path.split(".")
    for name in parts[:-1]:
        tp = typing.get_type_hints(cls)[name]
        options = typing.get_args(tp) or (tp,)
        cls = next(o for o in options if isinstance(o, type) and is_dataclass(o))
    return cls, parts[-1]


def _default_at(obj, path: str):
    for name in path.split("."):
        if obj is None:
            return None
        obj = getattr(obj, name)
    return obj


def _show(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def add_options(group, opts: list[Opt], root_cls=FinetuneConfig, defaults=None) -> None:
    """Add ``opts`` to an argparse group: help = the field's docstring + its default (from ``defaults``, an instance
    of ``root_cls``; the dataclass defaults when None)."""
    defaults = defaults if defaults is not None else root_cls()
    for o in opts:
        cls, name = _field_at(root_cls, o.path)
        text = o.help or field_help(cls).get(name, "")
        if o.const is None:
            text = f"{text} (default: {_show(_default_at(defaults, o.path))})"
        text = text.replace("%", "%%")
        dest = o.flags[-1].lstrip("-").replace("-", "_")
        if o.const is not None:
            group.add_argument(*o.flags, dest=dest, action="store_const", const=o.const, default=None, help=text)
        else:
            group.add_argument(*o.flags, dest=dest, type=o.type, choices=o.choices, default=None, help=text,
                               metavar=o.metavar)


def _dest(o: Opt) -> str:
    return o.flags[-1].lstrip("-").replace("-", "_")


def apply_options(cfg, args, opts: list[Opt]):
    """A copy of ``cfg`` with every option the user gave set at its path (validated when rebuilt)."""
    cfg = copy.deepcopy(cfg)
    for o in opts:
        value = getattr(args, _dest(o), None)
        if value is None:
            continue
        if value is EXPLICIT_NONE:
            value = None
        *parents, name = o.path.split(".")
        target = cfg
        for p in parents:
            target = getattr(target, p)
            if target is None:
                raise DBAError(f"{o.flags[-1]} needs {p} (e.g. {p} = None means it is switched off here).")
        setattr(target, name, value)
    return rebuild(cfg)


def rebuild(cfg):
    """Validate a config changed in place by rebuilding it from its dict (nested configs included)."""
    return type(cfg).from_dict(cfg.to_dict()) if not _has_callable(cfg) else cfg


def _has_callable(cfg) -> bool:
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if is_dataclass(v) and not isinstance(v, type):
            if _has_callable(v):
                return True
        elif callable(v):
            return True
    return False


# --------------------------------------------------------------------------------------------------------------------
# The option sets


def _comma_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


MODEL_OPTS = [
    Opt(("--model",), "model"),
    Opt(("--quantization",), "quantization", choices=("none", "4bit", "8bit")),
    Opt(("--device",), "device"),
    Opt(("--trust-remote-code",), "trust_remote_code", const=True),
]
LORA_OPTS = [  # --lora-rank is special (0 = full fine-tuning): see apply_lora
    Opt(("--lora-alpha",), "lora.alpha", type=float_or_none, help="LoRA alpha; none = 2 × rank"),
    Opt(("--lora-dropout",), "lora.dropout", type=float),
    Opt(("--lora-targets",), "lora.target_modules", type=lambda s: s if s == "all-linear" else _comma_list(s),
        help="'all-linear' or a comma-separated list of module names (q_proj,v_proj,...)"),
]
DATA_OPTS = [
    Opt(("--general",), "general"),
    Opt(("--domain-eval",), "domain_eval"),
    Opt(("--general-eval",), "general_eval"),
    Opt(("--general-heldout",), "general_heldout", metavar="FILE"),
    Opt(("--domain-heldout",), "domain_heldout", metavar="FILE"),
    Opt(("--max-length",), "max_length", type=int),
]
RUN_OPTS = [
    Opt(("--steps",), "steps", type=int),
    Opt(("--batch-size",), "batch_size", type=int),
    Opt(("--grad-accum",), "grad_accum", type=int),
    Opt(("--max-grad-norm",), "max_grad_norm", type=float_or_none),
    Opt(("--seed",), "seed", type=int),
    Opt(("--eval-every",), "eval_every", type=int),
    Opt(("--eval-items",), "eval_items", type=int, metavar="N",
        help="score the first N items of each eval set; 0 = all items (none = all)"),
    Opt(("--scorer",), "eval_scorer", choices=("mean", "loglik", "gen")),
]
DBA_OPTS = [
    Opt(("--anchor",), "anchor", metavar="FILE"),
    Opt(("--anchor-batches",), "anchor_batches", type=int),
    Opt(("--lr",), "dba.anneal.lr", type=float),
    Opt(("--schedule",), "dba.anneal.schedule", choices=("cosine", "linear", "constant")),
    Opt(("--warmup",), "dba.anneal.warmup_steps", type=int),
    Opt(("--weight-decay",), "dba.weight_decay", type=float),
    Opt(("--boost-mode",), "dba.boost.mode", choices=("convex", "additive", "projection")),
    Opt(("--k0",), "dba.boost.k0", type=float_or_none),
    Opt(("--k0-max",), "dba.boost.k0_max", type=float_or_none),
    Opt(("--boost-decay",), "dba.boost.decay", choices=("linear", "constant", "cosine")),
    Opt(("--anchor-scale",), "dba.boost.scale", choices=("raw", "relative")),
    Opt(("--dc-function",), "dba.correction.function", choices=("paper", "conservative", "off")),
    Opt(("--dc-beta",), "dba.correction.beta", type=float),
    Opt(("--lam-min",), "dba.correction.lam_min", type=float),
    Opt(("--lam-max",), "dba.correction.lam_max", type=float),
]


def add_preset_options(group) -> None:
    group.add_argument("--preset", choices=PRESET_NAMES, default=None,
                       help="start from a named preset (dba.config): " + "; ".join(
                           f"{n}: {preset(n).summary}" for n in PRESET_NAMES).replace("%", "%%"))
    group.add_argument("--quick", action="store_true", help=f"= --preset quick ({preset('quick').summary})")
    group.add_argument("--print-config", action="store_true",
                       help="print the fully resolved configuration as JSON and exit without running")


def preset_of(args):
    name = getattr(args, "preset", None)
    if getattr(args, "quick", False):
        if name not in (None, "quick"):
            raise DBAError(f"--quick and --preset {name} disagree; give one.")
        name = "quick"
    return preset(name or "full")


def add_model_options(p, defaults: FinetuneConfig | None = None) -> None:
    g = p.add_argument_group("model")
    add_options(g, MODEL_OPTS, defaults=defaults)
    d = defaults or FinetuneConfig()
    g.add_argument("--lora-rank", type=int, default=None,
                   help=f"LoRA rank; 0 = full fine-tuning (default: {d.lora.rank if d.lora else 0})")
    add_options(g, LORA_OPTS, defaults=defaults if (defaults and defaults.lora) else None)


def apply_model_options(cfg: FinetuneConfig, args) -> FinetuneConfig:
    """The model options (incl. ``--lora-rank``, 0 = full fine-tuning) applied to a run config."""
    cfg = copy.deepcopy(cfg)
    rank = getattr(args, "lora_rank", None)
    if rank is not None:
        if rank < 0:
            raise DBAError(f"--lora-rank must be 0 (full fine-tuning) or more, got {rank}.")
        if rank == 0:
            cfg.lora = None
        elif cfg.lora is None:
            cfg.lora = LoraSettings(rank=rank)
        else:
            cfg.lora.rank = rank
    lora_given = [o.flags[0] for o in LORA_OPTS if getattr(args, _dest(o), None) is not None]
    if cfg.lora is None and lora_given:
        raise DBAError(f"{', '.join(lora_given)} set LoRA options, but the run is full fine-tuning (LoRA rank 0).")
    return apply_options(cfg, args, MODEL_OPTS + (LORA_OPTS if cfg.lora is not None else []))


def timestamped(prefix: str) -> str:
    return f"runs/{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def print_json(obj) -> int:
    print(json.dumps(obj, indent=2, default=str))
    return 0
