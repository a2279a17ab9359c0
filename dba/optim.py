"""Stage 2 of DBA: the domain step — global-gradient boost (GGB), dynamic correction (DC), annealed learning (AL).

The three pieces are separate, configurable and switchable (for ablations): each is a small transform of
:mod:`dba.transforms`, chained from the config, and :meth:`DBAOptimizer.step` runs the chain around AdamW. For the
paper's DBA it computes, in order (DESIGN.md §2.2):

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
annealing curve. Each is a config field or a callable, so other choices plug in. The Adam-aware variants and the
EWC / L2-SP baselines are further transforms (docs/algorithm.md has the method → chain table); this module holds the
anchor map (ĝ in trainable space, the linearised general loss, the EWC gradient) and the optimiser.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .config import AnnealConfig, BoostConfig, CorrectionConfig, DBAConfig, PenaltyConfig  # noqa: F401  (re-exported)
from .errors import DBAError, TrainingError
from .global_gradient import GlobalGradient, lora_layers, trainable_parameters
from .transforms import (StepState, annealed_lr, boost, boost_weight, build_chain, clip_factor,  # noqa: F401
                         dot, k0_for, similarity, step_scale)

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
        self._fixed_norm2: float | None = None
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

    def norm2(self, g_hat: list[torch.Tensor]) -> float:
        """‖ĝ_t‖² of what :meth:`__call__` returned: computed once for the fixed param-space anchor, every step in
        weight space (where ĝ_t follows the adapter)."""
        if self.space == "param" and g_hat is self.fixed:
            if self._fixed_norm2 is None:
                self._fixed_norm2 = float(dot(self.fixed, self.fixed))
            return self._fixed_norm2
        return float(dot(g_hat, g_hat))

    # ---- the linearised general loss (budgeted boost) ---------------------------------------------------------
    @torch.no_grad()
    def inner(self, params: list[torch.nn.Parameter]) -> float:
        """The linearised general loss up to a constant: ⟨ĝ, θ⟩ (param space) or Σ_l s·⟨Ĝ_l, B_l·A_l⟩ (weight space,
        in factored form: s·Σ (Bᵀ·Ĝ)⊙A). Its decrease from θ_0 is the general gain ⟨ĝ, θ_0 − θ⟩."""
        if self.space == "param":
            return float(dot(self.fixed, params))
        total = torch.zeros((), dtype=torch.float64)
        for p, role in zip(params, self.roles):
            if role is None or role[1] != "A" or role[0] not in self.anchor.names():
                continue
            lname, _, layer, adapter = role
            s = float(layer.scaling[adapter])
            a = p.float()
            b = layer.lora_B[adapter].weight.float()
            total = total + s * (self.anchor.times_left(lname, b.T) * a).sum().double().cpu()
        return float(total)

    # ---- EWC ------------------------------------------------------------------------------------------------------
    def ewc_gradient(self, params: list[torch.nn.Parameter], strength: float, normalize: bool = True):
        """A function params -> λ·∂/∂θ [½·Σ F⊙(θ − θ_0)²] for each trainable parameter, θ_0 = the values now.

        F is the anchor's diagonal Fisher (Adafactor-factored: F̂ = r·cᵀ/Σr per matrix, dense per vector), divided by
        its mean over all entries when ``normalize``. Param space: λ·F̂⊙(θ − θ_0). Weight space (LoRA), on the effective
        weight change ΔW = s·(B·A − B_0·A_0): M = λ·F̂⊙ΔW, ∂/∂B = s·M·Aᵀ, ∂/∂A = s·Bᵀ·M, with M = λ·s/Σr ·
        (r⊙[B, −B_0])·([A; A_0]⊙c) kept in factored form (rank ≤ 2r; ΔW is never formed)."""
        a = self.anchor
        if not a.has_fisher():
            raise DBAError("EWC needs the diagonal Fisher in the anchor file, and this anchor has none (it was made "
                           "before the Fisher was stored). Recompute it with `dba anchor`.")
        origin = [p.detach().clone() for p in params]
        mean = a.fisher_mean() if normalize else 1.0
        lam = strength / mean if mean > 0 else 0.0
        if self.space == "param":
            def grads(ps):
                out = []
                for p, o, n in zip(ps, origin, self.names):
                    d = (p.detach() - o).float()
                    if n in a.fisher_factors:
                        r, c = a.fisher_factors[n]
                        out.append((lam / float(r.sum().clamp_min(1e-30))) * r[:, None] * d * c[None, :])
                    elif n in a.fisher_dense:
                        out.append(lam * a.fisher_dense[n] * d)
                    else:
                        out.append(torch.zeros_like(d))
                return [g.to(p.dtype) for g, p in zip(out, ps)]
            return grads

        index = {id(p): i for i, p in enumerate(params)}
        pairs = []   # (layer name, s, index of A, index of B, A_0, B_0)
        for i, role in enumerate(self.roles):
            if role is None or role[1] != "A" or role[0] not in a.fisher_factors:
                continue
            lname, _, layer, adapter = role
            j = index.get(id(layer.lora_B[adapter].weight))
            if j is None:
                continue
            pairs.append((lname, float(layer.scaling[adapter]), i, j, origin[i].float(), origin[j].float()))

        def grads(ps):
            out = [torch.zeros_like(p) for p in ps]
            for lname, s, i, j, a0, b0 in pairs:
                r, c = a.fisher_factors[lname]
                A, B = ps[i].detach().float(), ps[j].detach().float()
                k = lam * s / float(r.sum().clamp_min(1e-30))
                left = r[:, None] * torch.cat([B, -b0], dim=1)          # out × 2r
                right = torch.cat([A, a0], dim=0) * c[None, :]           # 2r × in      M = k·left·right
                out[j] = (s * k * (left @ (right @ A.T))).to(ps[j].dtype)    # s·M·Aᵀ
                out[i] = (s * k * ((B.T @ left) @ right)).to(ps[i].dtype)    # s·Bᵀ·M
            return out
        return grads


# --------------------------------------------------------------------------------------------------------------------
# The optimiser


class DBAOptimizer(torch.optim.AdamW):
    """AdamW that applies Dynamic Boosted Annealing in ``step()``; drops into any loop that calls ``step()``.

    The step is a chain of small gradient transforms (:mod:`dba.transforms`) built from the config —
    similarity → anchor rescale → boost weight → boost → step scale (DC) → anneal — then the AdamW update, then any
    update-space transforms. ``self.chain`` shows it (``str(opt.chain)``).

    DBA owns the learning rate: every step sets each group's lr to lr_t·λ_t. Use :meth:`scheduler` (a no-op
    scheduler that reports the applied lr) when a framework insists on a scheduler, e.g. the HF ``Trainer``:
    ``Trainer(..., optimizers=(opt, opt.scheduler()))``.

    ``anchor=None`` (or boost and correction both off) gives plain AdamW with the annealed schedule: the ``direct``
    baseline. θ_0 for the budget, EWC and L2-SP is the trainable parameters' values when the optimiser is built (build
    it before loading a checkpoint's weights, as :func:`dba.train.finetune` does, so a resumed run keeps its θ_0).
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
        needs_anchor = config.boost.enabled or config.correction.enabled or config.penalty.kind == "ewc"
        if needs_anchor:
            # The anchor map and ρ_t need every rank's full LoRA weights and gradients: refuse sharded layouts
            # (FSDP, DeepSpeed ZeRO, DTensor) here, at start, rather than compute ρ_t from shards.
            from .distributed import check_supported
            check_supported(model, self)
        if needs_anchor and anchor is None:
            what = "EWC" if config.penalty.kind == "ewc" else "DBA with boost or correction on"
            raise DBAError(f"{what} needs a global gradient (anchor); pass one or use DBAConfig.direct(...).")
        if anchor is not None:
            anchor.check_compatible(model, weights=False)  # weights: checked when the anchor is loaded
        self.anchor_map = AnchorMap(model, anchor, params) if anchor is not None else None
        self.chain = build_chain(config, has_anchor=self.anchor_map is not None, anchor_map=self.anchor_map,
                                 params=params)
        self.callbacks: list[Callable[[dict], None]] = []
        self.last_record: dict | None = None
        self.pending_loss: float | None = None
        self._clip: tuple[float, float | None] = (1.0, None)
        k0_for(config.boost, config.total_steps)  # fail early on an impossible k_0

    @property
    def t(self) -> int:
        return self.param_groups[0]["dba_t"]

    def _params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.param_groups for p in g["params"]]

    def set_loss(self, loss: float) -> None:
        """Tell the optimiser the loss of the step about to be taken, so it lands in the step record."""
        self.pending_loss = float(loss)

    def note_clip(self, raw_norm: float, max_norm: float) -> float:
        """Tell the optimiser the loop clipped g_D (raw norm ``raw_norm`` to at most ``max_norm``) before this step;
        returns the factor applied, min(1, max_norm/(raw_norm + 1e-6)) as ``clip_grad_norm_`` computes it. Used by
        the clip-consistent boost (``boost.clip``); harmless otherwise."""
        c = clip_factor(float(raw_norm), float(max_norm))
        self._clip = (c, float(max_norm))
        return c

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
        clip, max_norm = self._clip
        self._clip = (1.0, None)  # a clip report is for one step

        # 1. g_D: the domain gradient as the loop left it (accumulated, clipped). Non-finite: skip this step.
        #    ‖g_D‖² is finite exactly when every entry is, unless finite entries overflow it: only then look at each.
        g_d = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        norm2_d = float(dot(g_d, g_d))
        if not math.isfinite(norm2_d) and not all(torch.isfinite(g).all() for g in g_d):
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
        norm2_hat = self.anchor_map.norm2(g_hat) if g_hat is not None else 0.0
        norm_d, norm_hat = math.sqrt(norm2_d), math.sqrt(norm2_hat)
        s = StepState(t=t, total_steps=T, params=params, g_d=g_d, g_hat=g_hat, g=g_d, norm_d=norm_d,
                      norm_hat=norm_hat, norm2_d=norm2_d, norm2_hat=norm2_hat, clip=clip, max_norm=max_norm)

        # 3-6. The gradient transforms, in order (for the paper's DBA):
        #   ρ_t = cos(g_D, ĝ_t)                 how much the domain step agrees with the general direction
        #   γ_t = k_0·(1 − t/T)                 the boost weight decays, so late steps lean on the domain
        #   g̃ = γ_t·ĝ_t + (1 − γ_t)·g_D          GGB
        #   λ_t = clip(1 + β(1 − ρ_t)/2)         DC: scales the *step* (Adam normalises gradient scale away)
        #   lr_t = η_0·(1 + cos(π t/T))/2        AL
        for transform in self.chain.gradient:
            transform(s, self)

        # 7. AdamW on g̃ with lr_t·λ_t; the user's gradients are put back afterwards.
        for g in self.param_groups:
            g["lr"] = s.lr * s.lam
        saved = [p.grad for p in params]
        for p, g in zip(params, s.g):
            p.grad = g
        try:
            super().step()
        finally:
            for p, g in zip(params, saved):
                p.grad = g

        # 8. Update-space transforms (boost or projection after Adam's preconditioning), if the method has any.
        for transform in self.chain.update:
            transform(s, self)
        group0["dba_t"] = t + 1
        record = {"step": t, "loss": self.pending_loss, "grad_norm": norm_d, "anchor_norm": norm_hat, "rho": s.rho,
                  "gamma": s.gamma, "lam": s.lam, "lr": s.lr, "effective_lr": s.lr * s.lam, "skipped": False}
        if cfg.boost.clip != "none":
            record["clip_factor"] = clip
        record.update(s.extra)
        self._emit(record)
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
