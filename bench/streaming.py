"""(e) The streaming low-rank anchor: memory for a 7B-class config (computed), and its accuracy against the
dense-then-SVD anchor on the bench model (measured, where the dense estimate fits)."""
from __future__ import annotations

import math

import torch

from dba.global_gradient import estimate_global_gradient
from dba.streaming import (LLAMA2_7B, expected_error_bound, llama_shapes, memory_report, optimal_error,
                           sketch_sizes)

from .common import BenchModel, median, table, to_device

RANKS = (64, 128, 256, 512)


def memory_table(oversample: int) -> tuple[str, dict]:
    shapes = llama_shapes(**LLAMA2_7B)
    rows, info = [], {}
    for r in RANKS:
        rep = memory_report(shapes, r, oversample)
        info[r] = {k: v for k, v in rep.items() if k != "lines"}
        rows.append([r, rep["dense_gb"], rep["sketch_gb"], rep["factors_gb"], rep["saved_gb"], rep["sketch_share"]])
    out = table(f"(e) Streaming anchor memory, Llama-2-7B shapes (32 layers, hidden 4096, intermediate 11008; "
                f"224 adapted matrices; fp32; p = {oversample}, l = 2k+1) — computed",
                ["rank r", "dense Ĝ GB", "sketches Y, W (+ Ω, Ψ) GB", "stored factors GB", "saved GB",
                 "sketch / dense"], rows)
    return out, info


def accuracy_table(bm: BenchModel, args) -> tuple[str, dict]:
    """Per-matrix Frobenius error of the streaming rank-r factors vs the optimal rank-r error of the dense estimate
    over the same batches (and the randomised-SVD bound τ_{r+1} + 2·sqrt(E-bound))."""
    batches = [to_device(b, bm.device) for b in bm.general_batches(args.accuracy_batches)]
    dense = estimate_global_gradient(bm.model, batches, rank=None, energy=None, progress=False)
    rows, info = [], {}
    for r, p in [(r, p) for r in args.accuracy_ranks for p in args.accuracy_oversample]:
        g = estimate_global_gradient(bm.model, batches, rank=r, energy=None, streaming=True, oversample=p,
                                     progress=False)
        ratio, bound_ratio, rel_err, kept_err = [], [], [], []
        for name in g.names():
            if name not in g.factors:
                continue
            d = dense.matrix(name).double()
            s = torch.linalg.svdvals(d)
            k, l = sketch_sizes(*d.shape, r, p)
            err = float((g.matrix(name).double() - d).norm())
            opt = optimal_error(s, r)
            bound = opt + 2 * math.sqrt(expected_error_bound(s, k, l))
            ratio.append(err / opt if opt > 0 else 1.0)
            bound_ratio.append(err / bound if bound > 0 else 0.0)
            rel_err.append(err / float(d.norm()))
            true_kept = float((s[:r] ** 2).sum() / (s ** 2).sum())
            kept_err.append(g.energy_kept[name] - true_kept)
        rows.append([r, p, median(rel_err), median(ratio), max(ratio), median(bound_ratio),
                     max(bound_ratio), median(kept_err)])
        info[f"r={r},p={p}"] = {"median_err_over_optimal": median(ratio), "max_err_over_optimal": max(ratio),
                   "max_err_over_bound": max(bound_ratio)}
    out = table(f"(e) Streaming vs dense-then-SVD anchor — {bm.spec}, {len(batches)} general batches, "
                f"{len(dense.names())} matrices",
                ["rank r", "p", "rel. error median", "error / optimal median", "error / optimal max",
                 "error / bound median", "error / bound max", "energy-kept estimate − true (median)"], rows,
                note="optimal = ‖Ĝ − best rank-r‖ (the dense-then-SVD anchor's error); bound = optimal + "
                     "2·sqrt(Tropp et al. 2017 Thm 4.3), an expectation bound.")
    return out, info
