"""``dba compare``: direct vs the mixture sweep vs DBA (+ ablations and variants), one shared anchor, with cost."""
from __future__ import annotations

import json
import threading

from ..config import CompareConfig, DEFAULT_RATIOS
from ..errors import DBAError
from ..methods import METHODS as METHOD_TABLE
from .options import (DATA_OPTS, DBA_OPTS, RUN_OPTS, add_model_options, add_options, add_preset_options,
                      apply_model_options, apply_options, preset_of, print_json, timestamped)


def _ratios(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DBAError(f"--ratios must be numbers separated by commas, got {text!r}.") from None


def _alphas(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DBAError(f"--wiseft must be numbers in (0, 1) separated by commas, got {text!r}.") from None


def config_from_args(args) -> CompareConfig:
    """The comparison: the preset's run (``--preset`` / ``--quick``, else the defaults) with every option given."""
    pre = preset_of(args)
    run = apply_model_options(pre.run_config(), args)
    run = apply_options(run, args, DATA_OPTS + RUN_OPTS + DBA_OPTS)
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    return CompareConfig(
        run=run, domains=[d.strip() for d in args.domains.split(",") if d.strip()], methods=methods,
        ratios=_ratios(args.ratios) if args.ratios is not None else list(pre.ratios),
        output_dir=args.output or timestamped("compare"), seeds=args.seeds,
        wiseft=_alphas(args.wiseft) if args.wiseft else [])


def resolved(cfg: CompareConfig) -> dict:
    """What ``--print-config`` prints: the comparison with its run resolved (α, T), the methods and the run list."""
    from ..compare import plan_runs, selected_methods

    specs = plan_runs(cfg)
    d = cfg.to_dict()
    d["run"] = cfg.run.resolved().to_dict()
    d["methods"] = selected_methods(cfg)
    d["planned_runs"] = [{"domain": s.domain, "label": s.label, "method": s.method, "ratio": s.ratio,
                          "seed": s.seed} for s in specs]
    return d


def cmd_compare(args) -> int:
    from ..compare import compare, plan_runs, resume_config

    if args.resume:
        cfg = resume_config(args.resume)  # output_dir = DIR itself: a copied folder resumes the copy
    else:
        cfg = config_from_args(args)
    if args.print_config:
        return print_json(resolved(cfg))
    n_runs = len(plan_runs(cfg))
    seeds = f", {cfg.seeds} seeds" if cfg.seeds > 1 else ""
    print(f"comparison folder: {cfg.output_dir} ({n_runs} runs on {', '.join(cfg.domains)}{seeds}, "
          f"{cfg.run.steps} steps each)")
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
    """Register ``dba compare``."""
    from ..compare import DEFAULT_METHODS, METHODS

    p = sub.add_parser("compare", help="direct vs mixture sweep vs DBA (+ ablations), one shared anchor, with cost",
                       description="Run direct, a mixture ratio sweep, DBA, its ablations (GGB/DC/AL off) and "
                                   "variants on the same model, data and budget, reusing one global gradient; write "
                                   "results.csv, cost.json, plots, summary.md. Defaults come from dba.config "
                                   "(FinetuneConfig / CompareConfig; --preset / --quick start from a preset).")
    add_preset_options(p)
    add_model_options(p)
    d = p.add_argument_group("data")
    d.add_argument("--domains", default="finance", help="comma-separated domains (bundled names or paths) "
                                                        "(default: finance)")
    add_options(d, DATA_OPTS)
    r = p.add_argument_group("runs")
    listing = "; ".join(f"{n}: {METHOD_TABLE[n].summary}" for n in METHODS).replace("%", "%%")
    r.add_argument("--methods", default=None, help=f"comma-separated names, or 'all' (default: "
                                                   f"{','.join(DEFAULT_METHODS)}); the methods: {listing}")
    r.add_argument("--ratios", default=None, help="mixture ratios, comma-separated (default: "
                                                  f"{','.join(f'{x:g}' for x in DEFAULT_RATIOS)})")
    r.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="run every method with N seeds (--seed, --seed + 1, ...: data order, adapter init); one "
                        "anchor and one base evaluation shared; results.csv gets a row per seed and a pooled row per "
                        "method with seed x item intervals (default: 1)")
    r.add_argument("--wiseft", default=None, metavar="A,B,...",
                   help="WiSE-FT: also score every finished run interpolated with the base model at these α in "
                        "(0, 1), e.g. 0.25,0.5,0.75 (no training; rows <label>+wiseft-<α>, cost = scoring time)")
    add_options(r, RUN_OPTS)
    add_options(p.add_argument_group("DBA"), DBA_OPTS)
    o = p.add_argument_group("output")
    o.add_argument("-o", "--output", default=None, help="output folder (default: runs/compare-<time>)")
    o.add_argument("--resume", default=None, metavar="DIR", help="continue a comparison (completed runs are kept)")
    o.add_argument("--json", action="store_true", help="print rows and cost as JSON at the end")
    o.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_compare)
