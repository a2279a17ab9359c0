"""``dba anchor``: estimate the global gradient ĝ_G on a general corpus and save it (:mod:`dba.anchor`)."""
from __future__ import annotations

from ..config import AnchorConfig
from .options import (Opt, add_model_options, add_options, add_preset_options, apply_model_options, apply_options,
                      int_or_none, float_or_none, preset_of, print_json)

ANCHOR_OPTS = [
    Opt(("--corpus",), "corpus"),
    Opt(("--batches",), "batches", type=int),
    Opt(("--batch-size",), "batch_size", type=int),
    Opt(("--max-length",), "max_length", type=int),
    Opt(("--seed",), "seed", type=int),
    Opt(("--space",), "space", choices=("auto", "weight", "param")),
    Opt(("--estimator",), "estimator", choices=("mean", "ema")),
    Opt(("--rank",), "rank", type=int_or_none),
    Opt(("--energy",), "energy", type=float_or_none),
    Opt(("--energy-scope",), "energy_scope", choices=("matrix", "total")),
]
DEFAULT_OUTPUT = "runs/anchor.safetensors"


def config_from_args(args):
    """(run config holding the model settings, anchor config) from the preset and the options given."""
    pre = preset_of(args)
    run = apply_model_options(pre.run_config(), args)
    anchor = apply_options(pre.anchor_config(), args, ANCHOR_OPTS)
    return run, anchor


def resolved(run, anchor: AnchorConfig, output: str) -> dict:
    """What ``dba anchor --print-config`` prints: the model settings, the anchor pass and the output file."""
    r = run.resolved()
    return {"model": r.model, "quantization": r.quantization, "lora": r.lora.to_dict() if r.lora else None,
            "device": r.device, "dtype": r.dtype, "trust_remote_code": r.trust_remote_code,
            "anchor": anchor.to_dict(), "output": output}


def cmd_anchor(args) -> int:
    from ..anchor import estimate_from_corpus
    from ..models import load_model

    run, anchor = config_from_args(args)
    if args.print_config:
        return print_json(resolved(run, anchor, args.output))
    lm = load_model(run.model, quantization=run.quantization, lora=run.lora, device=run.device, dtype=run.dtype,
                    trust_remote_code=run.trust_remote_code)
    g = estimate_from_corpus(lm, anchor)
    path = g.save(args.output)
    s = g.summary()
    print(f"saved {path}")
    print(f"  space {s['space']}, {s['tensors']} tensors ({s['matrices']} matrices), {s['batches']} batches, "
          f"{s['tokens']} tokens, {s['seconds']:.1f} s")
    if s["matrices"]:
        print(f"  rank kept: min {s['rank_min']}, mean {s['rank_mean']:.1f}, max {s['rank_max']}; energy kept: "
              f"min {s['energy_kept_min']:.3f}, mean {s['energy_kept_mean']:.3f}")
    print(f"  size: dense {s['dense_mb']:.1f} MB -> stored {s['stored_mb']:.1f} MB ({100 * s['stored_share']:.1f}%)")
    return 0


def add_command(sub) -> None:
    p = sub.add_parser("anchor", help="estimate the global gradient ĝ_G on a general corpus and save it",
                       description="Zero-learning-rate pass over a general corpus: saves ĝ_G (safetensors, "
                                   "low-rank) for every later `dba train --method dba`. Defaults come from "
                                   "dba.config (AnchorConfig, derived from the preset's run).")
    add_preset_options(p)
    add_model_options(p)
    add_options(p.add_argument_group("anchor"), ANCHOR_OPTS, root_cls=AnchorConfig)
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help=f"where to save the anchor (default: "
                                                                  f"{DEFAULT_OUTPUT})")
    p.set_defaults(func=cmd_anchor)
