"""Every configuration of DBA Studio in one module: the dataclasses (with the help text beside each field), their
validation, one generic (de)serialisation for nested configs, and the presets (``smoke``, ``quick``, ``lesson``,
``study``, ``full``). The CLI, the app, compare, the notebooks, bench and scripts build their configs from here.

- :func:`preset` ``(name)`` -> :class:`Preset`: ``.run`` is the :class:`FinetuneConfig` of the preset, and
  ``.compare_config(...)`` the :class:`CompareConfig` that holds it.
- :func:`to_dict` / :func:`from_dict`: any config dataclass <-> plain JSON data (``config.json``, ``compare.json``).
- Every config validates itself when built: a bad number raises :class:`dba.errors.DBAError` with one line.

Conventions, decided here once:

- ``LoraSettings.alpha = None`` means 2 × rank (α/r = 2, the ratio η_0 was tuned at).
- ``eval_items``: None or 0 = every item; a negative number is refused.
- ``max_grad_norm``: None or 0 = no clipping.
- ``BoostConfig.k0``: None = the rule k_0 = min(c/T, k0_max); a number = that k_0. ``BoostConfig.k0_max``: None = no
  cap; 0 or less is refused (switch the boost off with ``boost.enabled = False``).

This module imports nothing heavy (no torch, no other dba module but :mod:`dba.errors`).
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import math
import textwrap
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from functools import lru_cache
from typing import Any, Callable, Literal

from .errors import DBAError

# --------------------------------------------------------------------------------------------------------------------
# Generic helpers: (de)serialisation of nested config dataclasses, help text, validation


def to_dict(cfg) -> dict:
    """A config dataclass as plain JSON-ready data: nested dataclasses as dicts, tuples as lists, a callable (a custom
    DC function) as its name. :func:`from_dict` reads it back."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in fields(cfg)}


def _plain(v):
    if is_dataclass(v) and not isinstance(v, type):
        return to_dict(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if callable(v):
        return getattr(v, "__name__", "callable")
    return v


def from_dict(cls, data: dict):
    """Build config class ``cls`` from :func:`to_dict`'s output (nested dataclasses by their type hints; missing
    fields take their defaults). Unknown fields raise :class:`DBAError` naming them. A class may upgrade old layouts
    with a ``_upgrade_dict(data) -> data`` classmethod (e.g. compare.json files of earlier versions)."""
    if not isinstance(data, dict):
        raise DBAError(f"A {cls.__name__} must be a JSON object, got {type(data).__name__}.")
    upgrade = getattr(cls, "_upgrade_dict", None)
    data = upgrade(dict(data)) if upgrade is not None else dict(data)
    names = {f.name for f in fields(cls) if f.init}
    extra = sorted(set(data) - names)
    if extra:
        raise DBAError(f"Unknown {cls.__name__} fields: {', '.join(extra)}.")
    hints = _hints(cls)
    return cls(**{k: _typed(hints.get(k), v) for k, v in data.items()})


@lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _typed(tp, v):
    if v is None or tp is None:
        return v
    options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, _UnionType) else (tp,)
    for opt in options:
        if isinstance(opt, type) and is_dataclass(opt) and isinstance(v, dict):
            return from_dict(opt, v)
        if typing.get_origin(opt) is tuple and isinstance(v, list):
            return tuple(v)
    return v


_UnionType = type(int | None)


class ConfigBase:
    """What every config dataclass shares: ``to_dict`` / ``from_dict`` (the generic pair above), ``replace`` and
    validation when built (``validate()``, called by ``__post_init__``)."""

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict):
        return from_dict(cls, data)

    def replace(self, **changes):
        """A copy with some fields changed (validated like a new config)."""
        return dataclasses.replace(self, **changes)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise :class:`DBAError` (one line) for a value that cannot run."""


def field_help(cls) -> dict[str, str]:
    """Field name -> its help text (the docstring written under the field in the class body), for the CLI and UI."""
    return dict(_field_help(cls))


@lru_cache(maxsize=None)
def _field_help(cls) -> tuple:
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                    and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                out[a.target.id] = " ".join(b.value.value.split())
    return tuple(out.items())


def _fail(msg: str) -> None:
    raise DBAError(msg)


def _whole(name: str, v, low: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(f"{name} must be a whole number, got {v!r}.")
    if v < low:
        _fail(f"{name} must be at least {low}, got {v}.")


def _real(name: str, v, *, low: float | None = None, high: float | None = None, positive: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(f"{name} must be a finite number, got {v!r}.")
    if positive and v <= 0:
        _fail(f"{name} must be greater than 0, got {v:g}.")
    if low is not None and v < low:
        _fail(f"{name} must be at least {low:g}, got {v:g}.")
    if high is not None and v > high:
        _fail(f"{name} must be at most {high:g}, got {v:g}.")


def _choice(name: str, v, options) -> None:
    if v not in options:
        _fail(f"{name} must be one of {', '.join(map(str, options))}; got {v!r}.")


# --------------------------------------------------------------------------------------------------------------------
# LoRA


@dataclass
class LoraSettings(ConfigBase):
    """LoRA adapter settings (PEFT ``LoraConfig`` under the hood)."""

    rank: int = 16
    """Adapter rank r of each adapted linear layer (B: out×r, A: r×in)."""
    alpha: float | None = None
    """Scale numerator: the adapter adds (alpha / rank)·B·A to the frozen weight. None = 2 × rank (α/r = 2, the
    ratio η_0 was tuned at)."""
    dropout: float = 0.0
    """Dropout on the adapter's input. 0 keeps runs bit-for-bit reproducible; 0.05 is common for long runs."""
    target_modules: str | list[str] = "all-linear"
    """Which linear layers get adapters: ``"all-linear"`` (every linear but the output head) or a list of names."""

    @property
    def effective_alpha(self) -> float:
        """α as used: ``alpha``, or 2 × rank when it is None (the one place this rule lives)."""
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank

    @property
    def scale(self) -> float:
        return self.effective_alpha / self.rank

    def validate(self) -> None:
        _whole("LoRA rank", self.rank)
        if self.alpha is not None:
            _real("LoRA alpha", self.alpha, positive=True)
        _real("LoRA dropout", self.dropout, low=0.0)
        if self.dropout >= 1:
            _fail(f"LoRA dropout must be below 1, got {self.dropout:g}.")
        if not self.target_modules:
            _fail("LoRA target_modules is empty; use 'all-linear' or a list of module names.")



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
    preconditioned by the same √v̂ (+ε): Δθ = −lr·λ·(m̂/(√v̂+ε) + γ·clip(ĝ/(√v̂+ε), ±1)) (the clip keeps
    the anchor step within a full Adam step where v̂ ≈ 0).
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
class DBAConfig(ConfigBase):
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

    # to_dict / from_dict: the generic pair of ConfigBase (nested configs by type; a callable DC function by name)

    @classmethod
    def direct(cls, total_steps: int, lr: float | None = None, **kw) -> "DBAConfig":
        """Plain fine-tuning with DBA's schedule: no boost, no correction, same annealed lr (None = AnnealConfig's
        default η_0, as everywhere)."""
        cfg = cls(total_steps=total_steps, anneal=AnnealConfig(lr=AnnealConfig().lr if lr is None else lr), **kw)
        cfg.boost.enabled = False
        cfg.correction.enabled = False
        return cfg


# ---- end of DBA optimiser section ----

# --------------------------------------------------------------------------------------------------------------------
# Checks of the optimiser configs (kept outside the optimiser section, which holds only the dataclasses)


def check_dba(cfg: "DBAConfig") -> None:
    """Raise :class:`DBAError` for optimiser settings that cannot run (called by :meth:`FinetuneConfig.validate`)."""
    _whole("dba.total_steps", cfg.total_steps)
    _real("learning rate η_0 (dba.anneal.lr)", cfg.anneal.lr, positive=True)
    _whole("dba.anneal.warmup_steps", cfg.anneal.warmup_steps, low=0)
    _real("dba.anneal.min_lr_ratio", cfg.anneal.min_lr_ratio, low=0.0, high=1.0)
    b = cfg.boost
    if b.k0 is not None:
        _real("GGB weight k_0 (dba.boost.k0)", b.k0, low=0.0)
        if b.mode == "convex" and b.k0 > 1:
            _fail(f"GGB weight k_0 = {b.k0:g} is above 1; the convex boost needs k_0 in [0, 1].")
    if b.k0_max is not None:
        _real("k0_max (dba.boost.k0_max; None = no cap, boost.enabled = False = no boost)", b.k0_max, positive=True)
    _real("dba.boost.c", b.c, low=0.0)
    c = cfg.correction
    _real("dba.correction.beta", c.beta, low=0.0)
    _real("dba.correction.lam_min", c.lam_min, positive=True)
    _real("dba.correction.lam_max", c.lam_max, positive=True)
    if c.lam_min > c.lam_max:
        _fail(f"dba.correction.lam_min ({c.lam_min:g}) is above lam_max ({c.lam_max:g}).")
    _real("dba.weight_decay", cfg.weight_decay, low=0.0)
    _real("dba.eps", cfg.eps, positive=True)
    if len(cfg.betas) != 2 or not all(0 <= x < 1 for x in cfg.betas):
        _fail(f"dba.betas must be two numbers in [0, 1), got {cfg.betas!r}.")


# --------------------------------------------------------------------------------------------------------------------
# The global gradient (anchor) pass


ANCHOR_SEED_OFFSET = 7919
"""The anchor's general batches are drawn with seed ``seed + ANCHOR_SEED_OFFSET`` (see :mod:`dba.anchor`), so that
with the same seed they are a different sample from a mixture run's general batches (drawn with ``seed + 1``)."""


@dataclass
class AnchorConfig(ConfigBase):
    """One global-gradient pass: ĝ_G = mean gradient over ``batches`` batches of a general corpus, SVD-compressed."""

    corpus: str = "general"
    """General corpus: a bundled name or a file/folder."""
    batches: int = 16
    """General batches averaged into ĝ_G."""
    batch_size: int = 8
    """Examples per batch."""
    max_length: int = 256
    """Longest example in tokens."""
    seed: int = 0
    """The batches are drawn with seed + ANCHOR_SEED_OFFSET (one rule for the CLI, runs, compare and the app)."""
    space: Literal["auto", "weight", "param"] = "auto"
    """``weight`` (LoRA: dL/dW of the adapted layers), ``param`` (trainable parameters); auto = weight for LoRA."""
    estimator: Literal["mean", "ema"] = "mean"
    """Exact running mean, or Adam's bias-corrected first moment."""
    rank: int | None = None
    """Fixed SVD rank per matrix (overrides ``energy``)."""
    energy: float | None = 0.9
    """Keep this share of each matrix's energy ‖Ĝ‖² (None with rank None = dense)."""
    energy_scope: Literal["matrix", "total"] = "matrix"
    """``matrix``: ``energy`` of every matrix; ``total``: ``energy`` of the whole anchor in the fewest floats."""

    def validate(self) -> None:
        _whole("anchor batches", self.batches)
        _whole("anchor batch_size", self.batch_size)
        _whole("max_length", self.max_length)
        _choice("anchor space", self.space, ("auto", "weight", "param"))
        _choice("anchor estimator", self.estimator, ("mean", "ema"))
        _choice("anchor energy_scope", self.energy_scope, ("matrix", "total"))
        if self.rank is not None:
            _whole("anchor rank", self.rank)
        if self.energy is not None:
            _real("anchor energy", self.energy, positive=True, high=1.0)


# --------------------------------------------------------------------------------------------------------------------
# One fine-tuning run


Method = Literal["dba", "direct", "mixture"]
"""The training loop a run uses (a :data:`dba.methods.METHODS` entry's ``run_as``)."""


@dataclass
class FinetuneConfig(ConfigBase):
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
    general_heldout: str | None = None
    """Held-out general question/answer pairs (in neither the training nor the anchor corpus) whose answer NLL per
    token every evaluation logs (``nll_g``): a file ``dba.scores.load_qa_pairs`` reads; None = the bundled
    ``heldout_pairs.jsonl`` when ``general`` is a bundled name, none otherwise; "none" = off."""
    domain_heldout: str | None = None
    """Held-out domain question/answer pairs for the answer NLL per token (``nll_d``): a file; None = the bundled
    domain's ``heldout_pairs.jsonl`` when ``domain`` is a bundled name, none otherwise; "none" = off."""
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
    """Clip g_D to this global norm before the DBA step (None or 0 = no clipping)."""
    seed: int = 0
    """Seeds the LoRA init, data order and dropout: same seed, same run."""
    dba: DBAConfig = field(default_factory=DBAConfig)
    """DBA's knobs (boost, correction, anneal incl. η_0); total_steps is set from ``steps``."""
    eval_every: int = 0
    """Evaluate S_G/S_D every N steps (0 = only before and after the run)."""
    eval_items: int | None = None
    """Use the first N items of each eval set (None or 0 = all)."""
    eval_scorer: Literal["mean", "loglik", "gen"] = "mean"
    """How a set's score combines its scorers: "mean" (log-lik and generation), "loglik" or "gen"."""
    evaluate_at_end: bool = True
    """Score the base (step 0) and the final model."""
    save_weights: bool = True
    """Save the result (``model/`` or ``adapter/``, via a final checkpoint). False: the run keeps no weights — it is
    scored, and handed back in memory with ``finetune(..., keep_model=True)``, but cannot be exported, chatted with
    or resumed (the five-minute lesson: two full saves of the embedded model cost ≈ 8 s per run on 2 CPU cores)."""
    checkpoint_every: int = 0
    """Also save a resumable checkpoint every N steps (0 = by time only, see ``checkpoint_minutes``)."""
    checkpoint_minutes: float = 10.0
    """Save a resumable checkpoint when this many minutes have passed since the last one (0 = off). Ctrl-C, SIGTERM
    and cancel always save one, and so does the end of training (weights only, until the result is saved). One
    checkpoint is kept: the trainable weights and two Adam moments, i.e. 3× the trainable floats, replaced
    atomically (measured on CPU: 59 MB in 0.5 s for the default model's LoRA; 1.6 GB in 17 s for its full fine-tune,
    about 3% of 10 minutes)."""
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
    """auto (CUDA when present), cpu, cuda, cuda:1 ..."""
    dtype: str | None = None
    """Weight dtype (compute dtype for 4-bit): None = bf16 on a GPU that supports it, else fp32."""
    trust_remote_code: bool = False
    """Allow model code from the hub (off by default)."""

    def validate(self) -> None:
        _choice("method", self.method, ("dba", "direct", "mixture"))
        _choice("quantization", self.quantization, ("none", "4bit", "8bit"))
        if self.quantization != "none" and self.lora is None:
            _fail(f"quantization {self.quantization} trains an adapter on frozen quantised weights: it needs LoRA "
                  "(a LoRA rank of at least 1).")
        if self.lora is not None and not isinstance(self.lora, LoraSettings):
            _fail(f"lora must be LoraSettings or None, got {type(self.lora).__name__}.")
        _whole("steps", self.steps)
        _whole("batch_size", self.batch_size)
        _whole("grad_accum", self.grad_accum)
        _whole("max_length", self.max_length)
        _whole("anchor_batches", self.anchor_batches)
        if self.anchor_energy is not None:
            _real("anchor_energy", self.anchor_energy, positive=True, high=1.0)
        _real("mixture_ratio", self.mixture_ratio, low=0.0, high=1.0)
        if self.max_grad_norm is not None:
            _real("max_grad_norm", self.max_grad_norm, low=0.0)
            if self.max_grad_norm == 0:
                self.max_grad_norm = None  # 0 = no clipping, recorded as None
        _whole("seed", self.seed, low=0)
        _whole("eval_every", self.eval_every, low=0)
        if self.eval_items is not None:
            _whole("eval_items (0 = all)", self.eval_items, low=0)
            if self.eval_items == 0:
                self.eval_items = None  # 0 = all, recorded as None
        _choice("eval_scorer", self.eval_scorer, ("mean", "loglik", "gen"))
        _whole("checkpoint_every", self.checkpoint_every, low=0)
        _real("checkpoint_minutes (0 = off)", self.checkpoint_minutes, low=0.0)
        _whole("guard_window", self.guard_window, low=2)
        _real("guard_loss_rise (0 = off)", self.guard_loss_rise, low=0.0)
        if 0 < self.guard_loss_rise <= 1:
            _fail(f"guard_loss_rise must be above 1 (or 0 = off), got {self.guard_loss_rise:g}.")
        _real("guard_weight_growth (0 = off)", self.guard_weight_growth, low=0.0)
        if 0 < self.guard_weight_growth <= 1:
            _fail(f"guard_weight_growth must be above 1 (or 0 = off), got {self.guard_weight_growth:g}.")
        check_dba(self.dba)

    def optimizer_config(self) -> DBAConfig:
        """The optimiser config for this method: T = ``steps``; direct and mixture keep DBA's schedule but no
        boost/correction."""
        cfg = copy.deepcopy(self.dba)
        cfg.total_steps = self.steps
        if self.method in ("direct", "mixture"):
            cfg.boost.enabled = False
            cfg.correction.enabled = False
        return cfg

    def resolved(self) -> "FinetuneConfig":
        """What actually runs, every default decided: LoRA α as a number, ``dba`` = :meth:`optimizer_config` (T =
        steps; no boost/correction for direct and mixture). ``config.json`` records this; resolving twice changes
        nothing."""
        cfg = copy.deepcopy(self)
        if cfg.lora is not None:
            cfg.lora.alpha = cfg.lora.effective_alpha
        cfg.dba = self.optimizer_config()
        return cfg

    def anchor_config(self) -> AnchorConfig:
        """The anchor pass this run does when it has no saved anchor (``dba.anchor.estimate_from_corpus``)."""
        return AnchorConfig(corpus=self.general, batches=self.anchor_batches, batch_size=self.batch_size,
                            max_length=self.max_length, seed=self.seed, energy=self.anchor_energy)


# --------------------------------------------------------------------------------------------------------------------
# A comparison


DEFAULT_RATIOS = (0.125, 0.25, 0.375, 0.5, 0.75)
"""Five general shares r for the mixture sweep. Eighths, so that with a batch of 8 each ratio gives a different
number of general examples per batch (1, 2, 3, 4, 6): a mixture batch holds round(r·batch) general examples, and
0.2 and 0.3 would both round to 2 of 8."""

_RUN_FIELDS = tuple(f.name for f in fields(FinetuneConfig))
_PER_RUN = ("method", "domain", "mixture_ratio", "output_dir", "evaluate_at_end")
"""Fields of ``CompareConfig.run`` that the planner sets for each run (the comparison's own values are not used)."""


@dataclass(init=False)
class CompareConfig(ConfigBase):
    """One comparison: every run is ``run`` (model, LoRA, data, seed, steps, batch, η_0, anchor settings, eval) with
    its method, domain and mixture ratio set by the planner (``dba.compare.plan_runs``).

    The run's fields can be given, read and set on the comparison directly, for convenience:
    ``CompareConfig(model="tiny", steps=3)`` is ``CompareConfig(run=FinetuneConfig(model="tiny", steps=3))`` and
    ``cfg.steps`` is ``cfg.run.steps``."""

    run: FinetuneConfig = field(default_factory=FinetuneConfig)
    """The settings every run shares. Its ``method``, ``domain``, ``mixture_ratio``, ``output_dir`` and
    ``evaluate_at_end`` are set per run by the planner."""
    domains: list[str] = field(default_factory=lambda: ["finance"])
    """Domain corpora (bundled names or files/folders); several = one sweep per domain, all reusing one ĝ_G.
    ``run.domain_eval`` (one file) only with a single domain."""
    methods: list[str] | None = None
    """Names from :data:`dba.methods.METHODS` to run (in the table's order); None = ``dba.compare.DEFAULT_METHODS``
    (direct, mixture, dba, its three ablations, two variants); ``["all"]`` = every method."""
    ratios: list[float] = field(default_factory=lambda: list(DEFAULT_RATIOS))
    """Mixture sweep: share of general examples per batch, each in (0, 1)."""
    output_dir: str = "runs/compare"
    """The comparison folder."""
    seeds: int = 1
    """Runs per method, with seeds run.seed, run.seed + 1, ... (data order, adapter init); one anchor and one base
    evaluation shared by all; results get a row per seed and a pooled row per method (seed x item intervals)."""
    wiseft: list[float] = field(default_factory=list)
    """WiSE-FT α values (in (0, 1)) at which every finished run's interpolation with the base is scored (no
    training; cost = scoring time); empty = none."""

    def __init__(self, run: FinetuneConfig | None = None, domains: list[str] | None = None,
                 methods: list[str] | None = None, ratios: list[float] | None = None,
                 output_dir: str = "runs/compare", seeds: int = 1, wiseft: list[float] | None = None,
                 **run_fields):
        bad = sorted(set(run_fields) - set(_RUN_FIELDS))
        if bad:
            raise DBAError(f"Unknown CompareConfig fields: {', '.join(bad)}.")
        if run is None:
            run = FinetuneConfig(**run_fields)
        elif run_fields:
            run = dataclasses.replace(run, **run_fields)
        object.__setattr__(self, "run", run)
        object.__setattr__(self, "domains", list(domains) if domains is not None else ["finance"])
        object.__setattr__(self, "methods", list(methods) if methods is not None else None)
        object.__setattr__(self, "ratios", list(ratios) if ratios is not None else list(DEFAULT_RATIOS))
        object.__setattr__(self, "output_dir", str(output_dir))
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "wiseft", [float(a) for a in wiseft] if wiseft else [])
        self.validate()

    def __getattr__(self, name):  # only called for names that are not the comparison's own
        if name in _RUN_FIELDS and "run" in self.__dict__:
            return getattr(self.__dict__["run"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in _RUN_FIELDS and name not in self.__dataclass_fields__:
            setattr(self.run, name, value)
        else:
            object.__setattr__(self, name, value)

    @classmethod
    def _upgrade_dict(cls, data: dict) -> dict:
        """compare.json of earlier versions held the run fields flat: fold them into ``run``."""
        flat = {k: data.pop(k) for k in list(data) if k in _RUN_FIELDS and k not in cls.__dataclass_fields__}
        if flat:
            data["run"] = {**flat, **data.get("run", {})}
        return data

    def validate(self) -> None:
        if not isinstance(self.run, FinetuneConfig):
            _fail(f"CompareConfig.run must be a FinetuneConfig, got {type(self.run).__name__}.")
        if not self.domains:
            _fail("No domain given; name at least one (e.g. finance).")
        if len(set(self.domains)) != len(self.domains):
            _fail(f"Domains repeat: {', '.join(self.domains)}.")
        if self.run.domain_eval and len(self.domains) > 1:
            _fail("domain_eval names one file; with several domains each uses its own bundled eval set.")
        if self.methods is not None:
            if not self.methods:
                _fail("No methods to compare.")
            if len(set(self.methods)) != len(self.methods):
                _fail("A method is listed twice.")
        for r in self.ratios:
            _real("mixture ratio", r)
            if not 0.0 < r < 1.0:
                _fail(f"Mixture ratio {r} is not in (0, 1) (0 is direct, 1 is general data only).")
        _whole("seeds", self.seeds, low=1)
        for a in self.wiseft:
            _real("WiSE-FT alpha", a)
            if not 0.0 < a < 1.0:
                _fail(f"WiSE-FT alpha {a} is not in (0, 1) (0 is the base model, 1 the run itself).")
        if len(set(self.wiseft)) != len(self.wiseft):
            _fail("A WiSE-FT alpha is listed twice.")

    def run_config(self, **per_run) -> FinetuneConfig:
        """One run's config: ``run`` with the per-run fields changed (a fresh copy; validated)."""
        return dataclasses.replace(copy.deepcopy(self.run), **per_run)


# --------------------------------------------------------------------------------------------------------------------
# Presets


@dataclass(frozen=True)
class Preset:
    """A named size of run, the same from every entry point (``--preset NAME`` / ``--quick`` on ``dba train``,
    ``dba anchor`` and ``dba compare``; ``DBA_STUDIO_PRESET`` in the app; notebooks, bench, scripts)."""

    name: str
    summary: str
    """What it is for, one line."""
    run: FinetuneConfig
    """The run config (use :meth:`run_config` for a copy you may change)."""
    duration: str = ""
    """How long it takes, as measured (for the app to tell the class before they click)."""
    confirmed: bool = True
    """False while its numbers await measurement (docs/defaults.md)."""
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    """The mixture sweep of this preset's comparison (each ratio must give a distinct share of the batch)."""
    lesson_eval_every: int | None = None
    """How often the five-minute lesson scores its two models on the way (``dba.lesson``): None = half the run (one
    intermediate evaluation per run), 0 = at the start and the end only (each evaluation of the embedded default costs
    ≈ 28 s on 2 CPU cores, so the ``lesson`` preset scores only at its ends to fit in five minutes)."""

    def run_config(self, **changes) -> FinetuneConfig:
        """A fresh copy of :attr:`run` with ``changes`` applied."""
        return dataclasses.replace(copy.deepcopy(self.run), **changes)

    def anchor_config(self, **changes) -> AnchorConfig:
        """The anchor pass of this preset (``dba anchor --preset``), with ``changes`` applied."""
        return dataclasses.replace(self.run.anchor_config(), **changes)

    def compare_config(self, **changes) -> CompareConfig:
        """A :class:`CompareConfig` holding a fresh copy of :attr:`run` (comparison fields or run fields in
        ``changes``)."""
        changes.setdefault("ratios", list(self.ratios))
        return CompareConfig(run=copy.deepcopy(self.run), **changes)


def _smoke() -> Preset:
    return Preset(
        "smoke", "seconds on the tiny random model: tests, and checking a deployment",
        FinetuneConfig(model="tiny", lora=LoraSettings(rank=4), steps=3, batch_size=4, anchor_batches=2,
                       eval_items=4, max_length=128, eval_scorer="loglik"),
        duration="seconds", ratios=(0.25, 0.5))


def _quick() -> Preset:
    """The embedded default, LoRA r 8 (α 16), 16 steps × batch 8, 8 anchor batches, 20 eval items per set. Measured on
    2 otherwise idle CPU cores, finance, ``dba compare --quick`` (12 runs): 27 min 47 s in all — anchor 54 s, base
    evaluation 48 s, each run 73–94 s of training plus ≈ 45 s of final evaluation (2026-11-29; docs/defaults.md). At
    this size one eval item is 5 points and direct fine-tuning mostly does not forget: the preset shows the
    machinery, not an effect."""
    return Preset(
        "quick", "the embedded default in minutes on 2 CPU cores (shows the machinery, not an effect)",
        FinetuneConfig(lora=LoraSettings(rank=8), steps=16, batch_size=8, anchor_batches=8, eval_items=20),
        duration="about 12 minutes on 2 CPU cores with the embedded model for the lesson, 28 for dba compare "
                 "--quick; a minute or two on a GPU")


def _study() -> Preset:
    """The forgetting regime of the study (issue 12): full fine-tuning of the embedded default at η_0 = 1e-3,
    40 steps × batch 8, max_length 128, every eval item. Measured over 3 seeds on finance (docs/defaults.md,
    2026-12-01): direct fine-tuning ΔS_G −12.6 [−15.8, −9.4] and ΔS_D +28.1 [+15.6, +40.3] points; 3.0 s per step
    and 67 s per final evaluation on 2 idle CPU cores."""
    return Preset(
        "study", "the forgetting regime: full fine-tuning, η_0 1e-3, 40 steps × 8 (direct forgets and learns)",
        FinetuneConfig(lora=None, steps=40, batch_size=8, max_length=128, anchor_batches=8, eval_items=None,
                       dba=DBAConfig(anneal=AnnealConfig(lr=1e-3))),
        duration="about 2 minutes of training and 1 minute of evaluation per run on 2 CPU cores")


def _lesson() -> Preset:
    """The study regime cut for a class: full fine-tuning, η_0 = 1e-3, 24 steps × batch 8 (≈ 72 s of training at
    3 s per step on 2 idle CPU cores), the first 100 general items (the file interleaves its categories) and every
    domain item. Chosen from the one-seed probes of 2026-12-01 (docs/defaults.md): 24 steps at 1e-3 kept both the
    S_G drop (−10 points [−16, −5]) and the S_D gain (+17 [+6, +28]) outside the noise; 16 steps at 2e-3 forgot but
    learnt too little to show; 40 steps is the study itself. The Studio's lesson on it, timed through the page
    (scripts/time_lesson.py): 282.6 s on a first visit, 217.3 s on a repeat, 2 idle CPU cores."""
    return Preset(
        "lesson", "the study regime in about 75 s of training per run on 2 CPU cores",
        FinetuneConfig(lora=None, steps=24, batch_size=8, max_length=128, anchor_batches=8, eval_items=100,
                       dba=DBAConfig(anneal=AnnealConfig(lr=1e-3))),
        duration="the lesson: 4.7 min on 2 CPU cores on a first visit, 3.6 min once the base scores and ĝ_G are "
                 "cached", confirmed=False, lesson_eval_every=0)


def _full() -> Preset:
    return Preset("full", "the library defaults: LoRA r 16, 60 steps × 8, every eval item", FinetuneConfig())


_PRESET_BUILDERS: dict[str, Callable[[], Preset]] = {
    "smoke": _smoke, "quick": _quick, "lesson": _lesson, "study": _study, "full": _full}

PRESET_NAMES = tuple(_PRESET_BUILDERS)
"""Every preset, smallest first."""


def preset(name: str) -> Preset:
    """The preset called ``name`` (a fresh object: changing it changes nothing else)."""
    try:
        return _PRESET_BUILDERS[str(name).strip().lower()]()
    except KeyError:
        raise DBAError(f"Unknown preset {name!r}; choose from: {', '.join(PRESET_NAMES)}.") from None
