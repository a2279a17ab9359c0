"""Every configuration of DBA Studio in one module: the dataclasses (with the help text beside each field) and the
presets. The CLI, the app, compare, the notebooks, bench and scripts build their configs from here.

This module imports nothing heavy (no torch): only the standard library and :mod:`dba.errors`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Literal

from .errors import DBAError

# --------------------------------------------------------------------------------------------------------------------
# LoRA


@dataclass
class LoraSettings:
    """LoRA adapter settings (PEFT ``LoraConfig`` under the hood)."""

    rank: int = 16
    """Adapter rank r of each adapted linear layer (B: out×r, A: r×in)."""
    alpha: float = 32.0
    """Scale numerator: the adapter adds (alpha / rank)·B·A to the frozen weight."""
    dropout: float = 0.0
    """Dropout on the adapter's input. 0 keeps runs bit-for-bit reproducible; 0.05 is common for long runs."""
    target_modules: str | list[str] = "all-linear"
    """Which linear layers get adapters: ``"all-linear"`` (every linear but the output head) or a list of names."""

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


# --------------------------------------------------------------------------------------------------------------------
# ---- DBA optimiser (GGB, DC, AL) ----
# (owned by the transforms work: BoostConfig, CorrectionConfig, AnnealConfig, DBAConfig and the variant configs)


@dataclass
class BoostConfig:
    """GGB — global-gradient boost: mix the anchor ĝ into the domain gradient with a decaying weight γ_t."""

    enabled: bool = True
    """Off: g̃ = g_D (ablation "GGB off")."""
    mode: Literal["convex", "additive", "projection", "update", "update-projection"] = "convex"
    """``convex``: g̃ = γ·ĝ + (1−γ)·g_D (the paper's Eq. 4). ``additive``: g̃ = g_D + γ·ĝ.
    ``projection`` (this project's variant, A-GEM-style): when ⟨g_D, ĝ⟩ < 0 remove the conflicting component,
    g̃ = g_D − ⟨g_D,ĝ⟩/‖ĝ‖²·ĝ, else g̃ = g_D; it never pushes along ĝ, so γ is not used.
    ``update`` (this project's variant): AdamW's moments come from g_D alone and ĝ is added to the *update*,
    preconditioned by the same √v̂ (+ε): Δθ = −lr·λ·(m̂/(√v̂+ε) + γ·ĝ/(√v̂+ε)).
    ``update-projection`` (this project's variant): A-GEM on the update: when AdamW's step direction u = m̂/(√v̂+ε)
    has ⟨u, ĝ⟩ < 0, its component along ĝ is removed; γ is not used."""
    c: float = 200.0
    """The paper's k_0 = c / T with c = 200 (tuned for runs of thousands of steps)."""
    k0_max: float | None = 0.1
    """Short-run rule: k_0 = min(c/T, k0_max). The paper's c/T exceeds 1 for T < 200 (γ must stay in [0, 1]). Measured
    on the embedded model (docs/defaults.md): k_0 ≥ 0.3 collapsed every run (S_G −0.26 to −0.39), 0.1 gave the best
    S at η_0 = 3e-4, 0.05 is safer at η_0 ≥ 1e-3. None = no cap (then c/T > 1 is an error, not a silent clamp)."""
    k0: float | None = None
    """Set k_0 directly (overrides c and k0_max)."""
    decay: Literal["linear", "constant", "cosine"] = "linear"
    """γ_t = k_0·(1 − t/T) (paper), k_0, or k_0·(1 + cos(π·t/T))/2."""
    scale: Literal["raw", "relative"] = "raw"
    """``raw``: use ĝ as estimated (paper). ``relative``: rescale ĝ to ‖g_D‖ each step, so γ is a pure direction mix."""
    clip: Literal["none", "anchor", "boosted"] = "none"
    """Clip-consistency with the loop's gradient clipping (which clips g_D only). ``none``: ĝ as is (paper).
    ``anchor``: ĝ is scaled by the same factor the clipping applied to g_D (the loop reports it with
    ``DBAOptimizer.note_clip``). ``boosted``: g̃ is clipped to the loop's clipping norm."""
    budget: float | None = None
    """Budgeted boost: γ_t = 0 once the linearised general gain ⟨ĝ, θ_0 − θ_t⟩ (predicted general-loss decrease, in
    nats; weight space: ⟨Ĝ, s·(B·A − B_0·A_0)⟩ with the sign reversed) reaches this budget. None = no budget (paper)."""


@dataclass
class CorrectionConfig:
    """DC — dynamic correction: scale the step by λ_t = f(ρ_t), a function of the gradient similarity."""

    enabled: bool = True
    """Off: λ = 1 (ablation "DC off")."""
    similarity: Literal["cosine", "projection"] = "cosine"
    """ρ = cos(g_D, ĝ) (default), or the normalised projection ⟨g_D, ĝ⟩/‖ĝ‖²."""
    function: str | Callable[[float], float] = "paper"
    """``paper`` (reconstruction): λ = 1 + β·(1 − ρ)/2 — the step grows as g_D and ĝ disagree, restoring the domain
    signal that the convex mix cancels. ``conservative``: λ = 1 − β·(1 − ρ)/4 — shrinks the step on conflict.
    ``off``: 1. Or any callable ρ -> λ."""
    beta: float = 1.0
    """Strength β of the built-in functions (paper: λ ∈ [1, 1+β])."""
    lam_min: float = 0.5
    """λ is clipped to [lam_min, lam_max]."""
    lam_max: float = 2.0


@dataclass
class AnnealConfig:
    """AL — annealing learning: a small learning rate η_0 decayed to (almost) zero over the run."""

    lr: float = 3e-4
    """η_0, the peak learning rate. 3e-4 was the best of {1e-4, 3e-4, 1e-3, 3e-3} for DBA on the embedded model
    (LoRA r=16, 60 steps, finance; docs/defaults.md); at 1e-3 and above the raw anchor overshoots."""
    enabled: bool = True
    """Off: lr_t = η_0 throughout (ablation "AL off")."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """lr_t = η_0·(1 + cos(π·t/T))/2, η_0·(1 − t/T), or η_0."""
    warmup_steps: int = 0
    """Linear warm-up from η_0/warmup over the first steps (0 = none)."""
    min_lr_ratio: float = 0.0
    """The floor the schedule decays to, as a share of η_0."""


@dataclass
class PenaltyConfig:
    """A pull towards the starting weights θ_0, added to the gradient (the continual-learning baselines)."""

    kind: Literal["none", "l2sp", "ewc"] = "none"
    """``l2sp``: + α·(θ − θ_0) (L2-SP). ``ewc``: + λ·F⊙(θ − θ_0) with F the diagonal Fisher stored in the anchor
    (weight space: on the effective weight change s·(B·A − B_0·A_0), by the chain rule). ``none``: no penalty."""
    strength: float = 0.1
    """α (L2-SP) or λ (EWC). Not tuned: a starting point for the study's sweep."""
    normalize_fisher: bool = True
    """EWC: divide F by its mean over all entries, so λ is a pull strength on the scale of L2-SP's α."""


@dataclass
class DBAConfig:
    """All of DBA's knobs. ``total_steps`` (T) must be the number of optimiser steps of the run."""

    total_steps: int = 100
    """T: optimiser steps in the run (γ_t and lr_t are functions of t/T)."""
    boost: BoostConfig = field(default_factory=BoostConfig)
    correction: CorrectionConfig = field(default_factory=CorrectionConfig)
    anneal: AnnealConfig = field(default_factory=AnnealConfig)
    penalty: PenaltyConfig = field(default_factory=PenaltyConfig)
    """EWC / L2-SP pull towards θ_0 (off for DBA and its variants)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's β1, β2."""
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_nonfinite_in_a_row: int = 5
    """A step whose g_D holds NaN/inf is skipped (and counted); this many in a row stop the run with an error."""

    def to_dict(self) -> dict:
        d = asdict(self)
        if callable(self.correction.function):
            d["correction"]["function"] = getattr(self.correction.function, "__name__", "callable")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DBAConfig":
        d = dict(d)
        return cls(boost=BoostConfig(**d.pop("boost", {})), correction=CorrectionConfig(**d.pop("correction", {})),
                   anneal=AnnealConfig(**d.pop("anneal", {})), penalty=PenaltyConfig(**d.pop("penalty", {})),
                   **{k: tuple(v) if k == "betas" else v for k, v in d.items()})

    @classmethod
    def direct(cls, total_steps: int, lr: float = 1e-4, **kw) -> "DBAConfig":
        """Plain fine-tuning with DBA's schedule: no boost, no correction, same annealed lr."""
        cfg = cls(total_steps=total_steps, anneal=AnnealConfig(lr=lr), **kw)
        cfg.boost.enabled = False
        cfg.correction.enabled = False
        return cfg


# ---- end of DBA optimiser section ----

# --------------------------------------------------------------------------------------------------------------------
# One fine-tuning run


Method = Literal["dba", "direct", "mixture"]


@dataclass
class FinetuneConfig:
    """One fine-tuning run. Defaults: the embedded model, LoRA, the bundled finance domain, a short CPU-sized run."""

    method: Method = "dba"
    """``dba`` (domain data + global gradient), ``direct`` (domain only, same schedule, no boost/correction) or
    ``mixture`` (domain + general examples at ratio ``mixture_ratio``, same schedule)."""
    model: str = "default"
    """"default" (embedded SmolLM2-135M-Instruct), "tiny", a hub id, a local folder or a .gguf file."""
    quantization: Literal["none", "4bit", "8bit"] = "none"
    """"4bit" = QLoRA (NF4, double quant). Needs LoRA."""
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    """LoRA adapter settings; None = full fine-tuning."""
    domain: str = "finance"
    """Domain corpus: a bundled name (finance, medicine, law, news_qa) or a file/folder."""
    general: str = "general"
    """General corpus (for the anchor and for mixture): a bundled name or a file/folder."""
    domain_eval: str | None = None
    """Domain MC eval file (default: the bundled domain's eval set)."""
    general_eval: str | None = None
    """General MC eval file (default: the bundled general eval set)."""
    anchor: str | None = None
    """Path of a saved global gradient (``dba anchor``). For ``dba`` without one, it is estimated into the run folder."""
    anchor_batches: int = 16
    """Batches of the general corpus for an anchor estimated by the run itself."""
    anchor_energy: float | None = 0.9
    """Energy kept by the anchor's SVD compression (when estimated by the run)."""
    mixture_ratio: float = 0.5
    """``mixture``: share of general examples in each batch (0 = direct, 1 = general only)."""
    steps: int = 60
    """Optimiser steps T."""
    batch_size: int = 8
    """Examples per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimiser step (the loss is divided by it, as usual)."""
    max_length: int = 256
    """Longest example in tokens (longer ones are truncated, with a warning)."""
    max_grad_norm: float | None = 1.0
    """Clip g_D to this global norm before the DBA step (None = no clipping)."""
    seed: int = 0
    """Seeds the LoRA init, data order and dropout: same seed, same run."""
    dba: DBAConfig = field(default_factory=DBAConfig)
    """DBA's knobs (boost, correction, anneal incl. η_0); total_steps is set from ``steps``."""
    eval_every: int = 0
    """Evaluate S_G/S_D every N steps (0 = only before and after the run)."""
    eval_items: int | None = None
    """Use the first N items of each eval set (None = all)."""
    eval_scorer: str = "mean"
    """How a set's score combines its scorers: "mean" (log-lik and generation), "loglik" or "gen"."""
    evaluate_at_end: bool = True
    """Score the base (step 0) and the final model."""
    checkpoint_every: int = 0
    """Also save a resumable checkpoint every N steps (0 = by time only, see ``checkpoint_minutes``)."""
    checkpoint_minutes: float = 10.0
    """Save a resumable checkpoint when this many minutes have passed since the last one (0 = off). Ctrl-C, SIGTERM
    and cancel always save one, and so does the end of training (weights only, until the result is saved). One
    checkpoint is kept: the trainable weights and two Adam moments, i.e. 3× the trainable floats (a few MB for
    LoRA; ~1.6 GB for a full fine-tune of the 135M default), replaced atomically."""
    collapse_guard: bool = True
    """Stop a collapsed run with status ``diverged``: loss exactly unchanged or gradients exactly zero for
    ``guard_window`` steps, mean loss rising ``guard_loss_rise``× over the start, or weights non-finite or grown
    ``guard_weight_growth``× in norm."""
    guard_window: int = 10
    """Collapse guard: steps in a row of exactly equal loss or exactly zero gradient that count as collapsed; also the
    number of steps averaged for the loss-rise test (first window vs the latest)."""
    guard_loss_rise: float = 3.0
    """Collapse guard: diverged when the mean loss of the latest ``guard_window`` steps exceeds this multiple of the
    mean of the first ``guard_window`` (0 = off)."""
    guard_weight_growth: float = 100.0
    """Collapse guard: diverged when the trainable weights' global L2 norm exceeds this multiple of its value at the
    start (0 = off; non-finite weights always stop the run)."""
    output_dir: str = "runs/run"
    """The run folder."""
    device: str = "auto"
    dtype: str | None = None
    """Weight dtype (compute dtype for 4-bit): None = bf16 on a GPU that supports it, else fp32."""
    trust_remote_code: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dba"] = self.dba.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneConfig":
        d = dict(d)
        lora = d.pop("lora", None)
        dba = d.pop("dba", None)
        known = {f for f in cls.__dataclass_fields__}
        extra = set(d) - known
        if extra:
            raise DBAError(f"Unknown config fields: {sorted(extra)}")
        return cls(lora=LoraSettings(**lora) if lora else None,
                   dba=DBAConfig.from_dict(dba) if dba else DBAConfig(), **d)

    def optimizer_config(self) -> DBAConfig:
        """The optimiser config for this method: direct and mixture keep DBA's schedule but no boost/correction."""
        cfg = DBAConfig.from_dict(self.dba.to_dict()) if not callable(self.dba.correction.function) else self.dba
        cfg.total_steps = self.steps
        if self.method in ("direct", "mixture"):
            cfg.boost.enabled = False
            cfg.correction.enabled = False
        return cfg


# --------------------------------------------------------------------------------------------------------------------
# A comparison


METHODS = ("direct", "mixture", "dba", "dba-no-ggb", "dba-no-dc", "dba-no-al", "dba-projection", "dba-relative")
"""What ``compare`` can run. ``mixture`` expands into one run per ratio. The ``dba-*`` entries are DBA with one
change each: GGB off, DC off, AL off (the paper's ablations), the projection boost (A-GEM-style, this project's
variant) and "relative" anchor scaling (ĝ rescaled to ‖g_D‖ each step, this project's variant)."""

DBA_FAMILY = tuple(m for m in METHODS if m.startswith("dba"))

DEFAULT_RATIOS = (0.125, 0.25, 0.375, 0.5, 0.75)
"""Five general shares r for the mixture sweep. Eighths, so that with a batch of 8 each ratio gives a different
number of general examples per batch (1, 2, 3, 4, 6): a mixture batch holds round(r·batch) general examples, and
0.2 and 0.3 would both round to 2 of 8."""


@dataclass
class CompareConfig:
    """One comparison. Every run gets the same model, LoRA settings, data, seed, steps, batch and learning rate."""

    model: str = "default"
    """Base model ("default", "tiny", a hub id, a folder, a .gguf)."""
    quantization: str = "none"
    """"4bit" = QLoRA for every run."""
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    """LoRA settings of every run; None = full fine-tuning."""
    domains: list[str] = field(default_factory=lambda: ["finance"])
    """Domain corpora (bundled names or files/folders); several = one sweep per domain, all reusing one ĝ_G."""
    general: str = "general"
    """General corpus: the anchor's data and the mixture's general share."""
    general_eval: str | None = None
    """General MC eval file (default: the bundled general eval set)."""
    domain_eval: str | None = None
    """Domain MC eval file (default: the bundled domain's eval set); only with a single domain."""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """Which of :data:`METHODS` to run."""
    ratios: list[float] = field(default_factory=lambda: list(DEFAULT_RATIOS))
    """Mixture sweep: share of general examples per batch, each in (0, 1)."""
    steps: int = 60
    """Optimiser steps T of every run."""
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 256
    max_grad_norm: float | None = 1.0
    seed: int = 0
    dba: DBAConfig = field(default_factory=DBAConfig)
    """DBA's knobs for the ``dba`` run (η_0 = ``dba.anneal.lr`` for every method); ablations and variants change one
    piece of it each."""
    anchor: str | None = None
    """A saved ĝ_G to reuse (``dba anchor``); default: estimate one into the output folder."""
    anchor_batches: int = 16
    """General batches for the anchor pass."""
    anchor_energy: float | None = 0.9
    """Energy kept by the anchor's SVD compression."""
    eval_every: int = 0
    """Evaluate every N steps during each run (curves over steps); 0 = only the base and the end."""
    eval_items: int | None = None
    """First N items of each eval set (None = all)."""
    eval_scorer: str = "mean"
    """"mean" (log-likelihood and generation), "loglik" or "gen" (see dba.scores.combine)."""
    output_dir: str = "runs/compare"
    device: str = "auto"
    dtype: str | None = None
    """Weight dtype (compute dtype for 4-bit) of every run and of the base model: None = bf16 on a GPU that
    supports it, else fp32."""
    trust_remote_code: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dba"] = self.dba.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CompareConfig":
        d = dict(d)
        lora, dba = d.pop("lora", None), d.pop("dba", None)
        extra = set(d) - set(cls.__dataclass_fields__)
        if extra:
            raise DBAError(f"Unknown compare config fields: {sorted(extra)}")
        return cls(lora=LoraSettings(**lora) if lora else None, dba=DBAConfig.from_dict(dba) if dba else DBAConfig(),
                   **d)
