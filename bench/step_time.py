"""(a) Optimiser-step and full-step time of DBA vs direct QLoRA on the same model and batches, and where the DBA
optimiser step's time goes (anchor mapping, similarity, AdamW update, the rest).

Both optimisers hold the same trainable parameters; each repeat runs one direct and one DBA step on the same batch,
in alternating order, so drifts of a shared machine hit both alike. The breakdown is measured in a separate
instrumented pass (its timers synchronise the device, which would slow the timed steps): the pieces are timed by
wrapping ``AnchorMap.__call__`` (the optimiser's ``anchor_map``), ``dba.transforms.similarity`` (what the chain's
similarity transform calls) and ``torch.optim.AdamW.step`` from here — nothing in the library is changed.
"""
from __future__ import annotations

import contextlib
import time

import torch

import dba.transforms as transforms_mod
from dba.global_gradient import GlobalGradient, trainable_parameters
from dba.optim import AnnealConfig, DBAConfig, DBAOptimizer

from .common import BenchModel, Clock, median, sync, table, to_device


class _Timer:
    def __init__(self, device):
        self.device, self.seconds = device, []

    def wrap(self, fn):
        def timed(*a, **kw):
            sync(self.device)
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            sync(self.device)
            self.seconds.append(time.perf_counter() - t0)
            return out
        return timed


@contextlib.contextmanager
def instrumented(opt: DBAOptimizer, device):
    """Time the DBA step's pieces for the duration of the block."""
    timers = {k: _Timer(device) for k in ("map", "similarity", "update")}
    original_map, original_sim, original_adamw = opt.anchor_map, transforms_mod.similarity, torch.optim.AdamW.step
    opt.anchor_map = timers["map"].wrap(original_map)
    transforms_mod.similarity = timers["similarity"].wrap(original_sim)
    torch.optim.AdamW.step = timers["update"].wrap(original_adamw)
    try:
        yield timers
    finally:
        opt.anchor_map, transforms_mod.similarity, torch.optim.AdamW.step = original_map, original_sim, original_adamw


def _one(model, opt, batch, device, max_grad_norm=1.0) -> dict:
    clock = Clock(device)
    loss = model(**batch).loss
    loss.backward()
    fb = clock.lap()
    params = [p for g in opt.param_groups for p in g["params"]]
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    clip = clock.lap()
    opt.set_loss(float(loss.detach()))
    opt.step()
    step = clock.lap()
    opt.zero_grad(set_to_none=True)
    zero = clock.lap()
    return {"fwd_bwd": fb, "clip": clip, "opt": step + zero, "full": fb + clip + step + zero}


def run(bm: BenchModel, anchor: GlobalGradient, args) -> tuple[str, dict]:
    model, device = bm.model, bm.device
    n = args.warmup + args.repeats
    batches = [to_device(b, device) for b in bm.domain_batches(n)]
    start = {k: p.detach().clone() for k, p in trainable_parameters(model).items()}
    total = 2 * n + args.repeats + 1
    # a small lr keeps the adapter (and so the anchor map's inputs) near its start over the repeats
    direct = DBAOptimizer(model, None, DBAConfig.direct(total, lr=1e-5))
    dba_cfg = DBAConfig(total_steps=total, anneal=AnnealConfig(lr=1e-5))
    dba = DBAOptimizer(model, anchor, dba_cfg)
    methods = [("direct", direct), ("dba", dba)]
    times = {name: [] for name, _ in methods}
    for i, batch in enumerate(batches):
        # rotate the order each repeat, so no method always runs first (or right after another one)
        order = methods[i % len(methods):] + methods[:i % len(methods)]
        for name, opt in order:
            r = _one(model, opt, batch, device)
            if i >= args.warmup:
                times[name].append(r)

    with instrumented(dba, device) as timers:
        opt_total = []
        for batch in batches[args.warmup:]:
            opt_total.append(_one(model, dba, batch, device)["opt"])
    with torch.no_grad():
        for k, p in trainable_parameters(model).items():
            p.copy_(start[k])

    med = {m: {k: median(r[k] for r in times[m]) for k in ("fwd_bwd", "clip", "opt", "full")} for m in times}
    ms = 1e3
    keys = ("fwd_bwd", "clip", "opt", "full")
    rows = [[m] + [med[m][k] * ms for k in keys] for m in med]
    rows += [[f"{m} / direct"] + [med[m][k] / med["direct"][k] for k in keys] for m in med if m != "direct"]
    overhead = med["dba"]["opt"] - med["direct"]["opt"]
    # forward + backward is the same work for every method: pooling it over all methods' steps removes most of a
    # shared machine's noise from the full-step ratio
    pooled_fb = median(r["fwd_bwd"] for m in times for r in times[m])
    pooled = {m: pooled_fb + med[m]["clip"] + med[m]["opt"] for m in med}
    pooled_ratio = pooled["dba"] / pooled["direct"]
    out = table(f"(a) Step time, DBA vs direct — {bm.spec} (median of {args.repeats} interleaved repeats, "
                f"{args.warmup} warm-up)",
                ["method", "forward+backward ms", "clip ms", "optimiser step ms", "full step ms"], rows,
                note=f"DBA's optimiser-step overhead: {overhead * ms:+.1f} ms per step = "
                     f"{overhead / med['direct']['full']:+.1%} of a direct full step. Full step with forward+backward "
                     f"pooled over all methods ({pooled_fb * ms:.1f} ms): dba / direct = {pooled_ratio:.3f}"
                     + f". Target full step ≤ 1.03× direct: {'met' if pooled_ratio <= 1.03 else 'NOT met'} "
                       f"(pooled {pooled_ratio:.3f}×, raw medians {med['dba']['full'] / med['direct']['full']:.3f}×).")
    parts = {k: median(t.seconds[i] for i in range(len(t.seconds))) if t.seconds else float("nan")
             for k, t in timers.items()}
    opt_med = median(opt_total)
    rest = opt_med - sum(parts.values())
    labels = {"map": "anchor mapping ĝ_t (AnchorMap: s·Ĝ·Aᵀ, s·Bᵀ·Ĝ in factored form)",
              "similarity": "similarity ρ_t (cosine over all parameters)",
              "update": "update (AdamW step on g̃ with lr_t·λ_t)"}
    brows = [[labels[k], parts[k] * ms, parts[k] / opt_med] for k in ("map", "similarity", "update")]
    brows.append(["the rest (‖g_D‖, ‖ĝ‖, boost mix, gradient swap, record, zero_grad)", rest * ms, rest / opt_med])
    brows.append(["DBA optimiser step, instrumented (synchronised per piece)", opt_med * ms, 1.0])
    brows.append(["direct optimiser step (plain AdamW + schedule), for reference", med["direct"]["opt"] * ms,
                  med["direct"]["opt"] / opt_med])
    out += "\n" + table(f"(a) DBA optimiser step, split — {bm.spec}", ["piece", "ms (median)", "share"], brows)
    info = {"median": med, "breakdown_s": parts, "breakdown_opt_s": opt_med,
            "full_ratio": med["dba"]["full"] / med["direct"]["full"], "pooled_fwd_bwd_s": pooled_fb,
            "pooled_full_ratio": pooled_ratio,
            "opt_overhead_share_of_full": overhead / med["direct"]["full"]}
    return out, info
