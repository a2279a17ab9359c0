"""Tests for dba.stats: the bootstrap against a hand computation, the shape of its intervals, pairing, seeds, and
the within-noise rule."""
from __future__ import annotations

import time

import numpy as np
import pytest

from dba.errors import EvaluationError
from dba.stats import (Interval, bootstrap_diff, bootstrap_diff_unpaired, bootstrap_hm, bootstrap_hm_diff,
                       bootstrap_mean, describe_difference, percentile_interval, resample_counts, within_noise)


def hand_quantile(xs, q):
    """Linear-interpolation quantile written out (numpy's default method 7)."""
    xs = sorted(xs)
    h = (len(xs) - 1) * q
    lo = int(np.floor(h))
    return xs[lo] + (h - lo) * (xs[min(lo + 1, len(xs) - 1)] - xs[lo])


def test_percentile_interval_by_hand():
    stats = [0.0, 0.25, 0.5, 0.75, 1.0]
    lo, hi = percentile_interval(stats, 0.5)            # quantiles 0.25 and 0.75 of 5 points: positions 1 and 3
    assert (lo, hi) == (0.25, 0.75)
    lo, hi = percentile_interval(stats, 0.95)           # 0.025 -> position 0.1 -> 0.025; 0.975 -> 3.9 -> 0.975
    assert lo == pytest.approx(0.025) and hi == pytest.approx(0.975)
    with pytest.raises(EvaluationError):
        percentile_interval(stats, 1.5)


def test_resample_counts_are_the_documented_draw():
    counts = resample_counts(4, 3, np.random.default_rng(7))
    idx = np.random.default_rng(7).integers(0, 4, size=(3, 4))
    for r in range(3):
        assert counts[r].tolist() == [float((idx[r] == j).sum()) for j in range(4)]
    assert counts.sum(axis=1).tolist() == [4.0, 4.0, 4.0]


def test_bootstrap_mean_equals_hand_computation():
    values = [1, 0, 1, 1, 0, 0.5]
    iv = bootstrap_mean(values, n_resamples=50, seed=3)
    idx = np.random.default_rng(3).integers(0, len(values), size=(50, len(values)))
    means = [sum(values[i] for i in row) / len(values) for row in idx]
    assert iv.estimate == pytest.approx(sum(values) / len(values))
    assert iv.lo == pytest.approx(hand_quantile(means, 0.025)) and iv.hi == pytest.approx(hand_quantile(means, 0.975))
    assert iv.n == 6 and iv.n_seeds == 1 and iv.method == "item bootstrap"
    assert bootstrap_mean(values, n_resamples=50, seed=3) == iv, "deterministic for a seed"


def test_two_level_bootstrap_equals_hand_computation():
    v = np.array([[1, 0, 1, 0, 1], [1, 1, 1, 0, 0], [0, 0, 1, 1, 1]], dtype=float)  # 3 seeds x 5 items
    iv = bootstrap_mean(v, n_resamples=40, seed=11)
    rng = np.random.default_rng(11)
    items = rng.integers(0, 5, size=(40, 5))   # items first, then seeds (the documented order)
    seeds = rng.integers(0, 3, size=(40, 3))
    means = [np.mean([v[s, i] for s in seeds[r] for i in items[r]]) for r in range(40)]
    assert iv.lo == pytest.approx(hand_quantile(means, 0.025)) and iv.hi == pytest.approx(hand_quantile(means, 0.975))
    assert iv.estimate == pytest.approx(v.mean()) and iv.n == 5 and iv.n_seeds == 3
    assert iv.method == "seed x item bootstrap"


def test_identical_items_give_a_point():
    iv = bootstrap_mean([0.5] * 30)
    assert iv.lo == pytest.approx(0.5, abs=1e-12) and iv.hi == pytest.approx(0.5, abs=1e-12)
    d = bootstrap_diff([1.0] * 20, [1.0] * 20)
    assert d.lo == pytest.approx(0.0, abs=1e-12) and d.hi == pytest.approx(0.0, abs=1e-12) and d.within_noise


def test_intervals_shrink_with_more_items():
    rng = np.random.default_rng(0)
    widths = []
    for n in (25, 100, 400):
        x = (rng.random(n) < 0.6).astype(float)
        iv = bootstrap_mean(x)
        assert iv.lo <= iv.estimate <= iv.hi
        widths.append(iv.hi - iv.lo)
    assert widths[0] > widths[1] > widths[2]
    # about 1/sqrt(n): 4x the items, half the width (binomial: 2 * 1.96 * sqrt(p(1-p)/n))
    assert widths[1] / widths[2] == pytest.approx(2.0, rel=0.25)
    assert widths[2] == pytest.approx(2 * 1.96 * np.sqrt(0.24 / 400), rel=0.15)


def test_paired_difference_narrower_than_unpaired():
    rng = np.random.default_rng(1)
    base = (rng.random(300) < 0.6).astype(float)
    flip = rng.random(300) < 0.1            # the fine-tuned model changes its answer on 10 % of the items
    tuned = np.where(flip, 1 - base, base)
    paired = bootstrap_diff(tuned, base)
    unpaired = bootstrap_diff_unpaired(tuned, base)
    assert paired.estimate == pytest.approx(unpaired.estimate)
    assert (paired.hi - paired.lo) < 0.5 * (unpaired.hi - unpaired.lo)
    assert paired.method == "paired item bootstrap"


def test_difference_sign_and_within_noise():
    base = [1.0] * 50 + [0.0] * 50
    better = [1.0] * 80 + [0.0] * 20          # right on 30 more items, wrong on none more
    d = bootstrap_diff(better, base)
    assert d.estimate == pytest.approx(0.3) and d.lo > 0 and not d.within_noise
    same_ish = [1.0] * 50 + [0.0] * 50
    same_ish[0], same_ish[60] = 0.0, 1.0      # one item lost, one gained
    d0 = bootstrap_diff(same_ish, base)
    assert d0.estimate == 0.0 and d0.within_noise
    assert within_noise((-0.1, 0.2)) is True and within_noise((0.01, 0.2)) is False and within_noise(None) is None
    assert describe_difference(d).startswith("+30.0 points [")
    assert describe_difference(d0).endswith("(within noise)")
    with pytest.raises(EvaluationError):
        bootstrap_diff([1, 0, 1], [1, 0])


def test_harmonic_mean_interval():
    g = [1.0] * 60 + [0.0] * 40                # 0.6
    d = [1.0] * 30 + [0.0] * 70                # 0.3
    iv = bootstrap_hm(g, d, n_resamples=2000)
    assert iv.estimate == pytest.approx(0.4)    # 2 * 0.18 / 0.9
    assert iv.lo < 0.4 < iv.hi and iv.n == 200
    # by hand: the two sets drawn independently (general first), HM per resample
    rng = np.random.default_rng(0)
    cg, cd = resample_counts(100, 2000, rng), resample_counts(100, 2000, rng)
    mg, md = cg @ np.array(g) / 100, cd @ np.array(d) / 100
    hm = 2 * mg * md / (mg + md)
    assert (iv.lo, iv.hi) == pytest.approx(percentile_interval(hm))
    # difference of S, paired per set: identical models give exactly 0
    z = bootstrap_hm_diff(g, d, g, d)
    assert z.estimate == 0.0 and z.lo == 0.0 and z.hi == 0.0
    up = bootstrap_hm_diff(g, [1.0] * 60 + [0.0] * 40, g, d)
    assert up.estimate == pytest.approx(0.6 - 0.4) and up.lo > 0


def test_seed_difference_against_single_base():
    rng = np.random.default_rng(2)
    base = (rng.random(200) < 0.5).astype(float)
    runs = np.stack([np.where(rng.random(200) < 0.2, 0.0, base) for _ in range(3)])  # each seed forgets ~20 %
    d = bootstrap_diff(runs, base)
    assert d.n_seeds == 3 and d.method == "paired seed x item bootstrap"
    assert d.estimate == pytest.approx((runs - base).mean()) and d.hi < 0
    with pytest.raises(EvaluationError):
        bootstrap_diff(runs, np.stack([base, base]))  # 3 seeds vs 2


def test_bad_values_refused():
    for bad in ([], [[]], [1.0, float("nan")], np.zeros((2, 2, 2))):
        with pytest.raises(EvaluationError):
            bootstrap_mean(bad)


def test_interval_round_trip():
    iv = bootstrap_mean([1, 0, 1, 1])
    assert Interval.from_dict(iv.to_dict()) == iv
    assert iv.as_tuple() == (iv.lo, iv.hi) and str(iv).startswith("0.750 [")


def test_fast_enough():
    x = (np.random.default_rng(0).random(500) < 0.5).astype(float)
    y = np.where(np.random.default_rng(1).random(500) < 0.1, 1 - x, x)
    bootstrap_diff(x, y)  # warm-up
    t = time.perf_counter()
    bootstrap_mean(x)
    bootstrap_diff(x, y)
    bootstrap_hm_diff(x, y, y, x)
    assert time.perf_counter() - t < 3.0  # typically ~0.2 s for all three on one core
