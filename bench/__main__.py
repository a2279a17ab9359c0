"""Run the DBA benchmarks and print their tables: ``python -m bench`` (see bench/README.md).

Sections (``--sections``, default all):
  a  step time, DBA vs direct QLoRA, and the DBA optimiser step split into its pieces
  b  anchor size dense vs stored, energy kept, for several energies/ranks
  c  anchor estimation time and tokens/s vs a plain training epoch on the same data
  d  peak memory (CPU RSS; CUDA max allocated) of DBA vs direct
  e  streaming anchor: memory for a 7B-class config (computed) and accuracy vs dense-then-SVD (measured)
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

from dba.config import FinetuneConfig

RUN = FinetuneConfig()
"""Defaults of the sizes below come from the library's run config (dba.config), not retyped here."""


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=None,
                   help="default (embedded SmolLM2-135M), tiny, llama-micro, llama-small, llama-1b, llama-7b, or "
                        "any name dba.models.load_model accepts; repeat for several (default: default)")
    p.add_argument("--sections", default="abcde", help="which sections to run, e.g. 'ac' (default: abcde)")
    p.add_argument("--quantization", default="4bit", choices=["none", "4bit", "8bit"], help="4bit = QLoRA")
    p.add_argument("--lora-rank", type=int, default=RUN.lora.rank, help=f"(default: {RUN.lora.rank}; α = 2 × rank)")
    p.add_argument("--seq", type=int, default=None,
                   help="max tokens per example (bundled corpora) or exact length (random-init models; default 512)")
    p.add_argument("--batch", type=int, default=RUN.batch_size, help=f"(default: {RUN.batch_size})")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per method (a)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per method first (a)")
    p.add_argument("--anchor-batches", type=int, default=RUN.anchor_batches,
                   help=f"general batches for the anchor (c, b) (default: {RUN.anchor_batches})")
    p.add_argument("--anchor", choices=["dense", "streaming"], default="dense",
                   help="dense estimate + SVD (library default) or the streaming sketch")
    p.add_argument("--rank", type=int, default=None, help="anchor rank (streaming: the sketch's rank r)")
    p.add_argument("--energy", type=float, default=RUN.anchor_energy,
                   help=f"energy the anchor keeps (default: {RUN.anchor_energy}; None with --energy -1)")
    p.add_argument("--oversample", type=int, default=None,
                   help="streaming oversampling p (default: the library's, dba.streaming.DEFAULT_OVERSAMPLE)")
    p.add_argument("--memory-steps", type=int, default=3, help="steps per method for peak memory (d)")
    p.add_argument("--memory-ranks", default=None,
                   help="CUDA, streaming: anchor ranks whose memory (d) measures, e.g. 512,256 (default: --rank)")
    p.add_argument("--memory-checkpointing", default="off",
                   help="CUDA: gradient checkpointing settings (d) measures: off, on or off,on")
    p.add_argument("--memory-anchor-batches", type=int, default=2, help="CUDA: batches of each anchor phase (d)")
    p.add_argument("--memory-in-process", action="store_true",
                   help="(d) on the CPU too: phases in this process, not one worker per method")
    p.add_argument("--accuracy-batches", type=int, default=4, help="general batches for the accuracy table (e)")
    p.add_argument("--accuracy-ranks", default="8,32", help="ranks compared with dense-then-SVD (e)")
    p.add_argument("--accuracy-oversample", default=None,
                   help="oversampling values p compared in (e), e.g. 16,64 (default: --oversample)")
    p.add_argument("--quick", action="store_true", help="fewer batches and repeats (a CPU smoke run)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (and the memory workers); 1 gives stable timings on a shared machine")
    p.add_argument("--json", default=None, help="also write every number to this JSON file")
    a = p.parse_args(argv)
    a.model = a.model or ["default"]
    if a.oversample is None:
        from dba.streaming import DEFAULT_OVERSAMPLE

        a.oversample = DEFAULT_OVERSAMPLE
    if a.energy is not None and a.energy < 0:
        a.energy = None
    a.accuracy_ranks = [int(x) for x in a.accuracy_ranks.split(",") if x]
    a.accuracy_oversample = [int(x) for x in a.accuracy_oversample.split(",") if x] \
        if a.accuracy_oversample else [a.oversample]
    a.memory_ranks = [int(x) for x in a.memory_ranks.split(",") if x] if a.memory_ranks else [a.rank]
    a.memory_checkpointing = [x.strip() for x in a.memory_checkpointing.split(",") if x.strip()]
    if any(x not in ("on", "off") for x in a.memory_checkpointing):
        p.error("--memory-checkpointing takes off, on or off,on")
    if a.quick:
        a.repeats, a.warmup, a.anchor_batches = min(a.repeats, 3), 1, min(a.anchor_batches, 4)
        a.memory_steps, a.accuracy_batches, a.accuracy_ranks = 2, 2, a.accuracy_ranks[:1]
    return a


def environment() -> str:
    import importlib.metadata as md

    def v(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "-"

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    return (f"python {platform.python_version()}, torch {torch.__version__}, transformers {v('transformers')}, "
            f"peft {v('peft')}, bitsandbytes {v('bitsandbytes')}, accelerate {v('accelerate')}; {dev}")


def run_model(spec: str, args, save=lambda info: None) -> tuple[str, dict]:
    """All selected sections on one model; ``save(info)`` after each, so a run cut short keeps what it measured."""
    from . import anchor_size, anchor_time, memory, step_time, streaming
    from .common import build, free

    args.model_spec = spec
    out, info = [], {}
    sec = set(args.sections)
    t0 = time.perf_counter()
    bm = build(spec, quantization=args.quantization, lora_rank=args.lora_rank, device=args.device, seq=args.seq,
               batch=args.batch)
    out.append(f"## {bm.describe()}\n\n(loaded in {bm.load_seconds:.1f} s)\n")
    print(out[-1], flush=True)
    cuda = bm.device.type == "cuda"
    in_process = cuda or args.memory_in_process

    def emit(key: str, text: str, value) -> None:
        """One section's table: kept, printed, and saved with its numbers at once."""
        info[key] = value
        out.append(text)
        print(text, flush=True)
        save(info)

    anchor, anchor_info = None, {}
    if sec & set("abc") or ("d" in sec and not in_process):
        text, anchor, anchor_info = anchor_time.run(bm, args, with_epoch="c" in sec)
        info["c"] = anchor_info
        if "c" in sec:
            emit("c", text, anchor_info)
    if "d" in sec and not in_process:
        emit("d", *memory.run_workers(args, anchor_info["anchor_kind"]))
    if "a" in sec:
        emit("a", *step_time.run(bm, anchor, args))
    if "d" in sec and in_process:
        if anchor is not None:
            anchor.to("cpu")  # off the device, so the phases below measure only what they hold
        free()
        emit("d", *memory.run_in_process(bm, args))
    if "b" in sec:
        emit("b", *anchor_size.run(spec, anchor, anchor_info))
    if "e" in sec:
        emit("e_memory", *streaming.memory_table(args.oversample))
        if bm.real_data or spec in ("llama-micro", "llama-small"):
            emit("e_accuracy", *streaming.accuracy_table(bm, args))
    info["seconds"] = time.perf_counter() - t0
    del bm, anchor
    free()
    return "\n".join(out), info


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        import os

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the memory workers inherit it
    cmd = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    head = f"# DBA benchmarks\n\n`{cmd}`\n\n{environment()}\n"
    print(head, flush=True)
    results = {"command": cmd, "environment": environment(), "models": {}}
    def save(spec, info):
        results["models"][spec] = info
        if args.json:
            from dba.io import atomic_write_json

            atomic_write_json(args.json, results)

    for spec in args.model:
        _, info = run_model(spec, args, save=lambda i, s=spec: save(s, i))
        save(spec, info)
        print(f"[bench] {spec} done in {info['seconds']:.0f} s\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
