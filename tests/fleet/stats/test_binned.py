from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from edge_runtime.refstats import bin_counts, quantile_edges
from fleet.stats import binned


def cells(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    b = bin_counts(edges, values)
    return np.array([b["underflow"], *b["counts"], b["overflow"]])


def test_ks_is_exact_when_every_value_sits_on_its_own_side_of_an_edge() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 10, 400), rng.integers(0, 12, 700)
    edges = np.arange(-0.5, 10.5)  # values above 9.5 are overflow
    got = binned.ks_statistic(cells(edges, x), cells(edges, y))
    assert got == pytest.approx(stats.ks_2samp(x, y).statistic, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shift", [0.0, 0.05, 0.3])
def test_ks_from_quantile_bins_is_close_and_never_above_the_exact_one(seed: int,
                                                                      shift: float) -> None:
    rng = np.random.default_rng(seed)
    ref, cur = rng.standard_normal(20_000), rng.standard_normal(1000) + shift
    edges = np.asarray(quantile_edges(ref))
    d = float(binned.ks_statistic(cells(edges, cur), cells(edges, ref)))
    exact = stats.ks_2samp(cur, ref)
    assert exact.statistic - 0.01 <= d <= exact.statistic + 1e-12
    p = float(binned.ks_pvalue(d, cur.size, ref.size))
    assert p >= exact.pvalue * (1 - 1e-9)  # smaller statistic, conservative tail


def test_ks_estimate_removes_the_edges_bias_against_scipy() -> None:
    """Over many seeded device samples the estimate is unbiased where the edges read low, and
    its typical error is half the edges' one (the bench measures the p95 on more shapes)."""
    rng = np.random.default_rng(7)
    ref = rng.standard_normal(20_000)
    edges = np.asarray(quantile_edges(ref))
    bound_err, est_err = [], []
    for i in range(120):
        cur = rng.standard_normal(1000) + [0.0, 0.05, 0.1, 0.3][i % 4]
        exact = stats.ks_2samp(cur, ref).statistic
        c, r = cells(edges, cur), cells(edges, ref)
        bound, est = float(binned.ks_statistic(c, r)), float(binned.ks_estimate(c, r))
        assert est >= bound  # the bound plus an expected excursion
        bound_err.append(exact - bound)
        est_err.append(exact - est)
    assert np.mean(bound_err) > 0.0015  # the edges miss the inside of the bins
    assert abs(np.mean(est_err)) < 0.0005
    assert np.quantile(np.abs(est_err), 0.95) < 0.6 * np.quantile(np.abs(bound_err), 0.95)


def test_ks_estimate_is_vectorised_and_nan_for_an_empty_side() -> None:
    rng = np.random.default_rng(3)
    base = rng.multinomial(20_000, np.r_[0.0, np.full(50, 0.02), 0.0])
    cur = rng.multinomial(1000, np.r_[0.001, np.full(50, 0.0199), 0.004], size=6)
    rows = binned.ks_estimate(cur, base)
    assert rows == pytest.approx([float(binned.ks_estimate(c, base)) for c in cur])
    assert np.isnan(binned.ks_estimate(np.zeros(52), base))
    # Equal cells: the edges see nothing, the two samples still differ inside the bins.
    assert binned.ks_statistic(cur[0], cur[0]) == 0.0
    assert 0.0 < binned.ks_estimate(cur[0], cur[0]) < 0.02
    # Empty bins are flat: no excursion from them.
    assert binned.ks_estimate([0, 4, 0, 0], [0, 0, 0, 9]) == pytest.approx(1.0)


def test_ks_pvalue_is_the_asymptotic_kolmogorov_with_effective_n() -> None:
    d, n, m = 0.05, 1000, 20_000
    assert binned.ks_pvalue(d, n, m) == pytest.approx(
        special.kolmogorov(math.sqrt(n * m / (n + m)) * d))
    # ... and at least scipy's asymptotic two-sample p-value (kstwo with rounded n_eff).
    assert binned.ks_pvalue(d, n, m) >= stats.kstwo.sf(d, round(n * m / (n + m)))


def test_psi_matches_the_formula_with_epsilon_for_empty_cells() -> None:
    a, b = np.array([10, 30, 60, 0]), np.array([20, 20, 50, 10])
    pa, pb = np.maximum(a / 100, 1e-4), np.maximum(b / 100, 1e-4)
    assert binned.psi(a, b) == pytest.approx(((pa - pb) * np.log(pa / pb)).sum())
    assert binned.psi(a, a) == 0.0


def test_wasserstein_matches_scipy_for_values_spread_evenly_in_bins() -> None:
    edges = np.array([0.0, 1.0, 3.0, 4.0])
    a, b = np.array([0, 50, 30, 20, 0]), np.array([0, 10, 60, 30, 0])

    def spread(c: np.ndarray) -> np.ndarray:
        return np.concatenate([lo + (np.arange(k) + 0.5) / k * (hi - lo)
                               for lo, hi, k in zip(edges[:-1], edges[1:], c[1:-1], strict=True)])

    want = stats.wasserstein_distance(spread(a), spread(b))
    assert binned.wasserstein(a, b, edges, 1.0) == pytest.approx(want, rel=0.02)
    assert binned.wasserstein(a, b, edges, 2.0) == pytest.approx(want / 2, rel=0.02)


@pytest.mark.parametrize("shift", [0.1, 0.3, 1.0])
def test_wasserstein_of_a_location_shift_is_about_the_shift_in_sd(shift: float) -> None:
    rng = np.random.default_rng(3)
    ref = rng.standard_normal(200_000)
    edges = np.asarray(quantile_edges(ref))
    got = binned.wasserstein(cells(edges, ref + shift), cells(edges, ref), edges, ref.std())
    # The wide outer bins of a normal are read as uniform: a few percent high.
    assert shift <= got <= 1.1 * shift


def test_wasserstein_degenerate_scale() -> None:
    edges = np.array([0.0, 1.0])
    assert binned.wasserstein([0, 5, 0], [0, 5, 0], edges, 0.0) == 0.0
    assert binned.wasserstein([5, 0, 0], [0, 5, 0], edges, 1.0) == 0.5  # underflow sits at 0
    assert binned.wasserstein([0, 0, 5], [5, 0, 0], [0.0, 1.0], 0.0) == math.inf


def test_mean_test_agrees_with_welch_t_test() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.1, 1.0, 1000), rng.normal(0.0, 1.5, 5000)
    shift, p = binned.mean_test((a.sum(), (a**2).sum(), a.size), (b.sum(), (b**2).sum(), b.size))
    assert shift == pytest.approx((a.mean() - b.mean()) / b.std(ddof=1))
    assert p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=0.02)


@pytest.mark.parametrize("seed", range(3))
def test_rank_sum_is_mann_whitney_on_binned_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 30, (2, 12)) * np.array([[1], [20]])
    a[0] = 0  # an empty cell on one side
    x, y = np.repeat(np.arange(12), a), np.repeat(np.arange(12), b)  # values that know a cell
    want = stats.mannwhitneyu(x, y, method="asymptotic", use_continuity=False)
    z, p = binned.rank_sum(a, b)
    assert p == pytest.approx(want.pvalue, rel=1e-9)
    assert np.sign(z) == np.sign(x.mean() - y.mean())


def test_rank_sum_batches_and_empty_sides() -> None:
    rng = np.random.default_rng(9)
    cur, base = rng.integers(0, 40, (5, 8)), rng.integers(1, 40, 8)
    z, p = binned.rank_sum(cur, base)
    np.testing.assert_allclose(p, [binned.rank_sum(r, base)[1] for r in cur])
    z, p = binned.rank_sum(np.zeros(8), base)
    assert math.isnan(z) and p == 1.0
    z, p = binned.rank_sum([0, 5, 0], [0, 9, 0])  # everything tied: no variance
    assert math.isnan(z) and p == 1.0


def test_mean_test_edge_cases() -> None:
    assert binned.mean_test((5.0, 5.0, 5), (5.0, 5.0, 5)) == (0.0, 1.0)  # constant, equal
    shift, p = binned.mean_test((10.0, 20.0, 5), (5.0, 5.0, 5))  # constant, different
    assert (shift, p) == (math.inf, 0.0)
    shift, p = binned.mean_test((0.0, 0.0, 0), (5.0, 30.0, 5))  # empty side
    assert math.isnan(shift) and p == 1.0


@pytest.mark.parametrize(("a", "b"), [
    ([10, 20, 30], [15, 15, 40]),
    ([10, 0, 30, 5], [15, 0, 40, 0]),  # a column empty on both sides is dropped
    ([3, 7], [8, 2]),  # dof 1: scipy would apply Yates without correction=False
])
def test_chi_square_matches_scipy(a: list[int], b: list[int]) -> None:
    table = np.array([a, b])
    want = stats.chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False)
    stat, dof, p = binned.chi_square(a, b)
    assert (stat, dof) == (pytest.approx(want.statistic), want.dof)
    assert p == pytest.approx(want.pvalue)


def test_total_variation() -> None:
    assert binned.total_variation([50, 50, 0], [25, 25, 50]) == pytest.approx(0.5)
    assert binned.total_variation([1, 2], [2, 4]) == 0.0


def test_batches_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(5)
    cur, base = rng.integers(0, 50, (7, 12)), rng.integers(1, 50, 12)
    edges = np.linspace(0, 1, 11)
    for fn in (binned.ks_statistic, binned.psi, binned.total_variation):
        batch = fn(cur, base)
        assert batch.shape == (7,)
        np.testing.assert_allclose(batch, [fn(row, base) for row in cur])
    w = binned.wasserstein(cur, base, edges, 0.5)
    np.testing.assert_allclose(w, [binned.wasserstein(r, base, edges, 0.5) for r in cur])
    _, _, p = binned.chi_square(cur, base)
    np.testing.assert_allclose(p, [binned.chi_square(r, base)[2] for r in cur])


def test_empty_sides_give_nan_statistics_and_no_evidence() -> None:
    empty, full = np.zeros(5), np.array([1, 2, 3, 4, 5])
    for fn in (binned.ks_statistic, binned.psi, binned.total_variation):
        assert math.isnan(fn(empty, full))
    assert binned.ks_pvalue(math.nan, 0, 15) == 1.0
    stat, _, p = binned.chi_square(empty, full)
    assert math.isnan(stat) and p == 1.0
