"""What every benchmark section shares: the models (the embedded default, the tiny test model, random-init Llama
configs of chosen sizes), their batches, timing with device synchronisation, peak memory, and table printing.

Random-init configs need no weights from anywhere: speed and memory do not depend on the weight values. They are
written once as a normal checkpoint (with a minimal tokenizer) under ``$DBA_CACHE_DIR/bench/`` and loaded through
:func:`dba.models.load_model`, so 4-bit quantisation, LoRA and everything else take exactly the library's path.
"""
from __future__ import annotations

import gc
import os
import re
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from dba.config import ANCHOR_SEED_OFFSET, FinetuneConfig, LoraSettings
from dba.io import atomic_dir
from dba.models import LoadedModel, cache_dir, load_model

RUN = FinetuneConfig()
"""The library's defaults (:mod:`dba.config`): a benchmark's LoRA rank, batch, anchor batches and energy unless
given."""

# --------------------------------------------------------------------------------------------------------------------
# Models

PRESETS: dict[str, dict] = {
    # a smoke-test Llama (seconds on a CPU)
    "llama-micro": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=32000),
    # a CPU-sized Llama (~13 M parameters besides the 33 M of embeddings)
    "llama-small": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8,
                        num_key_value_heads=8, vocab_size=32000),
    # TinyLlama-1.1B's shapes
    "llama-1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                     num_key_value_heads=4, vocab_size=32000),
    # Llama-2-7B's shapes
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32000),
}
"""Random-init Llama configs by name (``--model llama-1b``)."""


def _minimal_tokenizer(folder: Path) -> None:
    """A 4-token word-level tokenizer: the random-init models are fed random ids, but load_model wants one."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>")),
                                  unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.save_pretrained(folder)


def random_llama_checkpoint(preset: str, seed: int = 0) -> Path:
    """The folder of a random-init Llama of ``preset``'s shapes (bf16 weights), written once."""
    out = cache_dir() / "bench" / f"{preset}-s{seed}"
    if (out / "config.json").exists():
        return out
    from transformers import LlamaConfig, LlamaForCausalLM

    def build(tmp: Path) -> None:
        cfg = LlamaConfig(**PRESETS[preset], max_position_embeddings=4096, tie_word_embeddings=False,
                          bos_token_id=1, eos_token_id=2, pad_token_id=3)
        torch.manual_seed(seed)
        # initialise on the GPU when there is one (seconds instead of minutes for 7B), in bf16
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.device(device):
            model = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
        model.save_pretrained(tmp)
        _minimal_tokenizer(tmp)
        del model

    t0 = time.perf_counter()
    path = atomic_dir(out, build, replace=False)
    print(f"[bench] wrote random-init {preset} to {path} in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


@dataclass
class BenchModel:
    """A loaded model plus the batches the sections use."""

    spec: str
    lm: LoadedModel
    seq: int
    batch: int
    real_data: bool
    """True: bundled corpora (general for the anchor, finance for steps); False: random token ids."""
    load_seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def model(self):
        return self.lm.model

    @property
    def device(self) -> torch.device:
        return self.lm.device

    def _random(self, n: int, seed: int) -> list[dict]:
        g = torch.Generator().manual_seed(seed)
        vocab = int(self.lm.model.config.vocab_size)
        out = []
        for _ in range(n):
            ids = torch.randint(4, vocab, (self.batch, self.seq), generator=g)
            out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
        return out

    def _corpus(self, name: str, n: int, seed: int) -> list[dict]:
        from dba.data import batch_plan, bundled_path, collate, load_corpus

        corpus = load_corpus(bundled_path(name, "train"), self.lm.tokenizer, self.seq)
        plan = batch_plan(len(corpus), self.batch, n, seed)
        return [collate([corpus.examples[i] for i in idx], self.lm.tokenizer.pad_token_id) for idx in plan]

    def general_batches(self, n: int, seed: int = ANCHOR_SEED_OFFSET) -> list[dict]:
        """Batches for the anchor (and for the plain epoch it is compared with)."""
        return self._corpus("general", n, seed) if self.real_data else self._random(n, seed)

    def domain_batches(self, n: int, seed: int = 0) -> list[dict]:
        """Batches for the fine-tuning steps."""
        return self._corpus("finance", n, seed) if self.real_data else self._random(n, seed + 1)

    def describe(self) -> str:
        s = self.lm.summary()
        q = self.lm.quantization
        return (f"{self.spec}: {s['parameters'] / 1e6:.0f} M parameters, {q if q != 'none' else 'fp32/bf16'}, "
                f"LoRA r={self.lm.lora.rank if self.lm.lora else '-'} ({s['trainable_parameters'] / 1e6:.2f} M "
                f"trainable), {self.device}, batch {self.batch} x {'<=' if self.real_data else ''}{self.seq} tokens, "
                f"{'bundled corpora' if self.real_data else 'random tokens'}")


def build(spec: str, *, quantization: str = "4bit", lora_rank: int = RUN.lora.rank, device: str = "auto",
          seq: int | None = None, batch: int = RUN.batch_size, dtype: str | None = None) -> BenchModel:
    """Load ``spec`` ("default", "tiny", a preset name, or any name load_model understands) with LoRA."""
    t0 = time.perf_counter()
    real = spec in ("default", "tiny") or not spec.startswith("llama-")
    name = str(random_llama_checkpoint(spec)) if spec in PRESETS else spec
    torch.manual_seed(0)
    lm = load_model(name, quantization=quantization, lora=LoraSettings(rank=lora_rank),  # α = 2 × rank
                    device=device, dtype=dtype)
    lm.model.train()
    seq = seq or (256 if real else 512)
    return BenchModel(spec=spec, lm=lm, seq=seq, batch=batch, real_data=real,
                      load_seconds=time.perf_counter() - t0)


def set_checkpointing(bm: BenchModel, on: bool) -> None:
    """Switch gradient (activation) checkpointing of the loaded model on or off (non-reentrant, as transformers
    recommends). It acts in train mode only: the anchor pass runs in eval mode and keeps its activations."""
    from dba.models import base_model

    base = base_model(bm.model)
    if on:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_disable()
    base.config.use_cache = False


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def tokens_in(batch: dict) -> int:
    return int(batch["attention_mask"].sum())


# --------------------------------------------------------------------------------------------------------------------
# Timing


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Clock:
    """Wall-clock seconds between marks, with the device synchronised at each mark (GPU work is asynchronous)."""

    def __init__(self, device):
        self.device = device
        sync(device)
        self.t = time.perf_counter()

    def lap(self) -> float:
        sync(self.device)
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return dt


def median(xs) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------------------------------------------------
# Memory


def _status_kb(field_name: str) -> int | None:
    try:
        m = re.search(rf"{field_name}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
        return int(m.group(1)) if m else None
    except OSError:
        return None


class PeakMemory:
    """Peak memory of a phase: CPU resident set (VmHWM, reset through /proc/self/clear_refs where the kernel allows;
    else the process's lifetime peak from getrusage) and, on CUDA, the allocator's max allocated bytes."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.cpu_resettable = False

    def reset(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.cpu_resettable = True
        except OSError:
            self.cpu_resettable = False
        self.rss_start_mb = (_status_kb("VmRSS") or 0) / 1024
        self.cuda_start_mb = torch.cuda.memory_allocated() / 2**20 if self.device.type == "cuda" else None

    def read(self) -> dict:
        sync(self.device)
        hwm = _status_kb("VmHWM")
        peak_rss = hwm / 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out = {"rss_peak_mb": peak_rss, "rss_start_mb": self.rss_start_mb,
               "rss_note": "" if self.cpu_resettable else " (process peak)"}
        if self.device.type == "cuda":
            out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
            out["cuda_reserved_peak_mb"] = torch.cuda.max_memory_reserved() / 2**20
            out["cuda_start_mb"] = self.cuda_start_mb
        return out


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------------------------
# Tables


def table(title: str, columns: list[str], rows: list[list], note: str | None = None) -> str:
    """A Markdown table (what bench/README.md pastes)."""
    def fmt(v):
        if isinstance(v, float):
            if v != v:
                return "–"
            a = abs(v)
            return f"{v:.3g}" if a < 0.01 or a >= 1000 else (f"{v:.3f}" if a < 10 else f"{v:.1f}")
        return str(v)

    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def train_step(model, opt, batch: dict, max_grad_norm: float | None = 1.0) -> float:
    """One optimiser step as dba.train runs it: forward, backward, clip, step, zero_grad. Returns the loss."""
    loss = model(**batch).loss
    loss.backward()
    if max_grad_norm is not None:
        params = [p for g in opt.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if hasattr(opt, "set_loss"):
        opt.set_loss(float(loss.detach()))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


Section = Callable[..., str]
