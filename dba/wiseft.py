"""WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", 2022): interpolate the base and the tuned
weights after any run, θ_α = (1 − α)·θ_0 + α·θ_ft — a free curve between the base model (α = 0) and the run (α = 1),
no training.

- LoRA: the base is the frozen W (no adapter), the tuned weight W + s·B·A, so θ_α = W + α·s·B·A: the adapter's scale
  s = alpha/rank is multiplied by α (exact, nothing is copied).
- Full fine-tuning: each trainable parameter is set to (1 − α)·θ_0 + α·θ_ft from the base state, then restored.

:func:`interpolated` yields the model at one α (restored on exit); :func:`curve` scores it at several.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch

from .errors import DBAError
from .global_gradient import lora_layers

DEFAULT_ALPHAS = (0.25, 0.5, 0.75)
"""The points of the free curve the study scores (α = 0 is the base model, α = 1 the run itself)."""


def interpolate(base: torch.Tensor, tuned: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 − α)·θ_0 + α·θ_ft (α = 0 gives θ_0 and α = 1 gives θ_ft exactly)."""
    return (1.0 - alpha) * base + alpha * tuned


@contextlib.contextmanager
def interpolated(model, alpha: float, base_state: dict[str, torch.Tensor] | None = None) -> Iterator:
    """The model with weights θ_α = (1 − α)·θ_0 + α·θ_ft for the duration of the block; the tuned weights are put back
    afterwards (also on error).

    LoRA models: every adapter's scale is multiplied by α (θ_0 = the frozen base). Full fine-tuning: ``base_state``
    (parameter name -> θ_0, as in ``model.named_parameters()``) is required; every parameter whose name it holds is
    interpolated."""
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise DBAError(f"WiSE-FT α must be in [0, 1] (got {alpha}).")
    layers = lora_layers(model)
    if layers:
        saved = [(layer, dict(layer.scaling)) for layer in layers.values()]
        try:
            for layer, scales in saved:
                for adapter, s in scales.items():
                    layer.scaling[adapter] = alpha * s
            yield model
        finally:
            for layer, scales in saved:
                layer.scaling.update(scales)
        return
    if base_state is None:
        raise DBAError("WiSE-FT of a full fine-tune needs the base weights θ_0 (base_state = "
                       "{name: tensor} from the base model's named_parameters()).")
    params = dict(model.named_parameters())
    missing = [n for n in base_state if n not in params]
    if missing:
        raise DBAError(f"base_state names {len(missing)} tensors the model does not have (e.g. {missing[:3]}).")
    tuned = {}
    try:
        with torch.no_grad():
            for n, theta0 in base_state.items():
                p = params[n]
                tuned[n] = p.detach().clone()
                p.copy_(interpolate(theta0.to(p.device, p.dtype), tuned[n], alpha))
        yield model
    finally:
        with torch.no_grad():
            for n, t in tuned.items():
                params[n].copy_(t)


def curve(model, score: Callable[[object], dict], alphas: Iterable[float] = DEFAULT_ALPHAS,
          base_state: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """``score(model)`` at every α: [{"alpha": α, **scores}, ...] (e.g. ``score`` = S_G/S_D of the study's eval)."""
    out = []
    for a in alphas:
        with interpolated(model, a, base_state) as m:
            out.append({"alpha": float(a), **score(m)})
    return out
