"""95 % confidence intervals for the scores, by the bootstrap over evaluation items (and over seeds).

A score of a set is a mean of per-item values (1/0 for right/wrong, 0.5 steps for the "mean" scorer, or an item's
answer NLL per token). Its uncertainty comes from *which* items the set happens to hold, so the intervals here
resample items:

- :func:`bootstrap_mean` — the interval of a score: draw ``n`` item indices with replacement, take the mean, repeat
  ``n_resamples`` times; the interval is the 2.5 % and 97.5 % quantiles of those means (the *percentile* bootstrap,
  ``numpy.quantile`` with its default linear interpolation). The point estimate is the mean of the data itself.
- :func:`bootstrap_diff` — the interval of a DIFFERENCE between two models scored on the same items (*paired*): one
  set of item indices per resample, applied to both, so the items' shared difficulty cancels. This is much narrower
  than comparing two separate intervals when the models agree on most items (they usually do).
- :func:`bootstrap_hm` / :func:`bootstrap_hm_diff` — S = harmonic mean of S_G and S_D: the general and the domain
  items are resampled independently (they are different sets), S is computed per resample; for a difference of S
  each set is paired between the two models.
- **Several seeds** (values of shape ``(seeds, items)``): a *two-level* bootstrap. Each resample draws the seeds with
  replacement (``seeds`` of them) and, independently, the items with replacement (the same item indices for every
  seed: every seed is scored on the same items); the statistic is the mean over the drawn seeds × drawn items. It
  covers both the run-to-run spread (data order, adapter init) and the item sampling. In a difference, seed ``k`` of
  one method is paired with seed ``k`` of the other (``dba compare --seeds`` gives both the same seeds), and a base
  model with one value per item (no seed) is the same for every seed.

:func:`within_noise` says whether a difference's interval contains 0. Everything is deterministic for a given
``seed`` (``numpy.random.default_rng(seed)``) and vectorised: a resample is a row of item counts, and every mean is
one matrix product (10 000 resamples over 500 items: about 0.2 s on one CPU core).
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .errors import EvaluationError

LEVEL = 0.95
"""Confidence level of every interval the kit reports."""
N_RESAMPLES = 10_000
"""Bootstrap resamples per interval (the Monte-Carlo error of a 95 % bound is then well below 0.5 points)."""
SEED = 0
"""Default random seed of the resampling: the same data always gives the same interval."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval."""

    estimate: float
    """The statistic on the data itself (a mean, a difference of means, or a harmonic mean)."""
    lo: float
    """Lower bound of the interval."""
    hi: float
    """Upper bound of the interval."""
    n: int
    """Items behind it (for S or a difference of S: general + domain items)."""
    n_seeds: int = 1
    """Seeds (runs) behind it; 1 = items only."""
    level: float = LEVEL
    """Confidence level."""
    method: str = "item bootstrap"
    """How it was computed: "item bootstrap", "paired item bootstrap", "seed x item bootstrap", ..."""

    def contains(self, x: float = 0.0) -> bool:
        return self.lo <= x <= self.hi

    @property
    def within_noise(self) -> bool:
        """For a difference: True when the interval contains 0 (no evidence of a change)."""
        return within_noise(self)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0

    def as_tuple(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Interval":
        return cls(**{k: d[k] for k in ("estimate", "lo", "hi", "n") if k in d},
                   **{k: d[k] for k in ("n_seeds", "level", "method") if k in d})

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def within_noise(interval: Interval | tuple[float, float] | None) -> bool | None:
    """Whether a DIFFERENCE is within noise: its interval contains 0. None for a missing interval."""
    if interval is None:
        return None
    lo, hi = (interval.lo, interval.hi) if isinstance(interval, Interval) else interval
    return bool(lo <= 0.0 <= hi)


def describe_difference(interval: Interval | None, points: bool = True) -> str:
    """``"+12.5 points [+4.0, +21.0]"`` or ``"... (within noise)"``; ``"-"`` for None. ``points``: ×100."""
    if interval is None:
        return "-"
    k = 100.0 if points else 1.0
    unit = " points" if points else ""
    s = f"{k * interval.estimate:+.1f}{unit} [{k * interval.lo:+.1f}, {k * interval.hi:+.1f}]"
    return s + (" (within noise)" if interval.within_noise else "")


# --------------------------------------------------------------------------------------------------------------------
# Resampling


def _values(x, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise EvaluationError(f"{what}: per-item values must be a list (items) or a table (seeds x items).")
    if a.shape[1] == 0 or a.shape[0] == 0:
        raise EvaluationError(f"{what}: no items to compute an interval over.")
    if not np.all(np.isfinite(a)):
        raise EvaluationError(f"{what}: per-item values must be finite numbers.")
    return a


def resample_counts(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_resamples, n)`` counts: row r says how often each index appears in resample r, whose ``n`` indices are
    ``rng.integers(0, n, size=(n_resamples, n))[r]`` (with replacement)."""
    idx = rng.integers(0, n, size=(n_resamples, n))
    flat = idx + n * np.arange(n_resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=n_resamples * n).reshape(n_resamples, n).astype(np.float64)


def percentile_interval(stats: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The (1-level)/2 and 1-(1-level)/2 quantiles of the bootstrap statistics (numpy's linear interpolation)."""
    if not 0.0 < level < 1.0:
        raise EvaluationError(f"level must be between 0 and 1, got {level}.")
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(stats, dtype=np.float64), [a, 1.0 - a])
    return float(lo), float(hi)


@functools.lru_cache(maxsize=8)
def _counts(n_items: tuple[int, ...], n_seeds: int, n_resamples: int, seed: int):
    """The draws of :class:`_Draw`, kept for the next call with the same sizes (drawing is ~100x the cost of the
    statistic; a report computes many intervals over the same sets). Stored compactly (uint16 counts), read-only."""
    rng = np.random.default_rng(seed)
    items = [resample_counts(n, n_resamples, rng) for n in n_items]
    seeds = resample_counts(n_seeds, n_resamples, rng) if n_seeds > 1 else None
    small = [a.astype(np.uint16) if a.shape[1] < 65536 else a for a in items]
    for a in small:
        a.setflags(write=False)
    return small, seeds


class _Draw:
    """The resamples of one bootstrap: item counts per set and seed counts, drawn in a fixed order from one rng
    (items of the first set, then of the second, then the seeds), so that paired statistics share them."""

    def __init__(self, n_items: Sequence[int], n_seeds: int, n_resamples: int, seed: int):
        if n_resamples < 1:
            raise EvaluationError(f"n_resamples must be at least 1, got {n_resamples}.")
        self.items, self.seeds = _counts(tuple(int(n) for n in n_items), int(n_seeds), int(n_resamples), int(seed))

    def mean(self, k: int, values: np.ndarray) -> np.ndarray:
        """Resampled mean of ``values`` (seeds x items) with the item draw of set ``k``: shape (n_resamples,)."""
        counts = self.items[k].astype(np.float64)
        per_seed = counts @ values.T / values.shape[1]  # (R, seeds): mean over the drawn items, per seed
        if self.seeds is None:
            return per_seed.mean(axis=1) if per_seed.shape[1] > 1 else per_seed[:, 0]
        return (self.seeds * per_seed).sum(axis=1) / values.shape[0]


def _method(base: str, n_seeds: int) -> str:
    return base.replace("item bootstrap", "seed x item bootstrap") if n_seeds > 1 else base


def _hm(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    s = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, 2.0 * a * b / np.where(s > 0, s, 1.0), 0.0)


def _pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Two value tables on the same items; a single-row table (no seeds, e.g. the base model) is broadcast."""
    if a.shape[1] != b.shape[1]:
        raise EvaluationError(f"{what}: a paired difference needs the same items on both sides "
                              f"({a.shape[1]} vs {b.shape[1]} items).")
    if a.shape[0] != b.shape[0]:
        if min(a.shape[0], b.shape[0]) != 1:
            raise EvaluationError(f"{what}: {a.shape[0]} vs {b.shape[0]} seeds; pair equal numbers of seeds, or "
                                  "one side with a single run.")
        s = max(a.shape[0], b.shape[0])
        a, b = np.broadcast_to(a, (s, a.shape[1])), np.broadcast_to(b, (s, b.shape[1]))
    return a, b


# --------------------------------------------------------------------------------------------------------------------
# Intervals


def bootstrap_mean(values, *, level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Interval:
    """Interval of a score = the mean of per-item values (a list), or of per-seed per-item values (seeds x items,
    two-level bootstrap)."""
    v = _values(values, "bootstrap_mean")
    draw = _Draw([v.shape[1]], v.shape[0], n_resamples, seed)
    lo, hi = percentile_interval(draw.mean(0, v), level)
    return Interval(float(v.mean()), lo, hi, v.shape[1], v.shape[0], level, _method("item bootstrap", v.shape[0]))


def bootstrap_diff(a, b, *, level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Interval:
    """Interval of mean(a) - mean(b), paired: a and b are the same items (same order) scored by two models; every
    resample uses one set of item indices (and of seeds) for both."""
    va, vb = _pair(_values(a, "bootstrap_diff"), _values(b, "bootstrap_diff"), "bootstrap_diff")
    draw = _Draw([va.shape[1]], va.shape[0], n_resamples, seed)
    diff = va - vb
    lo, hi = percentile_interval(draw.mean(0, diff), level)
    return Interval(float(diff.mean()), lo, hi, va.shape[1], va.shape[0], level,
                    _method("paired item bootstrap", va.shape[0]))


def bootstrap_diff_unpaired(a, b, *, level: float = LEVEL, n_resamples: int = N_RESAMPLES,
                            seed: int = SEED) -> Interval:
    """mean(a) - mean(b) with a and b resampled independently (for sets that are not the same items; also shows
    how much the pairing gains)."""
    va, vb = _values(a, "bootstrap_diff_unpaired"), _values(b, "bootstrap_diff_unpaired")
    if va.shape[0] != vb.shape[0]:
        raise EvaluationError("bootstrap_diff_unpaired: both sides need the same number of seeds.")
    draw = _Draw([va.shape[1], vb.shape[1]], va.shape[0], n_resamples, seed)
    stats = draw.mean(0, va) - draw.mean(1, vb)
    lo, hi = percentile_interval(stats, level)
    return Interval(float(va.mean() - vb.mean()), lo, hi, va.shape[1] + vb.shape[1], va.shape[0], level,
                    _method("unpaired item bootstrap", va.shape[0]))


def bootstrap_hm(g, d, *, level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Interval:
    """Interval of S = HM(mean(g), mean(d)): general and domain items resampled independently, HM per resample.
    With seeds (both tables seeds x items), the same seeds are drawn for both sets (seed k is one run)."""
    vg, vd = _values(g, "bootstrap_hm"), _values(d, "bootstrap_hm")
    if vg.shape[0] != vd.shape[0]:
        raise EvaluationError("bootstrap_hm: the general and domain values need the same number of seeds.")
    draw = _Draw([vg.shape[1], vd.shape[1]], vg.shape[0], n_resamples, seed)
    lo, hi = percentile_interval(_hm(draw.mean(0, vg), draw.mean(1, vd)), level)
    return Interval(float(_hm(vg.mean(), vd.mean())), lo, hi, vg.shape[1] + vd.shape[1], vg.shape[0], level,
                    _method("item bootstrap, sets independent", vg.shape[0]))


def bootstrap_hm_diff(g_a, d_a, g_b, d_b, *, level: float = LEVEL, n_resamples: int = N_RESAMPLES,
                      seed: int = SEED) -> Interval:
    """Interval of S_a - S_b (S = HM of the general and domain means), each set paired between the models a, b."""
    ga, gb = _pair(_values(g_a, "bootstrap_hm_diff"), _values(g_b, "bootstrap_hm_diff"), "bootstrap_hm_diff")
    da, db = _pair(_values(d_a, "bootstrap_hm_diff"), _values(d_b, "bootstrap_hm_diff"), "bootstrap_hm_diff")
    if ga.shape[0] != da.shape[0]:
        raise EvaluationError("bootstrap_hm_diff: the general and domain values need the same number of seeds.")
    draw = _Draw([ga.shape[1], da.shape[1]], ga.shape[0], n_resamples, seed)
    stats = _hm(draw.mean(0, ga), draw.mean(1, da)) - _hm(draw.mean(0, gb), draw.mean(1, db))
    lo, hi = percentile_interval(stats, level)
    est = float(_hm(ga.mean(), da.mean()) - _hm(gb.mean(), db.mean()))
    return Interval(est, lo, hi, ga.shape[1] + da.shape[1], ga.shape[0], level,
                    _method("paired item bootstrap, sets independent", ga.shape[0]))
