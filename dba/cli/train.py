"""``dba train``: one fine-tuning run (dba, direct or mixture) into a run folder."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import FinetuneConfig
from ..errors import DBAError
from .options import (DATA_OPTS, DBA_OPTS, RUN_OPTS, Opt, add_model_options, add_options, add_preset_options,
                      apply_model_options, apply_options, preset_of, print_json, timestamped)

TRAIN_OPTS = [
    Opt(("--method",), "method", choices=("dba", "direct", "mixture")),
    Opt(("--domain",), "domain"),
    Opt(("--ratio",), "mixture_ratio", type=float),
    Opt(("--checkpoint-every",), "checkpoint_every", type=int),
    Opt(("-o", "--output"), "output_dir", help="the run folder (default: runs/<method>-<time>)"),
    Opt(("--checkpoint-minutes",), "checkpoint_minutes", type=float),
    Opt(("--no-collapse-guard",), "collapse_guard", const=False, help="do not stop a collapsed run (diverged)"),
]
ABLATION_OPTS = [
    Opt(("--no-boost",), "dba.boost.enabled", const=False, help="ablation: GGB off"),
    Opt(("--no-correction",), "dba.correction.enabled", const=False, help="ablation: DC off"),
    Opt(("--no-anneal",), "dba.anneal.enabled", const=False, help="ablation: AL off (constant lr)"),
]


def config_from_args(args) -> FinetuneConfig:
    """The run config: the preset (``--preset`` / ``--quick``, else the defaults), then every option given."""
    cfg = apply_model_options(preset_of(args).run_config(), args)
    cfg = apply_options(cfg, args, TRAIN_OPTS + DATA_OPTS + RUN_OPTS + DBA_OPTS + ABLATION_OPTS)
    if args.output is None:
        cfg.output_dir = timestamped(cfg.method)
    return cfg


def resume_config(run_dir: str) -> FinetuneConfig:
    """The saved config of ``run_dir``, with ``output_dir`` = ``run_dir`` itself (a copied folder resumes the copy)."""
    from ..train import resume_config as saved_config

    return saved_config(run_dir)


def cmd_train(args) -> int:
    from ..train import finetune

    cfg = resume_config(args.resume) if args.resume else config_from_args(args)
    if args.print_config:
        return print_json(cfg.resolved().to_dict())
    print(f"run folder: {cfg.output_dir}")
    from ..tracking import open_tracker  # --report-to (H7): metrics.jsonl is always written besides

    tracker = open_tracker(args.report_to, cfg.output_dir, cfg.to_dict())
    status = "failed"
    try:
        r = finetune(cfg if args.resume else cfg.resolved(), resume=bool(args.resume), callback=tracker.log)
        status = r.status
    finally:
        tracker.close(status)
    print(f"status: {r.status} after {r.steps_done} steps")
    if r.scores:
        print("scores: " + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in r.scores.items()))
    return 0 if r.status == "completed" else 3


def add_command(sub) -> None:
    p = sub.add_parser("train", help="fine-tune with dba, direct or mixture",
                       description="Fine-tune on domain data with DBA (or the direct / mixture baselines) and write "
                                   "a run folder (config, metrics.jsonl, adapter, status). Defaults come from "
                                   "dba.config (FinetuneConfig; --preset / --quick start from a preset).")
    add_preset_options(p)
    add_options(p, TRAIN_OPTS[:1])
    add_model_options(p)
    add_options(p.add_argument_group("data"), TRAIN_OPTS[1:3] + DATA_OPTS)
    r = p.add_argument_group("run")
    add_options(r, RUN_OPTS + TRAIN_OPTS[3:])
    r.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a cancelled/interrupted run")
    from ..tracking import BACKENDS

    r.add_argument("--report-to", default="none", choices=BACKENDS,
                   help="also send each step/eval record to this tracker (dba.tracking; metrics.jsonl is always kept)")
    add_options(p.add_argument_group("DBA (see docs/algorithm.md)"), DBA_OPTS + ABLATION_OPTS)
    p.set_defaults(func=cmd_train)
