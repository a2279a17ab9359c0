"""Planning a comparison: which runs, in which order, each with its :class:`dba.config.FinetuneConfig`.

Every run is the comparison's ``run`` config with four things set (``dataclasses.replace``): the method's training
loop (``run_as``), the domain, the mixture ratio and the run folder; its optimiser config is the method's
(:meth:`dba.methods.Method.optimizer_config` of the shared one), and the config is resolved, so each run folder's
``config.json`` records what ran.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import CompareConfig, FinetuneConfig
from ..errors import DBAError
from ..methods import METHODS as METHOD_TABLE
from ..methods import get as get_method

METHODS = tuple(name for name, m in METHOD_TABLE.items() if m.trains)
"""What ``compare`` can run, in the order of :data:`dba.methods.METHODS` (the one table). ``mixture`` expands into
one run per ratio."""

DEFAULT_METHODS = ("direct", "mixture", "dba", "dba-no-ggb", "dba-no-dc", "dba-no-al", "dba-projection",
                   "dba-relative")
"""What ``compare`` runs when no methods are named (``CompareConfig.methods = None``): direct, the mixture sweep,
DBA, the paper's three ablations and two variants — the comparison the ``quick`` preset's time was measured on
(12 runs with 5 ratios). ``methods = ["all"]`` / ``--methods all`` runs every method of :data:`METHODS`."""

DBA_FAMILY = tuple(name for name in METHODS if METHOD_TABLE[name].needs_anchor)
"""The methods that use the shared global gradient ĝ_G."""


@dataclass
class RunSpec:
    """One run of the comparison."""

    domain: str
    method: str
    """A name of :data:`dba.methods.METHODS`."""
    label: str
    """Unique within a domain: the method, or ``mixture-<ratio>``."""
    ratio: float | None
    run_dir: Path
    config: FinetuneConfig
    """The resolved config of the run."""
    seed: int = 0
    """The run's seed (``config.seed``): data order, adapter init, dropout."""

    @property
    def needs_anchor(self) -> bool:
        return get_method(self.method).needs_anchor


def domain_key(domain: str) -> str:
    """A domain as a folder / file-name part: its file stem or folder name, other characters replaced by ``_``."""
    p = Path(domain)
    name = p.stem if p.suffix else p.name
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "domain"


def selected_methods(cfg: CompareConfig) -> list[str]:
    """The methods to run, in the table's order (``cfg.methods`` None = :data:`DEFAULT_METHODS`; ``["all"]`` =
    every method compare can run)."""
    if cfg.methods is None:
        return [m for m in METHODS if m in DEFAULT_METHODS]
    if list(cfg.methods) == ["all"]:
        return list(METHODS)
    unknown = [m for m in cfg.methods if m not in METHOD_TABLE]
    if unknown:
        raise DBAError(f"Unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}.")
    post_hoc = [m for m in cfg.methods if m not in METHODS]
    if post_hoc:
        raise DBAError(f"{', '.join(post_hoc)} do not train (post-hoc); compare runs: {', '.join(METHODS)}.")
    return [m for m in METHODS if m in cfg.methods]


def validate(cfg: CompareConfig) -> None:
    """Raise :class:`DBAError` for a comparison that cannot run or would compare the same thing twice (the numbers
    themselves were checked when the config was built)."""
    cfg.validate()
    if cfg.run.domain_heldout not in (None, "none") and len(cfg.domains) > 1:
        raise DBAError("domain_heldout names one file; with several domains each uses its own bundled held-out "
                       "pairs.")
    keys = [domain_key(d) for d in cfg.domains]
    if len(set(keys)) != len(keys):
        raise DBAError(f"Domains repeat: {', '.join(cfg.domains)}.")
    chosen = selected_methods(cfg)
    if any(METHOD_TABLE[m].run_as == "mixture" for m in chosen):
        if not cfg.ratios:
            raise DBAError("The mixture sweep needs at least one ratio.")
        batch = cfg.run.batch_size
        seen: dict[int, float] = {}
        for r in cfg.ratios:
            n = round(r * batch)
            if n < 1 or n >= batch:
                raise DBAError(f"Mixture ratio {r} gives {n} general examples in a batch of {batch}, i.e. no "
                               "mixture; choose a ratio in (0.5/batch, 1 - 0.5/batch) or a larger batch.")
            if n in seen:
                raise DBAError(f"Mixture ratios {seen[n]} and {r} both give {n} general examples per batch of "
                               f"{batch}: the same run twice. Choose distinct ratios or a larger batch.")
            seen[n] = r


def seeds_of(cfg: CompareConfig) -> list[int]:
    """The seeds every method runs with: ``run.seed``, ``run.seed + 1``, ... (``cfg.seeds`` of them)."""
    return [cfg.run.seed + k for k in range(cfg.seeds)]


def _run_dir(cfg: CompareConfig, domain: str, label: str, seed: int) -> Path:
    """``runs/[<domain>/]<label>[/seed-<k>]``: the domain level with several domains, the seed level with several
    seeds (one seed keeps the layout of earlier versions, so old folders resume)."""
    d = Path(cfg.output_dir) / "runs"
    d = d / domain_key(domain) / label if len(cfg.domains) > 1 else d / label
    return d / f"seed-{seed}" if cfg.seeds > 1 else d


def plan_runs(cfg: CompareConfig) -> list[RunSpec]:
    """Every run of the comparison, in order: per domain, per seed, the methods in :data:`METHODS` order."""
    validate(cfg)
    specs = []
    for domain in cfg.domains:
        for seed in seeds_of(cfg):
            for name in selected_methods(cfg):
                specs += _method_specs(cfg, domain, name, seed)
    return specs


def _method_specs(cfg: CompareConfig, domain: str, name: str, seed: int) -> list[RunSpec]:
    method = METHOD_TABLE[name]
    specs = []
    for r in list(cfg.ratios) if method.run_as == "mixture" else [None]:
        label = f"{name}-{r:g}" if r is not None else name
        run_dir = _run_dir(cfg, domain, label, seed)
        ft = cfg.run_config(
            method=method.run_as, domain=domain, anchor=None, dba=method.optimizer_config(cfg.run.dba),
            mixture_ratio=r if r is not None else cfg.run.mixture_ratio, output_dir=str(run_dir), seed=seed,
            # The base model is scored once by compare, and the final model right after the run, outside its
            # clock (see dba.compare).
            evaluate_at_end=False)
        specs.append(RunSpec(domain, name, label, r, run_dir, ft.resolved(), seed))
    return specs
