"""The DBA step as a chain of small gradient transforms (in the spirit of Optax).

One optimiser step works on a :class:`StepState`: the domain gradient g_D as the loop left it, the anchor ĝ_t in
trainable space, and the gradient g that AdamW will see (it starts as g_D). Each transform reads and writes a few
fields of it — the similarity ρ_t, the boost weight γ_t, the DC multiplier λ_t, the annealed lr_t, g itself — and
nothing else. :func:`build_chain` turns a :class:`dba.config.DBAConfig` into the ordered chain; the optimiser
(:class:`dba.optim.DBAOptimizer`) runs the ``gradient`` stage, AdamW with lr_t·λ_t on g, then the ``update`` stage
(transforms that act on the parameters after Adam's preconditioning).

    gradient stage                                       update stage (after AdamW)
    similarity → anchor rescale → boost weight (→ budget)    update boost (ĝ preconditioned by Adam's √v̂)
    → boost / projection → clip → penalty (EWC, L2-SP)       update projection (A-GEM on the update)
    → step scale (DC) → anneal

The pure functions (``similarity``, ``boost``, ``boost_weight``, ``step_scale``, ``annealed_lr``) are the formulas;
the transform classes are thin, named wrappers that put them in order. Today's methods (dba, its ablations, the
projection and relative variants, direct, mixture) run exactly the float operations the monolithic step ran, so they
are bit-identical to it (tests/test_methods.py checks that against a copy of the old step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from .errors import DBAError

if TYPE_CHECKING:  # pragma: no cover
    from .config import AnnealConfig, BoostConfig, CorrectionConfig, DBAConfig

# --------------------------------------------------------------------------------------------------------------------
# The formulas (pure functions: each is tested on its own)


def k0_for(cfg: "BoostConfig", total_steps: int) -> float:
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


def boost_weight(t: int, total_steps: int, cfg: "BoostConfig") -> float:
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


def similarity(g_d: list[torch.Tensor], g_hat: list[torch.Tensor], kind: str = "cosine", *,
               nd2: float | None = None, nh2: float | None = None) -> float:
    """ρ = cos(g_D, ĝ) over all tensors together (0 when either is zero), or ⟨g_D, ĝ⟩/‖ĝ‖² for ``projection``.
    ``nd2``/``nh2``: ‖g_D‖², ‖ĝ‖² when the caller has them already (each is a full pass over every weight)."""
    d = float(dot(g_d, g_hat))
    nh2 = float(dot(g_hat, g_hat)) if nh2 is None else nh2
    if kind == "projection":
        return d / nh2 if nh2 > 0 else 0.0
    nd2 = float(dot(g_d, g_d)) if nd2 is None else nd2
    return d / math.sqrt(nd2 * nh2) if nd2 > 0 and nh2 > 0 else 0.0


def step_scale(rho: float, cfg: "CorrectionConfig") -> float:
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


def annealed_lr(t: int, total_steps: int, cfg: "AnnealConfig") -> float:
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
        # γ·ĝ + (1 − γ)·g_D as one fused op (d + γ·(h − d)): one pass and one new tensor per weight instead of
        # three; equal up to float rounding
        return [torch.lerp(d, h.to(d.dtype), gamma) for d, h in zip(g_d, g_hat)]
    if mode == "additive":
        return [d + gamma * h for d, h in zip(g_d, g_hat)]
    if mode == "projection":
        return project_off(g_d, g_hat)
    raise DBAError(f"Unknown boost mode {mode!r}; use 'convex', 'additive' or 'projection'.")


def project_off(v: list[torch.Tensor], g_hat: list[torch.Tensor]) -> list[torch.Tensor]:
    """A-GEM: when ⟨v, ĝ⟩ < 0 remove the component of v along ĝ, v − ⟨v,ĝ⟩/‖ĝ‖²·ĝ; else v unchanged."""
    c = float(dot(v, g_hat))
    nh2 = float(dot(g_hat, g_hat))
    if c >= 0 or nh2 == 0:
        return list(v)
    return [d - (c / nh2) * h for d, h in zip(v, g_hat)]


def clip_factor(raw_norm: float, max_norm: float) -> float:
    """The factor ``torch.nn.utils.clip_grad_norm_`` multiplies gradients by: min(1, max_norm / (‖g‖ + 1e-6))."""
    return min(1.0, max_norm / (raw_norm + 1e-6))


def fisher_matrix(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """The Adafactor-style rank-one reconstruction of a non-negative matrix from its row and column sums:
    F̂ = r·cᵀ / Σr (keeps every row sum and column sum of F exactly). For tests and small layers."""
    return torch.outer(row, col) / row.sum().clamp_min(1e-30)


# --------------------------------------------------------------------------------------------------------------------
# The state one step works on


@dataclass
class StepState:
    """What one optimiser step knows. Transforms read and write these fields, in chain order."""

    t: int
    """The step index (0-based; γ_t and lr_t are functions of t/T)."""
    total_steps: int
    params: list[torch.nn.Parameter]
    g_d: list[torch.Tensor]
    """The domain gradient as the loop left it (accumulated, clipped). Never modified."""
    g_hat: list[torch.Tensor] | None
    """The anchor ĝ_t in trainable space (None for methods without one). Rescale transforms replace it."""
    g: list[torch.Tensor]
    """The gradient AdamW will see; starts as g_D."""
    norm_d: float
    norm_hat: float
    norm2_d: float | None = None
    """‖g_D‖² (computed once per step; the similarity reuses it)."""
    norm2_hat: float | None = None
    """‖ĝ_t‖² of the ``g_hat`` the step started with (None once a transform replaced ``g_hat``)."""
    clip: float = 1.0
    """The factor the loop's clipping applied to g_D (1 when the loop did not report clipping)."""
    max_norm: float | None = None
    """The loop's clipping norm, when reported."""
    rho: float = 0.0
    gamma: float = 0.0
    lam: float = 1.0
    lr: float = 0.0
    extra: dict = field(default_factory=dict)
    """Additional fields for the step record (e.g. the budget's general gain)."""


# --------------------------------------------------------------------------------------------------------------------
# The transforms (each small and named; ``stage`` says whether it runs before or after the AdamW update)


class Transform:
    name = "transform"
    stage = "gradient"

    def __call__(self, s: StepState, opt=None) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


@dataclass(repr=False)
class Similarity(Transform):
    """ρ_t = cos(g_D, ĝ_t) (or the normalised projection): how much the domain step agrees with the general one."""

    kind: str = "cosine"
    name = "similarity"

    def __call__(self, s, opt=None):
        s.rho = similarity(s.g_d, s.g_hat, self.kind, nd2=s.norm2_d, nh2=s.norm2_hat)


class RelativeScale(Transform):
    """Anchor rescale: ĝ ← ĝ·‖g_D‖/‖ĝ‖, so γ mixes directions, not magnitudes (this project's variant)."""

    name = "rescale(relative)"

    def __call__(self, s, opt=None):
        if s.norm_hat > 0:
            s.g_hat = [h * (s.norm_d / s.norm_hat) for h in s.g_hat]
            s.norm2_hat = None


class ClipScale(Transform):
    """Anchor rescale, clip-consistent: ĝ ← c·ĝ with c the factor the loop's clipping applied to g_D, so clipping
    shrinks the domain and the general parts of g̃ alike (the loop reports c with ``DBAOptimizer.note_clip``)."""

    name = "rescale(clip)"

    def __call__(self, s, opt=None):
        if s.clip != 1.0:
            s.g_hat = [h * s.clip for h in s.g_hat]
            s.norm2_hat = None


@dataclass(repr=False)
class BoostWeight(Transform):
    """γ_t = k_0·decay(t/T) (0 when GGB is off)."""

    config: "BoostConfig"

    @property
    def name(self):
        return "boost-weight" if self.config.enabled else "boost-weight(off)"

    def __call__(self, s, opt=None):
        s.gamma = boost_weight(s.t, s.total_steps, self.config)


@dataclass(repr=False)
class Budget(Transform):
    """Budgeted boost (a trust region for a first-order anchor): γ_t ← 0 once the linearised general gain
    ⟨ĝ, θ_0 − θ_t⟩ has reached ``budget`` (nats of predicted general-loss decrease). The gain is
    ``origin − inner(θ_t)`` with inner the linearised general loss (``AnchorMap.inner``) and origin its value at θ_0."""

    budget: float
    inner: Callable[[list[torch.Tensor]], float]
    origin: float
    name = "budget"

    def __call__(self, s, opt=None):
        gain = self.origin - self.inner(s.params)
        s.extra["general_gain"] = gain
        if gain >= self.budget:
            s.gamma = 0.0


@dataclass(repr=False)
class Boost(Transform):
    """GGB in gradient space: g ← γ·ĝ + (1−γ)·g (convex, the paper's Eq. 4) or g + γ·ĝ (additive)."""

    mode: str = "convex"

    @property
    def name(self):
        return f"boost({self.mode})"

    def __call__(self, s, opt=None):
        s.g = boost(s.g, s.g_hat, s.gamma, self.mode)


class Projection(Transform):
    """A-GEM in gradient space: when ⟨g, ĝ⟩ < 0 remove g's component along ĝ (never pushes along ĝ)."""

    name = "projection"

    def __call__(self, s, opt=None):
        s.g = project_off(s.g, s.g_hat)


class ClipBoosted(Transform):
    """Clip the boosted gradient g̃ to the loop's clipping norm (the loop clipped g_D only)."""

    name = "clip"

    def __call__(self, s, opt=None):
        if s.max_norm is None:
            return
        n = math.sqrt(float(dot(s.g, s.g)))
        c = clip_factor(n, s.max_norm)
        if c < 1.0:
            s.g = [x * c for x in s.g]


@dataclass(repr=False)
class L2SP(Transform):
    """L2-SP: the gradient of α/2·‖θ − θ_0‖², g ← g + α·(θ − θ_0) (θ = the trainable parameters; θ_0 their values when
    the optimiser was built)."""

    alpha: float
    origin: list[torch.Tensor]
    name = "penalty(l2sp)"

    def __call__(self, s, opt=None):
        s.g = [x + self.alpha * (p.detach() - o).to(x.dtype) for x, p, o in zip(s.g, s.params, self.origin)]


@dataclass(repr=False)
class EWC(Transform):
    """EWC: the gradient of λ/2·Σ F·(θ − θ_0)² added to g; F the diagonal Fisher from the anchor pass.

    ``grads(params)`` returns λ·∂/∂θ of the penalty for every trainable parameter (param space: λ·F⊙(θ − θ_0);
    weight space: the chain rule of λ/2·Σ_l Σ F_l⊙ΔW_l² with ΔW_l = s·(B·A − B_0·A_0), in factored form)."""

    grads: Callable[[list[torch.Tensor]], list[torch.Tensor]]
    name = "penalty(ewc)"

    def __call__(self, s, opt=None):
        s.g = [x + p.to(x.dtype) for x, p in zip(s.g, self.grads(s.params))]


@dataclass(repr=False)
class StepScale(Transform):
    """DC: λ_t = clip(f(ρ_t), λ_min, λ_max) multiplies the learning rate (Adam normalises gradient scale away)."""

    config: "CorrectionConfig"

    @property
    def name(self):
        f = self.config.function
        return f"step-scale({getattr(f, '__name__', 'callable') if callable(f) else f})" if self.config.enabled \
            else "step-scale(off)"

    def __call__(self, s, opt=None):
        s.lam = step_scale(s.rho, self.config)


@dataclass(repr=False)
class Anneal(Transform):
    """AL: lr_t = η_0·anneal(t/T)."""

    config: "AnnealConfig"

    @property
    def name(self):
        return f"anneal({self.config.schedule})" if self.config.enabled else "anneal(off)"

    def __call__(self, s, opt=None):
        s.lr = annealed_lr(s.t, s.total_steps, self.config)


def adam_denominators(opt, params: list[torch.nn.Parameter], eps: float) -> list[torch.Tensor]:
    """√v̂ + ε of each parameter after the AdamW step that just ran (v̂ = v / (1 − β2^k), k its step count): the
    preconditioner AdamW divided m̂ by."""
    beta2 = opt.param_groups[0]["betas"][1]
    out = []
    for p in params:
        st = opt.state[p]
        k = float(st["step"])
        out.append(st["exp_avg_sq"].sqrt() / math.sqrt(1.0 - beta2 ** k) + eps)
    return out


UPDATE_BOOST_LIMIT = 1.0
"""The largest per-coordinate anchor step of :class:`UpdateBoost`, in units of lr_t·λ_t·γ_t: |ĝ/(√v̂+ε)| is clipped to
it. An Adam update m̂/√v̂ is at most about 1 per coordinate; an unbounded ĝ/√v̂ is not: where the domain batches never
touched a weight (v̂ = 0, e.g. the embedding rows of tokens they do not contain) it is ĝ/ε ≈ 1e8·ĝ, and the first
version of this variant blew the model up (held-out NLL 2560 on finance, docs/defaults.md)."""


@dataclass(repr=False)
class UpdateBoost(Transform):
    """GGB in update space: after AdamW has moved θ by its update from g_D alone,
    θ ← θ − lr_t·λ_t·γ_t·clip(ĝ/(√v̂+ε), ±1). ĝ is preconditioned by the same √v̂ (+ε) as the domain step, the fixed
    anchor never enters Adam's moments, and no coordinate moves further than a full Adam step
    (:data:`UPDATE_BOOST_LIMIT`)."""

    eps: float
    limit: float = UPDATE_BOOST_LIMIT
    name = "update-boost"
    stage = "update"

    def __call__(self, s, opt=None):
        if s.gamma == 0.0:
            return
        step = s.lr * s.lam * s.gamma
        for p, h, den in zip(s.params, s.g_hat, adam_denominators(opt, s.params, self.eps)):
            u = (h.float() / den).clamp_(-self.limit, self.limit)
            p.add_(u.to(p.dtype), alpha=-step)


@dataclass(repr=False)
class UpdateProjection(Transform):
    """A-GEM on the update: u = m̂/(√v̂+ε) is AdamW's step direction (θ moved by −lr·u); when ⟨u, ĝ⟩ < 0 the step
    raises the linearised general loss, so the component of u along ĝ is removed: θ ← θ + lr_t·λ_t·(⟨u,ĝ⟩/‖ĝ‖²)·ĝ."""

    eps: float
    name = "update-projection"
    stage = "update"

    def __call__(self, s, opt=None):
        beta1 = opt.param_groups[0]["betas"][0]
        dens = adam_denominators(opt, s.params, self.eps)
        u = [opt.state[p]["exp_avg"] / (1.0 - beta1 ** float(opt.state[p]["step"])) / den
             for p, den in zip(s.params, dens)]
        c = float(dot(u, s.g_hat))
        nh2 = float(dot(s.g_hat, s.g_hat))
        s.extra["update_dot_anchor"] = c
        if c >= 0 or nh2 == 0:
            return
        for p, h in zip(s.params, s.g_hat):
            p.add_(h.to(p.dtype), alpha=s.lr * s.lam * (c / nh2))


# --------------------------------------------------------------------------------------------------------------------
# Config -> chain


@dataclass
class Chain:
    """The ordered transforms of one optimiser: ``gradient`` runs before the AdamW update, ``update`` after it."""

    gradient: list[Transform]
    update: list[Transform]

    def names(self) -> list[str]:
        return [t.name for t in self.gradient] + ["adamw"] + [t.name for t in self.update]

    def __str__(self) -> str:
        return " → ".join(self.names())


BOOST_MODES = ("convex", "additive", "projection", "update", "update-projection")


def build_chain(cfg: "DBAConfig", *, has_anchor: bool, anchor_map=None, params=None) -> Chain:
    """The chain for ``cfg``. ``anchor_map`` and ``params`` are needed only by transforms that look at the weights
    (budget, EWC, L2-SP); without them (e.g. for a listing) those transforms are built with placeholders."""
    b, c = cfg.boost, cfg.correction
    if b.mode not in BOOST_MODES:
        raise DBAError(f"Unknown boost mode {b.mode!r}; use one of {', '.join(BOOST_MODES)}.")
    gradient: list[Transform] = []
    update: list[Transform] = []
    boosting = b.enabled and has_anchor
    if has_anchor:
        gradient.append(Similarity(c.similarity))
    if boosting and b.scale == "relative":
        gradient.append(RelativeScale())
    if boosting and b.clip == "anchor":
        gradient.append(ClipScale())
    gradient.append(BoostWeight(b))
    if boosting and b.budget is not None:
        inner = anchor_map.inner if anchor_map is not None else (lambda ps: 0.0)
        origin = anchor_map.inner(params) if anchor_map is not None else 0.0
        gradient.append(Budget(b.budget, inner, origin))
    if boosting:
        if b.mode in ("convex", "additive"):
            gradient.append(Boost(b.mode))
        elif b.mode == "projection":
            gradient.append(Projection())
        elif b.mode == "update":
            update.append(UpdateBoost(cfg.eps))
        elif b.mode == "update-projection":
            update.append(UpdateProjection(cfg.eps))
    if boosting and b.clip == "boosted":
        gradient.append(ClipBoosted())
    pen = cfg.penalty
    if pen.kind == "l2sp":
        origin = [p.detach().clone() for p in params] if params is not None else []
        gradient.append(L2SP(pen.strength, origin))
    elif pen.kind == "ewc":
        if anchor_map is not None:
            grads = anchor_map.ewc_gradient(params, pen.strength, normalize=pen.normalize_fisher)
        else:
            def grads(ps):  # placeholder for listings
                return [torch.zeros_like(p) for p in ps]
        gradient.append(EWC(grads))
    elif pen.kind != "none":
        raise DBAError(f"Unknown penalty {pen.kind!r}; use 'none', 'l2sp' or 'ewc'.")
    gradient.append(StepScale(c))
    gradient.append(Anneal(cfg.anneal))
    return Chain(gradient, update)
