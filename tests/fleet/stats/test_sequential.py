from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from fleet.stats import (
    Decision,
    Estimate,
    InvalidConfig,
    SequentialState,
    SequentialTest,
    cs_radius,
    cuped,
    means,
    mixture_ratio,
    proportions,
    ratio_per_unit,
    step,
)

ERRORS = SequentialTest(tau=0.01, higher_is_better=False, margin=0.005)


def run_ab(pa: float, pb: float, *, runs: int, looks: int = 20, per_look: int = 500,
           seed: int = 0, test: SequentialTest = ERRORS) -> tuple[list[Decision], list[bool]]:
    """Final decision per run (sticky), and whether the CS always held the truth."""
    rng = np.random.default_rng(seed)
    xa = rng.binomial(per_look, pa, (runs, looks)).cumsum(axis=1)
    xb = rng.binomial(per_look, pb, (runs, looks)).cumsum(axis=1)
    decisions, covered = [], []
    for r in range(runs):
        state, held, final = SequentialState(), True, Decision.CONTINUE
        for k in range(looks):
            n = (k + 1) * per_look
            state, res = step(test, state, proportions(int(xa[r, k]), n, int(xb[r, k]), n))
            held &= res.lower <= pb - pa <= res.upper
            if final in (Decision.CONTINUE, Decision.NOT_ENOUGH_DATA):
                final = res.decision
        decisions.append(final)
        covered.append(held)
    return decisions, covered


def test_twenty_looks_without_a_difference_rarely_declare_a_winner() -> None:
    decisions, covered = run_ab(0.02, 0.02, runs=400)
    winners = sum(d in (Decision.B_BETTER, Decision.B_WORSE) for d in decisions)
    assert winners / 400 <= 0.04  # alpha 0.05; ~1% in practice
    assert sum(covered) / 400 >= 0.95


def test_a_z_test_checked_twenty_times_does_not_hold_its_level() -> None:
    rng = np.random.default_rng(1)
    n = np.arange(1, 21) * 500
    xa = rng.binomial(500, 0.02, (400, 20)).cumsum(axis=1)
    xb = rng.binomial(500, 0.02, (400, 20)).cumsum(axis=1)
    pooled = (xa + xb) / (2 * n)
    z = (xb - xa) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    assert (np.abs(z) > 1.96).any(axis=1).mean() > 0.15  # why the sequential test exists


def test_a_real_difference_is_found_in_the_right_direction() -> None:
    decisions, covered = run_ab(0.02, 0.03, runs=100, seed=2)
    assert decisions.count(Decision.B_WORSE) >= 85
    assert Decision.B_BETTER not in decisions
    assert sum(covered) >= 95
    better = SequentialTest(tau=0.01, higher_is_better=True)
    decisions, _ = run_ab(0.02, 0.03, runs=50, seed=3, test=better)
    assert decisions.count(Decision.B_BETTER) >= 40  # higher rate is better for accuracy


def test_no_difference_once_the_interval_fits_inside_the_margin() -> None:
    test = SequentialTest(tau=0.01, margin=0.01, min_n=100)
    _, res = step(test, SequentialState(), proportions(2000, 100_000, 2010, 100_000))
    assert res.decision is Decision.NO_DIFFERENCE
    assert -0.01 <= res.lower < 0 < res.upper <= 0.01
    _, res = step(test, SequentialState(), proportions(20, 1000, 21, 1000))
    assert res.decision is Decision.CONTINUE


def test_not_enough_data_is_an_answer_and_leaves_the_state() -> None:
    state, res = step(ERRORS, SequentialState(), proportions(0, 50, 9, 50))
    assert res.decision is Decision.NOT_ENOUGH_DATA
    assert state == SequentialState()
    _, res = step(ERRORS, state, means([1.0], [2.0, 3.0]))
    assert res.decision is Decision.NOT_ENOUGH_DATA


def test_decisions_stick_and_the_interval_only_shrinks() -> None:
    state, res = step(ERRORS, SequentialState(), proportions(200, 10_000, 400, 10_000))
    assert res.decision is Decision.B_WORSE
    width = res.upper - res.lower
    state, res = step(ERRORS, state, proportions(400, 20_000, 420, 20_000))  # later: close
    assert res.decision is Decision.B_WORSE and res.upper - res.lower <= width
    assert state.looks == 2


def test_the_test_and_the_interval_agree() -> None:
    rng = np.random.default_rng(4)
    for _ in range(200):
        effect, var, tau = rng.normal(0, 0.02), rng.uniform(1e-6, 1e-3), rng.uniform(0.005, 0.1)
        rejects = mixture_ratio(effect, var, tau) >= 20.0
        assert rejects == (abs(effect) >= cs_radius(var, tau, 0.05))
    assert mixture_ratio(0.0, 1e-4, 0.01) < 1.0


def test_device_level_rates_see_device_to_device_variation() -> None:
    rng = np.random.default_rng(5)
    effects, naive = [], []
    for _ in range(400):
        # each device has its own error rate: requests of one device are correlated
        rate_a, rate_b = (rng.beta(2, 98, 50) for _ in range(2))
        na, nb = rng.integers(500, 1500, 50), rng.integers(500, 1500, 50)
        ea, eb = rng.binomial(na, rate_a), rng.binomial(nb, rate_b)
        est = ratio_per_unit(ea, na, eb, nb)
        effects.append((est.effect, est.variance))
        naive.append(proportions(int(ea.sum()), int(na.sum()), int(eb.sum()), int(nb.sum())))
    observed = np.var([e for e, _ in effects])
    assert np.mean([v for _, v in effects]) == pytest.approx(observed, rel=0.2)
    assert np.mean([n.variance for n in naive]) < observed / 3  # request-level: far too small


def test_means_is_welch() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(1.0, 1.0, 80), rng.normal(1.3, 2.0, 60)
    est = means(a, b)
    t = stats.ttest_ind(b, a, equal_var=False)
    assert est.effect / math.sqrt(est.variance) == pytest.approx(t.statistic)
    assert (est.n_a, est.n_b, est.mean_a) == (80, 60, pytest.approx(a.mean()))


def test_cuped_removes_the_variance_the_pre_period_explains() -> None:
    rng = np.random.default_rng(7)
    raw, adjusted, reductions = [], [], []
    for _ in range(300):
        level = rng.lognormal(0, 0.5, 200)  # devices differ a lot from each other
        pre = level + rng.normal(0, 0.1, 200)
        post = level + rng.normal(0, 0.1, 200) + np.r_[np.zeros(100), np.full(100, 0.05)]
        c = cuped(post[:100], pre[:100], post[100:], pre[100:])
        raw.append(means(post[:100], post[100:]).effect)
        adjusted.append(means(c.adjusted_a, c.adjusted_b).effect)
        reductions.append(c.variance_reduction)
    assert np.mean(adjusted) == pytest.approx(0.05, abs=0.003)  # unbiased
    assert np.var(adjusted) < 0.2 * np.var(raw)
    assert np.mean(reductions) > 0.8
    with pytest.raises(InvalidConfig):
        cuped([1.0, 2.0], [1.0], [1.0], [1.0])


def test_invalid_tests() -> None:
    bad: list[dict[str, Any]] = [{"tau": 0.0}, {"tau": 0.01, "alpha": 1.0},
                                 {"tau": 0.01, "margin": -1.0}, {"tau": 0.01, "min_n": 1}]
    for kwargs in bad:
        with pytest.raises(InvalidConfig):
            SequentialTest(**kwargs)
    assert proportions(0, 0, 1, 10).variance == math.inf
    assert ratio_per_unit([1], [10], [1, 2], [10, 10]).variance == math.inf
    assert math.isnan(Estimate(0.1, 1e-4, 10, 10).mean_a)
