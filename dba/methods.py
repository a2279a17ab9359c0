"""Every training method DBA Studio knows, in ONE ordered table: ``METHODS`` (name -> :class:`Method`).

The CLI (``--method``, ``dba compare --methods``), compare's planner, the app and the plots read this table; adding a
variant means adding one entry here (and, if it needs a new piece of maths, one transform in :mod:`dba.transforms`).

A method turns the run's base optimiser config (:class:`dba.config.DBAConfig`, which carries η_0, T, k_0, …) into the
config of that method with :meth:`Method.optimizer_config`; :func:`dba.transforms.build_chain` turns that config into
the chain of gradient transforms the optimiser runs (see ``docs/algorithm.md`` for the method → chain table).

This module imports nothing heavy (no torch), so listings stay fast.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

from .errors import DBAError

if TYPE_CHECKING:  # pragma: no cover
    from .config import DBAConfig

Kind = Literal["direct", "mixture", "dba", "baseline"]


@dataclass(frozen=True)
class Method:
    """One entry of :data:`METHODS`."""

    name: str
    """The one name of the method (CLI, run labels, plots)."""
    kind: Kind
    """Its family, for plot colours and grouping: ``direct``, ``mixture``, ``dba`` (DBA, its ablations and variants)
    or ``baseline`` (continual-learning baselines: EWC, L2-SP, WiSE-FT)."""
    summary: str
    """One line for ``--methods`` listings and the UI."""
    needs_anchor: bool
    """Needs the global gradient ĝ (the one zero-learning-rate pass on the general corpus, shared by every method)."""
    needs_general_data: bool
    """Trains on general examples itself (the mixture); the anchor's own general pass is ``needs_anchor``."""
    configure: Callable[["DBAConfig"], None]
    """Edits a *copy* of the base optimiser config into this method's config (see :meth:`optimizer_config`); usually
    a :class:`Changes` (``changes(boost__mode="update")``), any callable works."""
    run_as: Literal["dba", "direct", "mixture"] = "dba"
    """The training loop this method runs in (:class:`dba.train.FinetuneConfig` ``method``); ``dba`` loads the
    anchor."""
    trains: bool = True
    """False for post-hoc methods (WiSE-FT: interpolates a finished run's weights, no training)."""
    origin: Literal["paper", "reconstructed", "ablation", "variant", "baseline"] = "variant"
    """Where it comes from: the paper, the paper's ablations, this project's reconstruction, this project's variants, or
    a published baseline."""

    def optimizer_config(self, base: "DBAConfig") -> "DBAConfig":
        """This method's optimiser config: a deep copy of ``base`` with the method's changes (``base`` is untouched)."""
        cfg = copy.deepcopy(base)
        self.configure(cfg)
        return cfg


# --------------------------------------------------------------------------------------------------------------------
# What each method changes in the base config


@dataclass(frozen=True)
class Changes:
    """A method's changes to the base config, ``section.field -> value`` (applied to a copy by
    :meth:`Method.optimizer_config`); printed as ``boost.mode='update'``."""

    items: tuple[tuple[str, object], ...] = ()

    def __call__(self, cfg) -> None:
        for path, value in self.items:
            section, name = path.split(".")
            target = getattr(cfg, section)
            if not hasattr(target, name):   # a typo would otherwise add an attribute nobody reads
                raise DBAError(f"Method config change {path!r}: {type(target).__name__} has no field {name!r}.")
            setattr(target, name, value)

    def __str__(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.items) or "—"


def changes(**kw) -> Changes:
    """``changes(boost__mode="update")`` -> Changes((("boost.mode", "update"),))."""
    return Changes(tuple((k.replace("__", "."), v) for k, v in kw.items()))


NO_ANCHOR_TERMS = dict(boost__enabled=False, correction__enabled=False)
"""No boost and no correction: the optimiser of direct, mixture and the penalty baselines."""

BUDGET = 0.05
"""``dba-budget``'s budget: 0.05 nats of linearised general-loss decrease. Not tuned (a starting point)."""


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("direct", "direct", "fine-tune on domain data only, same annealed schedule, no anchor",
           needs_anchor=False, needs_general_data=False, configure=changes(**NO_ANCHOR_TERMS), run_as="direct",
           origin="baseline"),
    Method("mixture", "mixture", "domain batches with a share r of general examples (one run per ratio), no anchor",
           needs_anchor=False, needs_general_data=True, configure=changes(**NO_ANCHOR_TERMS), run_as="mixture",
           origin="baseline"),
    Method("dba", "dba", "DBA as reconstructed from the paper: convex boost γ·ĝ+(1−γ)·g_D, DC λ=1+β(1−ρ)/2, cosine AL",
           needs_anchor=True, needs_general_data=False, configure=changes(), origin="reconstructed"),
    Method("dba-no-ggb", "dba", "ablation: DBA without the global-gradient boost (γ = 0)",
           needs_anchor=True, needs_general_data=False, configure=changes(boost__enabled=False), origin="ablation"),
    Method("dba-no-dc", "dba", "ablation: DBA without dynamic correction (λ = 1)",
           needs_anchor=True, needs_general_data=False, configure=changes(correction__enabled=False), origin="ablation"),
    Method("dba-no-al", "dba", "ablation: DBA without annealing (lr = η_0 throughout)",
           needs_anchor=True, needs_general_data=False, configure=changes(anneal__enabled=False), origin="ablation"),
    Method("dba-projection", "dba", "variant: A-GEM projection of g_D off −ĝ when they conflict (never pushes along ĝ)",
           needs_anchor=True, needs_general_data=False, configure=changes(boost__mode="projection")),
    Method("dba-relative", "dba", "variant: ĝ rescaled to ‖g_D‖ each step before the convex boost",
           needs_anchor=True, needs_general_data=False, configure=changes(boost__scale="relative")),
    Method("dba-paper", "dba", "the paper's DBA as reconstructed here (today identical to `dba`; kept when the "
           "default changes)", needs_anchor=True, needs_general_data=False, configure=changes(), origin="reconstructed"),
    Method("dba-clip", "dba", "variant: ĝ scaled by the factor the loop's clipping applied to g_D (clip-consistent "
           "boost)", needs_anchor=True, needs_general_data=False, configure=changes(boost__clip="anchor")),
    Method("dba-update", "dba", "variant: boost in update space — Adam's moments from g_D only, γ·clip(ĝ/(√v̂+ε), ±1) "
           "added to the update", needs_anchor=True, needs_general_data=False, configure=changes(boost__mode="update")),
    Method("dba-budget", "dba", f"variant: boost stops once the linearised general gain ⟨ĝ, θ_0 − θ_t⟩ reaches "
           f"{BUDGET:g} nats", needs_anchor=True, needs_general_data=False, configure=changes(boost__budget=BUDGET)),
    Method("dba-update-projection", "dba", "variant: A-GEM on Adam's update — its component along ĝ removed when "
           "it raises the general loss", needs_anchor=True, needs_general_data=False, configure=changes(boost__mode="update-projection")),
    Method("dba-conservative", "dba", "variant: DC shrinks the step on conflict, λ = 1 − β(1−ρ)/4",
           needs_anchor=True, needs_general_data=False, configure=changes(correction__function="conservative")),
    Method("ewc", "baseline", "EWC: + λ·F⊙(θ−θ_0), diagonal Fisher from the anchor pass (no boost)",
           needs_anchor=True, needs_general_data=False, configure=changes(**NO_ANCHOR_TERMS, penalty__kind="ewc"), origin="baseline"),
    Method("l2sp", "baseline", "L2-SP: + α·(θ−θ_0), a pull towards the start (no anchor)",
           needs_anchor=False, needs_general_data=False, configure=changes(**NO_ANCHOR_TERMS, penalty__kind="l2sp"), run_as="direct", origin="baseline"),
    Method("wiseft", "baseline", "WiSE-FT: interpolate base and tuned weights of a finished run (α = 0.25, 0.5, "
           "0.75), no training", needs_anchor=False, needs_general_data=False, configure=changes(), run_as="direct",
           trains=False, origin="baseline"),
)}
"""Every method, in the order listings, plans and plots use."""


def names() -> list[str]:
    return list(METHODS)


def get(name: str) -> Method:
    """The method called ``name``; a :class:`DBAError` listing the valid names otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise DBAError(f"Unknown method {name!r}; choose from: {', '.join(METHODS)}.") from None


def kind_of(label: str) -> str:
    """The family of a run label or method name, for plot colours: ``mixture-0.25`` -> ``mixture``, ``dba-no-dc`` ->
    ``dba``, ``ewc`` -> ``baseline``; ``base`` for the base model, ``other`` when nothing matches.

    A label is a method name, optionally followed by a separator and a suffix (``-0.25``, `` (r=0.25)``, ``_seed1``):
    the longest method name that the label starts with wins."""
    s = str(label).strip().lower()
    if s.startswith("base"):
        return "base"
    if s in METHODS:
        return METHODS[s].kind
    best = None
    for name in METHODS:
        separated = re.match(r"[\s\-_(@:/=,]|$", s[len(name):])
        if s.startswith(name) and separated and (best is None or len(name) > len(best)):
            best = name
    if best is not None:
        return METHODS[best].kind
    if s.startswith("mix"):
        return "mixture"
    if s.startswith("dba"):
        return "dba"
    return "other"


def chain(name: str, base: "DBAConfig | None" = None) -> str:
    """The transform chain a method runs, as text (``similarity → boost-weight → boost(convex) → … → adamw``)."""
    from .config import DBAConfig
    from .transforms import build_chain

    m = get(name)
    if not m.trains:
        return "(no training: interpolates a finished run's weights, dba/wiseft.py)"
    cfg = m.optimizer_config(base if base is not None else DBAConfig())
    has_anchor = m.needs_anchor
    return str(build_chain(cfg, has_anchor=has_anchor))


def chain_table() -> str:
    """The method → chain table (markdown), for docs and closing notes."""
    rows = ["| method | kind | config changes | chain |", "|---|---|---|---|"]
    rows += [f"| `{n}` | {m.kind} | {m.configure} | {chain(n)} |" for n, m in METHODS.items()]
    return "\n".join(rows)


def listing() -> str:
    """One line per method: name, kind, summary (for ``--methods`` listings)."""
    width = max(len(n) for n in METHODS)
    return "\n".join(f"{m.name:<{width}}  {m.kind:<8}  {m.summary}" for m in METHODS.values())
