from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from scipy import stats

from edge_runtime.monitor.drift import merge_snapshots
from fleet.stats import CategoricalDrift, LayoutMismatch, NumericDrift
from fleet.stats.drift import compare_devices, compare_snapshot, compare_to_rest
from fleet.stats.merge import merge_flat
from tests.fleet.stats.conftest import Ref, make_data


def test_the_reference_against_itself_shows_no_drift(ref: Ref) -> None:
    _, outputs = make_data(0, 20_000)
    report = compare_snapshot(ref.snapshot(0, 20_000), ref.stats)
    assert [e.name for e in report.features] == ["x[0]", "x[1]", "x[2]", "c[0]"]
    assert [e.name for e in report.outputs] == ["y"]
    for e in report.entries:
        assert e.psi == pytest.approx(0.0, abs=1e-9)
        assert e.p_value == pytest.approx(1.0)
    x0 = report.get("x[0]")
    assert isinstance(x0, NumericDrift)
    assert (x0.mean_shift, x0.wasserstein, x0.n, x0.n_baseline) == (
        pytest.approx(0.0, abs=1e-9), pytest.approx(0.0), 20_000, 20_000)
    # The KS estimate takes the two sides as independent samples: equal cells still leave the
    # insides of the bins to chance (~0.002 at 20k each), far below any threshold.
    assert 0.0 < x0.ks < 0.005
    y = report.get("y", output=True)
    assert isinstance(y, CategoricalDrift) and y.kind == "class"
    assert y.mean_top == pytest.approx(y.mean_top_baseline, rel=1e-6)
    assert y.mean_top == pytest.approx(outputs["y"].max(axis=1).mean(), rel=1e-6)


def test_a_shift_shows_in_every_numeric_statistic(ref: Ref) -> None:
    report = compare_snapshot(ref.snapshot(1, 5000, shift=0.5), ref.stats)
    for name in ("x[0]", "x[1]", "x[2]"):
        e = report.get(name)
        assert isinstance(e, NumericDrift)
        assert e.mean_shift == pytest.approx(0.5, abs=0.08), name
        assert e.wasserstein == pytest.approx(0.5, abs=0.1), name
        assert e.ks > 0.12 and e.psi > 0.2 and e.p_value < 1e-20


def test_numeric_statistics_agree_with_scipy_on_the_raw_samples(ref: Ref) -> None:
    raw_ref, _ = make_data(0, 20_000)
    raw_cur, _ = make_data(2, 3000, shift=0.05)
    report = compare_snapshot(ref.snapshot(2, 3000, shift=0.05), ref.stats)
    for j in range(3):
        e = report.get(f"x[{j}]")
        assert isinstance(e, NumericDrift)
        exact = stats.ks_2samp(raw_cur["x"][:, j], raw_ref["x"][:, j])
        assert e.ks == pytest.approx(exact.statistic, abs=0.005)
        # The p-value comes from the edges' statistic, never above the exact one: conservative.
        assert e.ks_p >= exact.pvalue
        mw = stats.mannwhitneyu(raw_cur["x"][:, j], raw_ref["x"][:, j])
        # ranks inside a bin are lost: the same evidence up to a few percent of its log
        assert math.log(e.rank_p) == pytest.approx(math.log(mw.pvalue), rel=0.05)
        shift = (raw_cur["x"][:, j].mean() - raw_ref["x"][:, j].mean()) / raw_ref["x"][:, j].std(
            ddof=1)
        assert e.mean_shift == pytest.approx(shift, rel=1e-6)


def test_categorical_shift_and_unseen_values(ref: Ref) -> None:
    snap = ref.snapshot(3, 4000, cat_p=[0.1, 0.2, 0.3, 0.4])
    c = snap["features"][3]
    c["other"] += 1000  # values never seen in the reference
    c["n"] += 1000
    e = compare_snapshot(snap, ref.stats).get("c[0]")
    assert isinstance(e, CategoricalDrift)
    assert e.other_rate == pytest.approx(0.2)
    ref_counts = ref.stats["features"][3]["counts"]
    table = np.array([[*c["counts"], c["other"]], [*ref_counts, 0]])
    want = stats.chi2_contingency(table, correction=False)
    assert (e.chi2, e.chi2_p) == (pytest.approx(want.statistic), pytest.approx(want.pvalue))
    assert e.tv > 0.3


def test_lower_confidence_shows_in_the_class_output(ref: Ref) -> None:
    y = compare_snapshot(ref.snapshot(4, 3000, scale_top=0.3), ref.stats).get("y", output=True)
    assert isinstance(y, CategoricalDrift)
    assert y.mean_top < y.mean_top_baseline - 0.05


def test_compare_devices_equals_one_by_one(ref: Ref) -> None:
    snaps = {f"d{i}": ref.snapshot(10 + i, 500, shift=0.1 * i) for i in range(4)}
    flats = {d: ref.layout.flatten(s) for d, s in snaps.items()}
    batch = compare_devices(ref.layout, flats, ref.layout.flatten_reference(ref.stats))
    for d, snap in snaps.items():
        one = compare_snapshot(snap, ref.stats)
        for got, want in zip(batch[d].entries, one.entries, strict=True):
            assert got == want or _same_with_nan(got, want)
    assert compare_devices(ref.layout, {}, ref.layout.zeros()) == {}


def test_each_device_against_the_rest_of_the_fleet(ref: Ref) -> None:
    flats = {f"d{i}": ref.layout.flatten(ref.snapshot(20 + i, 400, shift=0.5 * (i == 2)))
             for i in range(5)}
    rest = compare_to_rest(ref.layout, flats)
    for d, flat in flats.items():
        others = merge_flat(ref.layout, [f for k, f in flats.items() if k != d])
        (want,) = compare_devices(ref.layout, {d: flat}, others).values()
        for got, exp in zip(rest[d].entries, want.entries, strict=True):
            numbers = {k for k, v in vars(exp).items() if isinstance(v, float)}
            assert {k: v for k, v in vars(got).items() if k not in numbers} == {
                k: v for k, v in vars(exp).items() if k not in numbers}
            assert [getattr(got, k) for k in sorted(numbers)] == pytest.approx(
                [getattr(exp, k) for k in sorted(numbers)], rel=1e-9, nan_ok=True)
    assert rest["d2"].get("x[0]").p_value < 1e-10 < rest["d0"].get("x[0]").p_value
    assert rest["d0"].get("x[0]").n_baseline == 1600
    assert compare_to_rest(ref.layout, {"only": flats["d0"]}) == {}


def _same_with_nan(a: object, b: object) -> bool:
    va, vb = vars(a), vars(b)
    return all(va[k] == vb[k] or (isinstance(va[k], float) and math.isnan(va[k])
                                  and math.isnan(vb[k])) for k in va)


def test_a_baseline_snapshot_instead_of_the_reference(ref: Ref) -> None:
    old = merge_snapshots(ref.snapshot(5, 3000), ref.snapshot(6, 3000))
    same = compare_snapshot(ref.snapshot(7, 3000), ref.stats, baseline=old)
    moved = compare_snapshot(ref.snapshot(8, 3000, shift=0.3), ref.stats, baseline=old)
    assert all(e.p_value > 1e-3 for e in same.entries)
    assert all(e.p_value < 1e-6 for e in moved.features[:3])
    assert same.get("x[0]").n_baseline == 6000


def test_empty_current_histogram_gives_nan_and_no_evidence(ref: Ref) -> None:
    e = compare_snapshot(ref.layout.expand(ref.layout.zeros()), ref.stats).get("x[0]")
    assert isinstance(e, NumericDrift)
    assert math.isnan(e.ks) and math.isnan(e.psi) and math.isnan(e.mean_shift)
    assert e.p_value == 1.0


def test_snapshots_of_another_reference_are_rejected(ref: Ref) -> None:
    snap = ref.snapshot(9, 100)
    other = copy.deepcopy(ref.stats)
    other["features"][0]["edges"] = other["features"][0]["edges"][:-1]
    with pytest.raises(LayoutMismatch):
        compare_snapshot(snap, other)
    with pytest.raises(LayoutMismatch):
        compare_snapshot(snap, {"schema_version": 7})
    bad = ref.layout.zeros()
    with pytest.raises(LayoutMismatch):
        compare_devices(ref.layout, {"d": type(bad)(bad.counts[:-1], bad.sums)}, bad)
