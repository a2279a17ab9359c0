"""(d) Peak memory of DBA vs direct: CPU resident set and, on CUDA, the allocator's max allocated bytes.

On CUDA the phases run in the bench process, one after another, with the allocator's peak reset between them (the
direct phase runs before any anchor exists). On the CPU a freed tensor's pages may stay in the process, so each
method runs in a fresh worker process (``python -m bench.memory --worker ...``) and reports its own peaks.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from dba.global_gradient import GlobalGradient, trainable_parameters
from dba.optim import AnnealConfig, DBAConfig, DBAOptimizer

from .common import BenchModel, PeakMemory, free, table, to_device, train_step


def train_phase(bm: BenchModel, anchor: GlobalGradient | None, steps: int) -> dict:
    """Peak memory of ``steps`` fine-tuning steps with a fresh optimiser (direct when ``anchor`` is None)."""
    import torch

    batches = [to_device(b, bm.device) for b in bm.domain_batches(steps, seed=11)]
    start = {k: p.detach().clone() for k, p in trainable_parameters(bm.model).items()}
    peak = PeakMemory(bm.device)
    peak.reset()
    cfg = DBAConfig(total_steps=steps, anneal=AnnealConfig(lr=1e-5)) if anchor is not None \
        else DBAConfig.direct(steps, lr=1e-5)
    opt = DBAOptimizer(bm.model, anchor, cfg)
    for b in batches:
        train_step(bm.model, opt, b)
    mem = peak.read()
    del opt
    with torch.no_grad():
        for k, p in trainable_parameters(bm.model).items():
            p.copy_(start[k])
    free()
    return mem


def _row(label: str, mem: dict, ref: dict | None, cuda: bool) -> list:
    row = [label, mem["rss_peak_mb"], mem["rss_peak_mb"] - ref["rss_peak_mb"] if ref else 0.0]
    if cuda:
        row += [mem["cuda_peak_mb"] / 1024, (mem["cuda_peak_mb"] - ref["cuda_peak_mb"]) / 1024 if ref else 0.0,
                mem.get("cuda_reserved_peak_mb", float("nan")) / 1024]
    return row


def _columns(cuda: bool) -> list[str]:
    cols = ["phase", "CPU RSS peak MB", "Δ vs direct MB"]
    if cuda:
        cols += ["CUDA max allocated GB", "Δ vs direct GB", "CUDA max reserved GB"]
    return cols


def render(spec: str, direct: dict, anchor_mem: dict | None, dba: dict, anchor_label: str, steps: int,
           note: str = "") -> str:
    cuda = "cuda_peak_mb" in direct
    rows = [_row(f"direct QLoRA, {steps} steps", direct, None, cuda)]
    if anchor_mem:
        rows.append(_row(f"anchor estimation ({anchor_label})", anchor_mem, direct, cuda))
    rows.append(_row(f"DBA QLoRA, {steps} steps (anchor held)", dba, direct, cuda))
    return table(f"(d) Peak memory — {spec}", _columns(cuda), rows, note=note or None)


def run_in_process(bm: BenchModel, args) -> tuple[str, dict]:
    """CUDA: every (anchor, checkpointing) configuration on the loaded model, the allocator's peak reset between
    phases. The anchor phases use ``args.memory_anchor_batches`` batches (the store's size does not depend on it)."""
    from .anchor_time import estimate
    from .common import set_checkpointing

    cuda = bm.device.type == "cuda"
    ckpts = [c == "on" for c in args.memory_checkpointing]
    ranks = args.memory_ranks if args.anchor == "streaming" else [args.rank]
    steps = args.memory_steps
    rows, info, peaks = [], {"direct": {}, "anchor": {}, "dba": {}}, []
    direct = {}
    for ck in ckpts:
        set_checkpointing(bm, ck)
        direct[ck] = train_phase(bm, None, steps)
        info["direct"][f"checkpointing {'on' if ck else 'off'}"] = direct[ck]
        rows.append(_row(f"direct QLoRA, {steps} steps, checkpointing {'on' if ck else 'off'}", direct[ck], None,
                         cuda))
    batches = [to_device(b, bm.device) for b in bm.general_batches(args.memory_anchor_batches)]
    for r in ranks:
        set_checkpointing(bm, False)
        a = argparse.Namespace(**{**vars(args), "rank": r})
        label = f"streaming r={r}, p={args.oversample}" if args.anchor == "streaming" else \
            f"dense → {'rank ' + str(r) if r else f'{args.energy:.0%} energy'}"
        peak = PeakMemory(bm.device)
        peak.reset()
        anchor = estimate(bm, batches, a)
        anchor_mem = peak.read()
        info["anchor"][label] = {**anchor_mem, "stored_mb": anchor.summary()["stored_mb"]}
        rows.append(_row(f"anchor estimation ({label}; eval mode, no checkpointing)", anchor_mem,
                         direct[ckpts[0]], cuda))
        for ck in ckpts:
            set_checkpointing(bm, ck)
            dba = train_phase(bm, anchor, steps)
            info["dba"][f"{label}, checkpointing {'on' if ck else 'off'}"] = dba
            rows.append(_row(f"DBA QLoRA, {steps} steps, checkpointing {'on' if ck else 'off'} ({label} held, "
                             f"{anchor.summary()['stored_mb']:.0f} MB)", dba, direct[ck], cuda))
            if cuda:
                peaks.append((label, ck, max(dba["cuda_peak_mb"], anchor_mem["cuda_peak_mb"]) / 1024))
        del anchor
        free()
    set_checkpointing(bm, False)
    note = None
    if peaks:
        note = "DBA run peak = max(anchor phase, training phase): " + "; ".join(
            f"{lab}, checkpointing {'on' if ck else 'off'}: **{gb:.2f} GB**" for lab, ck, gb in peaks) + "."
        info["dba_run_peak_gb"] = {f"{lab}, checkpointing {'on' if ck else 'off'}": gb for lab, ck, gb in peaks}
    seq = f"batch {bm.batch} × {bm.seq} tokens"
    return table(f"(d) Peak memory — {bm.spec}, {seq}", _columns(cuda), rows, note=note), info


# --------------------------------------------------------------------------------------------------------------------
# CPU: one worker process per method


def _worker_args(args, method: str) -> list[str]:
    cmd = [sys.executable, "-m", "bench.memory", "--worker", method, "--model", args.model_spec,
           "--quantization", args.quantization, "--lora-rank", str(args.lora_rank), "--batch", str(args.batch),
           "--device", args.device, "--anchor", args.anchor, "--steps", str(args.memory_steps),
           "--oversample", str(args.oversample)]
    if args.seq:
        cmd += ["--seq", str(args.seq)]
    if args.rank:
        cmd += ["--rank", str(args.rank)]
    if args.energy is not None:
        cmd += ["--energy", str(args.energy)]
    return cmd


def run_workers(args, anchor_label: str) -> tuple[str, dict]:
    results = {}
    for method in ("direct", "dba"):
        proc = subprocess.run(_worker_args(args, method), capture_output=True, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        line = next((l for l in proc.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"memory worker {method} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        results[method] = json.loads(line[len("BENCH_JSON "):])
    d, b = results["direct"], results["dba"]
    note = (f"Each method in a fresh process (model load included: RSS after load {d['load']['rss_start_mb']:.0f} MB"
            f"{d['train']['rss_note']}).")
    return render(args.model_spec, d["train"], b["anchor"], b["train"], anchor_label, args.memory_steps, note), results


def _worker_main(argv=None) -> None:
    from .anchor_time import estimate
    from .common import build

    p = argparse.ArgumentParser()
    p.add_argument("--worker", choices=["direct", "dba"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--quantization", default="4bit")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--seq", type=int, default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--anchor", default="dense")
    p.add_argument("--rank", type=int, default=None)
    p.add_argument("--energy", type=float, default=None)
    p.add_argument("--oversample", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--anchor-batches", type=int, default=2)
    a = p.parse_args(argv)
    bm = build(a.model, quantization=a.quantization, lora_rank=a.lora_rank, device=a.device, seq=a.seq,
               batch=a.batch)
    load = PeakMemory(bm.device)
    load.reset()
    out = {"load": load.read()}
    anchor = None
    if a.worker == "dba":
        batches = [to_device(b, bm.device) for b in bm.general_batches(a.anchor_batches)]
        peak = PeakMemory(bm.device)
        peak.reset()
        anchor = estimate(bm, batches, a)
        out["anchor"] = peak.read()
    out["train"] = train_phase(bm, anchor, a.steps)
    print("BENCH_JSON " + json.dumps(out), flush=True)


if __name__ == "__main__":
    _worker_main()
