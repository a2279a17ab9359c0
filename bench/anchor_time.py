"""(c) Anchor estimation time and tokens/second against a plain training epoch over the same general batches."""
from __future__ import annotations

import time

import torch

from dba.global_gradient import GlobalGradient, estimate_global_gradient, trainable_parameters
from dba.optim import DBAConfig, DBAOptimizer

from .common import BenchModel, Clock, PeakMemory, free, table, to_device, tokens_in, train_step


def estimate(bm: BenchModel, batches: list[dict], args) -> GlobalGradient:
    """The anchor as the bench is configured: dense estimate compressed by energy (the library default), or the
    streaming sketch of rank ``args.rank``."""
    if args.anchor == "streaming":
        return estimate_global_gradient(bm.model, batches, rank=args.rank, energy=args.energy, streaming=True,
                                        oversample=args.oversample, progress=False)
    return estimate_global_gradient(bm.model, batches, rank=args.rank, energy=args.energy, progress=False)


def run(bm: BenchModel, args, with_epoch: bool = True) -> tuple[str, GlobalGradient, dict]:
    """Time a plain epoch (unless ``with_epoch`` is False: the anchor alone, for sections that only need it) and
    the anchor estimation over the same general batches; returns the table, the anchor and the numbers."""
    batches = bm.general_batches(args.anchor_batches)
    tokens = sum(tokens_in(b) for b in batches)
    dev_batches = [to_device(b, bm.device) for b in batches]
    if not with_epoch:
        anchor = estimate(bm, dev_batches, args)
        return "", anchor, {"anchor_summary": anchor.summary(), "anchor_kind": args.anchor}

    # a plain (direct) training epoch over the same batches; the adapter is restored afterwards so the anchor is
    # estimated at the base model, as a real run does
    start = {n: p.detach().clone() for n, p in trainable_parameters(bm.model).items()}
    opt = DBAOptimizer(bm.model, None, DBAConfig.direct(len(batches), lr=1e-5))
    train_step(bm.model, opt, dev_batches[0])  # warm-up (allocations, kernels); not timed
    clock = Clock(bm.device)
    for b in dev_batches:
        train_step(bm.model, opt, b)
    epoch_s = clock.lap()
    with torch.no_grad():
        for n, p in trainable_parameters(bm.model).items():
            p.copy_(start[n])
    del opt
    free()

    peak = PeakMemory(bm.device)
    peak.reset()
    clock = Clock(bm.device)
    anchor = estimate(bm, dev_batches, args)
    total_s = clock.lap()
    mem = peak.read()
    pass_s = float(anchor.meta["seconds"])
    post_s = max(total_s - pass_s, 0.0)
    s = anchor.summary()
    kind = (f"streaming sketch, r={args.rank or 'default'}, p={args.oversample}" if args.anchor == "streaming"
            else f"dense, then SVD to {args.energy:.0%} energy" if args.energy and not args.rank
            else f"dense, then SVD to rank {args.rank}")
    rows = [
        ["plain training epoch (direct QLoRA steps)", epoch_s, tokens / epoch_s, 1.0],
        ["anchor: zero-lr pass (forward, backward, δᵀx hooks)", pass_s, tokens / pass_s, pass_s / epoch_s],
        [f"anchor: {'reconstruction' if args.anchor == 'streaming' else 'SVD compression'} + metadata", post_s,
         float("nan"), post_s / epoch_s],
        ["anchor: total", total_s, tokens / total_s, total_s / epoch_s],
    ]
    out = table(f"(c) Anchor estimation vs a plain epoch — {bm.spec}, {len(batches)} batches, {tokens} tokens",
                ["phase", "seconds", "tokens/s", "× epoch time"], rows,
                note=f"Anchor: {kind}; kept rank mean {s['rank_mean'] or 0:.1f} (min {s['rank_min']}, max "
                     f"{s['rank_max']}), stored {s['stored_mb']:.1f} MB of {s['dense_mb']:.1f} MB dense.")
    info = {"epoch_s": epoch_s, "anchor_pass_s": pass_s, "anchor_total_s": total_s, "tokens": tokens,
            "anchor_tokens_per_s": tokens / total_s, "epoch_tokens_per_s": tokens / epoch_s, "anchor_memory": mem,
            "anchor_summary": s, "anchor_kind": kind}
    return out, anchor, info
