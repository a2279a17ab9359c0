"""DBA inside TRL's ``SFTTrainer``: LoRA on the embedded model, the domain data in TRL's prompt-completion format,
DBA's optimiser and its Trainer callback (step-count guard, ρ/γ/λ/‖ĝ‖ in the logs and in ``report_to``).

    pip install trl            # the optional extra: pip install "dba-studio[trl]"
    python examples/trl_sft_dba.py --steps 20 --report-to tensorboard

What DBA adds to a plain SFT run is three lines: the anchor (estimated once on general data), the optimiser built from
it, and ``dba.hf.attach(trainer)``. TRL tokenises the data itself; it takes the loss on the completion only, as
``dba train`` does on the answer.
"""
from __future__ import annotations

import argparse
import sys


def build(argv=None):
    """The trainer (not yet trained) and the DBA optimiser, from command-line style arguments."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    import dba.hf
    from dba import LoraSettings, load_model
    from dba.config import AnnealConfig, BoostConfig, DBAConfig
    from dba.data import batch_plan, collate, load_corpus, read_rows, resolve_corpus, row_messages
    from dba.global_gradient import estimate_global_gradient
    from dba.optim import DBAOptimizer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="'default', 'tiny', a folder or a hub id")
    p.add_argument("--domain", default="finance", help="bundled domain or a data file/folder (any dba.data layout)")
    p.add_argument("--general", default="general", help="general corpus for the anchor")
    p.add_argument("--steps", type=int, default=20, help="optimiser steps T (= max_steps)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4, help="η_0")
    p.add_argument("--k0", type=float, default=None, help="GGB weight k_0 (default: DBA's short-run rule)")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--anchor-batches", type=int, default=8)
    p.add_argument("--report-to", default="none", help="none, tensorboard, trackio, wandb, mlflow (Trainer names)")
    p.add_argument("-o", "--output", default="runs/trl-sft-dba")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    torch.manual_seed(args.seed)
    lm = load_model(args.model, lora=LoraSettings(rank=args.lora_rank), device="auto")
    tok = lm.tokenizer

    # Stage 1 (once per base model and general corpus): the global gradient ĝ_G.
    general = load_corpus(resolve_corpus(args.general), tok, args.max_length)
    plan = batch_plan(len(general), args.batch_size, args.anchor_batches, args.seed + 7919)
    anchor = estimate_global_gradient(lm.model, (collate([general.examples[i] for i in idx], tok.pad_token_id)
                                                 for idx in plan), progress=False)

    # The domain data as TRL's conversational prompt-completion rows (dba.data reads every layout it accepts).
    rows = []
    for row in read_rows(resolve_corpus(args.domain)):
        msgs = row_messages(row)
        if msgs:
            rows.append({"prompt": [m for m in msgs[:-1]], "completion": [msgs[-1]]})
    dataset = Dataset.from_list(rows)

    # Stage 2: DBA's optimiser; the Trainer must run exactly T optimiser steps (the callback checks it).
    boost = BoostConfig(k0=args.k0) if args.k0 is not None else BoostConfig()
    opt = DBAOptimizer(lm.model, anchor, DBAConfig(total_steps=args.steps, boost=boost,
                                                   anneal=AnnealConfig(lr=args.lr)))
    config = SFTConfig(output_dir=args.output, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                       max_length=args.max_length, logging_steps=1, save_strategy="no", report_to=args.report_to,
                       seed=args.seed, use_cpu=lm.device.type == "cpu", max_grad_norm=1.0,
                       gradient_checkpointing=False)
    trainer = SFTTrainer(model=lm.model, args=config, train_dataset=dataset, processing_class=tok,
                         optimizers=(opt, opt.scheduler()))
    dba.hf.attach(trainer)
    return trainer, opt


def main(argv=None) -> int:
    trainer, opt = build(argv)
    trainer.train()
    for h in trainer.state.log_history:
        if "dba/rho" in h:
            print(f"step {h['step']:>3}  loss {h['loss']:.3f}  rho {h['dba/rho']:+.3f}  gamma {h['dba/gamma']:.3f}  "
                  f"lambda {h['dba/lambda']:.3f}  lr {h['learning_rate']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
