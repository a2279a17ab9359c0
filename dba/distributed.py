"""Multi-GPU DBA through Accelerate (data parallel, DDP): what is supported, and the two things DBA adds.

DBA under data parallelism needs only two things beyond what DDP already does:

1. **Anchor estimation averages across ranks.** Each rank runs zero-learning-rate training over its own share of the
   general corpus; at the end the running estimates are averaged, weighted by each rank's batch count
   (:func:`average_estimate`, called by :func:`dba.global_gradient.estimate_global_gradient` whenever a
   ``torch.distributed`` group of more than one rank is initialised). With the ``mean`` estimator the result is the
   exact mean over every batch of every rank; the streaming sketches are linear in Ĝ, so they are averaged the same
   way and every rank reconstructs the same factors. Every rank ends with the same anchor.
2. **Nothing in the optimiser.** Under DDP the gradients reaching :class:`dba.optim.DBAOptimizer` are already
   all-reduced (the global-batch mean), the LoRA weights are identical on every rank (DDP broadcasts them at wrap
   time) and the anchor is replicated, so every rank computes the same ĝ_t, ρ_t, γ_t, λ_t and the same update.

Not supported (they shard parameters, gradients or the optimiser, so ρ_t, the anchor map ĝ_B = s·Ĝ·Aᵀ and the step
would be computed from shards and silently differ between ranks): FSDP (1 and 2), DeepSpeed ZeRO (any stage; DeepSpeed
also replaces the optimiser with its own flat-partition one), Megatron-LM, tensor/sequence parallel layouts
(DTensor parameters), and one model split over several devices (``device_map`` across GPUs, CPU offload).
:func:`check_supported` raises :class:`UnsupportedParallelismError` for each of them at start. QLoRA of 7B-class
models fits on one 24 GB GPU, so plain DDP covers multi-GPU fine-tuning of the models this project targets. See
docs/scaling.md for ``accelerate launch``.
"""
from __future__ import annotations

import os
from typing import Iterable

import torch

from .errors import DBAError


class UnsupportedParallelismError(DBAError):
    """A parallel layout DBA cannot run under correctly (FSDP, DeepSpeed ZeRO, Megatron-LM, DTensor sharding)."""


_ADVICE = ("DBA supports single-device and data-parallel (DDP) runs: launch with `accelerate launch` and a plain "
           "multi-GPU config (distributed_type: MULTI_GPU), see docs/scaling.md.")


# --------------------------------------------------------------------------------------------------------------------
# Where we are


def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """Ranks in the default process group (1 when torch.distributed is not initialised)."""
    return torch.distributed.get_world_size() if is_initialized() else 1


def rank() -> int:
    return torch.distributed.get_rank() if is_initialized() else 0


def unwrap_model(model):
    """The plain model under DDP / DataParallel / ``torch.compile`` wrappers (PEFT wrapping is kept)."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(getattr(model, "_orig_mod"), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


# --------------------------------------------------------------------------------------------------------------------
# What is supported


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def unsupported_reason(model=None, optimizer=None) -> str | None:
    """Why DBA cannot run in this process's parallel layout, or None when it can."""
    # 1. what `accelerate launch` was configured with (set before any model is wrapped)
    if _truthy("ACCELERATE_USE_FSDP"):
        return "this process was launched with FSDP (ACCELERATE_USE_FSDP)"
    if _truthy("ACCELERATE_USE_DEEPSPEED"):
        return "this process was launched with DeepSpeed (ACCELERATE_USE_DEEPSPEED)"
    if _truthy("ACCELERATE_USE_MEGATRON_LM"):
        return "this process was launched with Megatron-LM (ACCELERATE_USE_MEGATRON_LM)"
    # 2. an Accelerator already built in this process
    try:
        from accelerate.state import AcceleratorState

        if AcceleratorState._shared_state:  # initialised: reading distributed_type is safe
            kind = str(getattr(AcceleratorState(), "distributed_type", "")).split(".")[-1]
            if kind in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
                return f"the Accelerator runs with distributed_type {kind}"
    except Exception:  # accelerate missing or not initialised: nothing to read
        pass
    # 3. the objects themselves
    if model is not None:
        for m in model.modules() if isinstance(model, torch.nn.Module) else [model]:
            cls = type(m)
            names = {c.__name__ for c in cls.__mro__}
            if "FullyShardedDataParallel" in names or "FSDPModule" in names:
                return f"the model is wrapped with FSDP ({cls.__name__})"
            if "DeepSpeedEngine" in names or "PipelineEngine" in names:
                return f"the model is a DeepSpeed engine ({cls.__name__})"
        if isinstance(model, torch.nn.Module):
            devices = set()
            for name, p in model.named_parameters():
                if _is_sharded(p):
                    return f"parameter {name} is sharded ({type(p).__name__}{'/ZeRO-3' if hasattr(p, 'ds_id') else ''})"
                if p.requires_grad:
                    devices.add(p.device)
            if len(devices) > 1:
                return (f"the trainable parameters are spread over {len(devices)} devices "
                        f"({', '.join(sorted(map(str, devices)))}; a device_map across GPUs or CPU offload)")
    if optimizer is not None:
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
        for o in (optimizer, inner):
            names = {c.__name__ for c in type(o).__mro__}
            if any("DeepSpeed" in n or "ZeroOptimizer" in n for n in names):
                return f"the optimiser is DeepSpeed's ({type(o).__name__})"
        for group in getattr(inner, "param_groups", []):
            for p in group["params"]:
                if _is_sharded(p):
                    return "the optimiser holds sharded parameters (FSDP flat parameters or DTensors)"
    return None


def _is_sharded(p) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except Exception:  # very old torch
        DTensor = ()
    return (isinstance(p, DTensor) if DTensor else False) or hasattr(p, "ds_id") or \
        bool(getattr(p, "_is_flat_param", False)) or type(p).__name__ == "FlatParameter"


def check_supported(model=None, optimizer=None) -> None:
    """Raise :class:`UnsupportedParallelismError` when DBA would run under FSDP, DeepSpeed, Megatron-LM or sharded
    (DTensor) parameters — layouts where the anchor map and ρ_t would be computed from shards."""
    why = unsupported_reason(model, optimizer)
    if why:
        raise UnsupportedParallelismError(
            f"DBA cannot run here: {why}. The anchor map ĝ_B = s·Ĝ·Aᵀ and the similarity ρ_t need every rank's "
            f"full LoRA weights and gradients, which sharding splits up. {_ADVICE}")


def prepare(accelerator, model, optimizer, *others):
    """``accelerator.prepare(model, optimizer, *others)`` after checking that DBA supports the Accelerator's layout
    (a clear error for FSDP / DeepSpeed / Megatron-LM before anything is wrapped)."""
    kind = str(getattr(accelerator, "distributed_type", "")).split(".")[-1]
    if kind in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise UnsupportedParallelismError(f"DBA cannot run under distributed_type {kind}: the anchor map and the "
                                          f"similarity need unsharded LoRA weights and gradients. {_ADVICE}")
    check_supported(model, optimizer)
    return accelerator.prepare(model, optimizer, *others)


# --------------------------------------------------------------------------------------------------------------------
# Averaging the anchor estimate


def _state_tensors(store: dict) -> list[torch.Tensor]:
    out = []
    for t in store.values():
        out.extend(t.tensors() if hasattr(t, "tensors") else [t])
    return out


@torch.no_grad()
def average_estimate(store: dict, batches: int, tokens: int, group=None) -> tuple[int, int]:
    """Replace each rank's running estimate in ``store`` (dense tensors or streaming sketches) by the mean over all
    ranks weighted by their batch counts: Σ_r n_r·m_r / Σ_r n_r. Returns (total batches, total tokens).

    A rank with no batches contributes nothing (weight 0); the same call must be made on every rank."""
    counts = torch.tensor([float(batches), float(tokens)], dtype=torch.float64)
    tensors = _state_tensors(store)
    backend_device = tensors[0].device if tensors else torch.device("cpu")
    if torch.distributed.get_backend(group) == "nccl" and backend_device.type != "cuda":
        backend_device = torch.device("cuda", torch.cuda.current_device())
    counts = counts.to(backend_device)
    torch.distributed.all_reduce(counts, group=group)
    total_batches, total_tokens = int(round(float(counts[0]))), int(round(float(counts[1])))
    if total_batches == 0:
        raise DBAError("No rank saw a general batch: the global gradient needs at least one batch.")
    weight = batches / total_batches
    for t in tensors:
        moved = t.to(backend_device) if t.device != backend_device else t
        moved.mul_(weight)
        torch.distributed.all_reduce(moved, group=group)
        if moved is not t:
            t.copy_(moved)
    return total_batches, total_tokens


def mean_across_ranks(values: Iterable[float], group=None) -> list[float]:
    """The mean over ranks of a few floats (e.g. the step loss for logging); the values themselves when not
    distributed."""
    values = [float(v) for v in values]
    if world_size() == 1:
        return values
    device = torch.device("cuda", torch.cuda.current_device()) \
        if torch.distributed.get_backend(group) == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, group=group)
    return (t / world_size()).tolist()
