"""Stage 2 of DBA: the domain step — global-gradient boost (GGB), dynamic correction (DC), annealed learning (AL).

The three pieces are separate, configurable and switchable (for ablations), and compose in
:meth:`DBAOptimizer.step`, which reads like DESIGN.md §2.2:

    g_D   = p.grad                                   (the domain gradient, after the loop's own clipping)
    ĝ_t   = anchor in trainable space                (fixed in param space; chain rule in weight space)
    ρ_t   = similarity(g_D, ĝ_t)                     (cosine over all trainable parameters together)
    γ_t   = k_0 · decay(t/T)                         (GGB weight)
    g̃     = boost(g_D, ĝ_t, γ_t)                     (convex mix γ·ĝ + (1−γ)·g_D by default)
    λ_t   = clip(f(ρ_t), λ_min, λ_max)               (DC step multiplier)
    lr_t  = η_0 · anneal(t/T)                        (AL)
    AdamW update on g̃ with learning rate lr_t · λ_t

What is *reconstructed* (the paper does not publish it): the DC function f (default 1 + β·(1−ρ)/2, "the step grows as
the gradients disagree"), the k_0 rule for short runs (the paper's k_0 = 200/T exceeds 1 when T < 200), and the exact
annealing curve. Each is a config field or a callable, so other choices plug in.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .config import AnnealConfig, BoostConfig, CorrectionConfig, DBAConfig  # noqa: F401  (moved; re-exported)
from .errors import DBAError, TrainingError
from .global_gradient import GlobalGradient, lora_layers, trainable_parameters

# --------------------------------------------------------------------------------------------------------------------
# The pieces (pure functions: each is tested on its own)


def k0_for(cfg: BoostConfig, total_steps: int) -> float:
    """k_0 from the config: explicit, or c/T capped by k0_max (documented short-run rule)."""
    if cfg.k0 is not None:
        k0 = cfg.k0
    else:
        k0 = cfg.c / max(total_steps, 1)
        if cfg.k0_max is not None:
            k0 = min(k0, cfg.k0_max)
    if not 0.0 <= k0 <= 1.0 and cfg.mode == "convex":
        raise DBAError(f"GGB weight k_0 = {k0:.3g} is outside [0, 1] (c/T with T = {total_steps}); set "
                       "boost.k0 or boost.k0_max (the convex mix needs γ in [0, 1]).")
    return k0


def boost_weight(t: int, total_steps: int, cfg: BoostConfig) -> float:
    """γ_t = k_0 · decay(t/T)."""
    if not cfg.enabled:
        return 0.0
    k0 = k0_for(cfg, total_steps)
    x = min(max(t / max(total_steps, 1), 0.0), 1.0)
    if cfg.decay == "linear":
        return k0 * (1.0 - x)
    if cfg.decay == "constant":
        return k0
    if cfg.decay == "cosine":
        return k0 * 0.5 * (1.0 + math.cos(math.pi * x))
    raise DBAError(f"Unknown boost decay {cfg.decay!r}")


def dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """⟨a, b⟩ over a list of tensors, in fp32."""
    return sum((x.float() * y.float()).sum() for x, y in zip(a, b)) if a else torch.tensor(0.0)


def similarity(g_d: list[torch.Tensor], g_hat: list[torch.Tensor], kind: str = "cosine") -> float:
    """ρ = cos(g_D, ĝ) over all tensors together (0 when either is zero), or ⟨g_D, ĝ⟩/‖ĝ‖² for ``projection``."""
    d = float(dot(g_d, g_hat))
    nh2 = float(dot(g_hat, g_hat))
    if kind == "projection":
        return d / nh2 if nh2 > 0 else 0.0
    nd2 = float(dot(g_d, g_d))
    return d / math.sqrt(nd2 * nh2) if nd2 > 0 and nh2 > 0 else 0.0


def step_scale(rho: float, cfg: CorrectionConfig) -> float:
    """λ = clip(f(ρ), λ_min, λ_max) — DC's step multiplier."""
    if not cfg.enabled:
        return 1.0
    f = cfg.function
    if callable(f):
        lam = float(f(rho))
    elif f == "paper":
        lam = 1.0 + cfg.beta * (1.0 - rho) / 2.0
    elif f == "conservative":
        lam = 1.0 - cfg.beta * (1.0 - rho) / 4.0
    elif f == "off":
        lam = 1.0
    else:
        raise DBAError(f"Unknown DC function {f!r}; use 'paper', 'conservative', 'off' or a callable.")
    return min(max(lam, cfg.lam_min), cfg.lam_max)


def annealed_lr(t: int, total_steps: int, cfg: AnnealConfig) -> float:
    """lr_t = η_0 · anneal(t/T) (with optional warm-up), or η_0 when AL is off."""
    if not cfg.enabled:
        return cfg.lr
    if cfg.warmup_steps and t < cfg.warmup_steps:
        return cfg.lr * (t + 1) / cfg.warmup_steps
    span = max(total_steps - cfg.warmup_steps, 1)
    x = min(max((t - cfg.warmup_steps) / span, 0.0), 1.0)
    if cfg.schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * x))
    elif cfg.schedule == "linear":
        shape = 1.0 - x
    elif cfg.schedule == "constant":
        shape = 1.0
    else:
        raise DBAError(f"Unknown anneal schedule {cfg.schedule!r}")
    floor = cfg.min_lr_ratio
    return cfg.lr * (floor + (1.0 - floor) * shape)


def boost(g_d: list[torch.Tensor], g_hat: list[torch.Tensor], gamma: float, mode: str) -> list[torch.Tensor]:
    """GGB: the boosted gradient g̃ from g_D and the anchor ĝ (same shapes, same order)."""
    if mode == "convex":
        return [gamma * h + (1.0 - gamma) * d for d, h in zip(g_d, g_hat)]
    if mode == "additive":
        return [d + gamma * h for d, h in zip(g_d, g_hat)]
    if mode == "projection":
        c = float(dot(g_d, g_hat))
        nh2 = float(dot(g_hat, g_hat))
        if c >= 0 or nh2 == 0:
            return list(g_d)
        return [d - (c / nh2) * h for d, h in zip(g_d, g_hat)]
    raise DBAError(f"Unknown boost mode {mode!r}; use 'convex', 'additive' or 'projection'.")


# --------------------------------------------------------------------------------------------------------------------
# The anchor in trainable space


class AnchorMap:
    """ĝ_t for each trainable parameter, from a :class:`GlobalGradient`.

    Param space: the stored anchor itself (fixed; rebuilt to dense once). Weight space: for each LoRA layer with
    effective weight W + s·B·A, the chain rule at the *current* A, B gives the gradient of the linearised general loss
    ⟨Ĝ, W + s·B·A⟩: ĝ_B = s·Ĝ·Aᵀ and ĝ_A = s·Bᵀ·Ĝ, computed in factored form (Ĝ is never rebuilt).
    """

    def __init__(self, model, anchor: GlobalGradient, params: list[torch.nn.Parameter]):
        self.anchor = anchor
        self.space = anchor.space
        device = params[0].device if params else torch.device("cpu")
        anchor.to(device)
        named = trainable_parameters(model)
        by_id = {id(p): n for n, p in named.items()}
        self.names = [by_id.get(id(p)) for p in params]
        if self.space == "param":
            self.fixed = [anchor.matrix(n).to(p.dtype) if n in anchor.names() else torch.zeros_like(p)
                          for n, p in zip(self.names, params)]
            return
        # weight space: which (layer, role) each trainable parameter is
        self.roles: list[tuple[str, str, torch.nn.Module] | None] = []
        layer_of = {}
        for lname, layer in lora_layers(model).items():
            for adapter in layer.lora_A:
                layer_of[id(layer.lora_A[adapter].weight)] = (lname, "A", layer, adapter)
                layer_of[id(layer.lora_B[adapter].weight)] = (lname, "B", layer, adapter)
        self.roles = [layer_of.get(id(p)) for p in params]

    @torch.no_grad()
    def __call__(self, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
        if self.space == "param":
            return self.fixed
        out = []
        for p, role in zip(params, self.roles):
            if role is None or role[0] not in self.anchor.names():
                out.append(torch.zeros_like(p))
                continue
            lname, which, layer, adapter = role
            s = float(layer.scaling[adapter])
            a = layer.lora_A[adapter].weight.float()   # [r, in]
            b = layer.lora_B[adapter].weight.float()   # [out, r]
            if which == "B":
                g = s * self.anchor.times_right(lname, a.T)      # s·Ĝ·Aᵀ   [out, r]
            else:
                g = s * self.anchor.times_left(lname, b.T)       # s·Bᵀ·Ĝ   [r, in]
            out.append(g.to(p.dtype))
        return out


# --------------------------------------------------------------------------------------------------------------------
# The optimiser


class DBAOptimizer(torch.optim.AdamW):
    """AdamW that applies Dynamic Boosted Annealing in ``step()``; drops into any loop that calls ``step()``.

    DBA owns the learning rate: every step sets each group's lr to lr_t·λ_t. Use :meth:`scheduler` (a no-op
    scheduler that reports the applied lr) when a framework insists on a scheduler, e.g. the HF ``Trainer``:
    ``Trainer(..., optimizers=(opt, opt.scheduler()))``.

    ``anchor=None`` (or boost and correction both off) gives plain AdamW with the annealed schedule: the ``direct``
    baseline.
    """

    def __init__(self, model, anchor: GlobalGradient | None, config: DBAConfig, params=None):
        self.config = config
        params = list(params) if params is not None else list(trainable_parameters(model).values())
        if not params:
            raise DBAError("The model has no trainable parameters.")
        super().__init__(params, lr=config.anneal.lr, betas=tuple(config.betas), eps=config.eps,
                         weight_decay=config.weight_decay)
        # The step counter and the non-finite counters live in the param group, so state_dict()/load_state_dict()
        # carry them and a resumed run continues the same schedule.
        self.param_groups[0].update(dba_t=0, dba_skipped=0, dba_nonfinite_in_a_row=0)
        needs_anchor = config.boost.enabled or config.correction.enabled
        if needs_anchor:
            # The anchor map and ρ_t need every rank's full LoRA weights and gradients: refuse sharded layouts
            # (FSDP, DeepSpeed ZeRO, DTensor) here, at start, rather than compute ρ_t from shards.
            from .distributed import check_supported
            check_supported(model, self)
        if needs_anchor and anchor is None:
            raise DBAError("DBA with boost or correction on needs a global gradient (anchor); pass one or use "
                           "DBAConfig.direct(...).")
        if anchor is not None:
            anchor.check_compatible(model, weights=False)  # weights: checked when the anchor is loaded
        self.anchor_map = AnchorMap(model, anchor, params) if anchor is not None else None
        self.callbacks: list[Callable[[dict], None]] = []
        self.last_record: dict | None = None
        self.pending_loss: float | None = None
        k0_for(config.boost, config.total_steps)  # fail early on an impossible k_0

    @property
    def t(self) -> int:
        return self.param_groups[0]["dba_t"]

    def _params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.param_groups for p in g["params"]]

    def set_loss(self, loss: float) -> None:
        """Tell the optimiser the loss of the step about to be taken, so it lands in the step record."""
        self.pending_loss = float(loss)

    def add_callback(self, fn: Callable[[dict], None]) -> None:
        """``fn(record)`` is called after every step with the step record (see :meth:`step`)."""
        self.callbacks.append(fn)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            self.pending_loss = float(loss)
        cfg, T = self.config, self.config.total_steps
        group0 = self.param_groups[0]
        t = group0["dba_t"]
        params = self._params()
        with_grad = [p for p in params if p.grad is not None]
        if not with_grad:
            return loss

        # 1. g_D: the domain gradient as the loop left it (accumulated, clipped). Non-finite: skip this step.
        g_d = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if not all(torch.isfinite(g).all() for g in g_d):
            group0["dba_skipped"] += 1
            group0["dba_nonfinite_in_a_row"] += 1
            group0["dba_t"] = t + 1
            self._emit({"step": t, "skipped": True, "loss": self.pending_loss,
                        "skipped_total": group0["dba_skipped"]})
            if group0["dba_nonfinite_in_a_row"] >= cfg.max_nonfinite_in_a_row:
                raise TrainingError(f"{group0['dba_nonfinite_in_a_row']} steps in a row had NaN/inf gradients "
                                    f"(step {t}); lower the learning rate or check the data / dtype.")
            return loss
        group0["dba_nonfinite_in_a_row"] = 0

        # 2. ĝ_t: the global gradient in trainable space (chain rule at the current adapter in weight space).
        g_hat = self.anchor_map(params) if self.anchor_map is not None else None
        norm_d = math.sqrt(float(dot(g_d, g_d)))
        norm_hat = math.sqrt(float(dot(g_hat, g_hat))) if g_hat is not None else 0.0

        # 3. ρ_t: how much the domain step agrees with the general direction.
        rho = similarity(g_d, g_hat, cfg.correction.similarity) if g_hat is not None else 0.0

        # 4. GGB: boost g_D with ĝ (γ_t decays so late steps lean on the domain).
        gamma = boost_weight(t, T, cfg.boost)
        if cfg.boost.enabled and g_hat is not None:
            if cfg.boost.scale == "relative" and norm_hat > 0:
                g_hat = [h * (norm_d / norm_hat) for h in g_hat]
            g_tilde = boost(g_d, g_hat, gamma, cfg.boost.mode)
        else:
            g_tilde = g_d

        # 5. DC: scale the *step* (Adam normalises gradient scale away, so λ must act on the learning rate).
        lam = step_scale(rho, cfg.correction)

        # 6. AL: the annealed learning rate.
        lr = annealed_lr(t, T, cfg.anneal)

        # 7. AdamW on g̃ with lr_t·λ_t; the user's gradients are put back afterwards.
        for g in self.param_groups:
            g["lr"] = lr * lam
        saved = [p.grad for p in params]
        for p, g in zip(params, g_tilde):
            p.grad = g
        try:
            super().step()
        finally:
            for p, g in zip(params, saved):
                p.grad = g
        group0["dba_t"] = t + 1
        self._emit({"step": t, "loss": self.pending_loss, "grad_norm": norm_d, "anchor_norm": norm_hat, "rho": rho,
                    "gamma": gamma, "lam": lam, "lr": lr, "effective_lr": lr * lam, "skipped": False})
        return loss

    def _emit(self, record: dict) -> None:
        self.pending_loss = None
        self.last_record = record
        for fn in self.callbacks:
            fn(record)

    def scheduler(self) -> "AppliedLR":
        """A scheduler that changes nothing and reports the lr DBA applied (for frameworks that want one)."""
        return AppliedLR(self)


class AppliedLR(torch.optim.lr_scheduler.LRScheduler):
    """No-op LR scheduler for a :class:`DBAOptimizer`: ``get_last_lr()`` is the lr_t·λ_t the last step used."""

    def __init__(self, optimizer: DBAOptimizer):
        super().__init__(optimizer)

    def get_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self):
        # read live: frameworks (e.g. the HF Trainer) ask right after optimizer.step(), before scheduler.step()
        return [g["lr"] for g in self.optimizer.param_groups]
