"""A feature constant in the reference (zero variance, e.g. an image's border pixel): its mean
shift is measured against the floor scale, never inf; the same constant live is ok, a
material move alerts. Counted by the device's accumulator, compared and judged by the fleet's
code, rendered by the report's text."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.manifest import TensorSpec
from edge_runtime.monitor.drift import DriftAccumulator
from edge_runtime.refstats import compute_reference_stats
from fleet.drift import _summary
from fleet.drift_text import render_report
from fleet.stats.decisions import Level, judge_drift
from fleet.stats.drift import DriftReport, NumericDrift, compare_snapshot, reference_scale

SPEC = TensorSpec(name="x", dtype="float32", shape=("batch", 3))


def _reference(constant: float = 0.0) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 3)).astype(np.float32)
    x[:, 0] = constant  # the border pixel
    return compute_reference_stats({"x": x}, {}, (SPEC,), ())


def _live(ref: dict[str, Any], x: np.ndarray) -> DriftReport:
    acc = DriftAccumulator(ref)
    acc.update({"x": x.astype(np.float32)}, {})
    return compare_snapshot(acc.snapshot(), ref)


def _finite_or_nan(report: DriftReport) -> None:
    for e in report.entries:
        for value in vars(e).values():
            if isinstance(value, float):
                assert not math.isinf(value), (e.name, value)


def _live_rows(n: int, first: float, seed: int = 2) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 3))
    x[:, 0] = first
    return x


def test_same_constant_is_ok_and_finite() -> None:
    ref = _reference()
    report = _live(ref, _live_rows(1500, 0.0))
    _finite_or_nan(report)
    e = report.get("x[0]")
    assert isinstance(e, NumericDrift)
    assert e.mean_shift == 0.0 and e.wasserstein == 0.0 and e.tv == 0.0
    levels = {v.name: v.level for v in judge_drift({"fleet": report})}
    assert levels["x[0]"] is Level.OK


def test_moved_constant_alerts_with_a_finite_shift() -> None:
    ref = _reference()
    report = _live(ref, _live_rows(1500, 1.0))
    _finite_or_nan(report)
    e = report.get("x[0]")
    assert isinstance(e, NumericDrift)
    # the floor: 0.001 x max(1, |0|) for a constant at 0, so a move of 1 reads as 1000 sd
    assert math.isclose(e.mean_shift, 1000.0, rel_tol=1e-6)
    verdicts = {v.name: v for v in judge_drift({"fleet": report})}
    assert verdicts["x[0]"].level is Level.ALERT
    assert verdicts["x[1]"].level is Level.OK and verdicts["x[2]"].level is Level.OK
    assert not any("inf" in r for r in verdicts["x[0]"].reasons)


def test_report_text_states_units_and_never_prints_inf() -> None:
    ref = _reference(5.0)
    report = _live(ref, _live_rows(1500, 6.0))
    doc = _summary("m", "1", 0.0, "fleet", reports={"fleet": report, "dev-1": report},
                   verdicts=judge_drift({"fleet": report, "dev-1": report}))
    text = render_report(doc, window="1h", devices=True)
    assert "mean shift and wasserstein in reference standard deviations" in text
    assert "inf" not in text and "nan" not in text
    assert doc["level"] == "alert" and doc["devices"]["dev-1"]["drifted"] == ["x[0]"]
    tv = next(f["tv"] for f in doc["features"] if f["feature"] == "x[1]")
    assert tv is not None and 0.0 <= tv <= 1.0  # the tv column is computed for numerics too


def test_scale_is_the_sd_when_the_reference_varies() -> None:
    edges = tuple(float(v) for v in np.linspace(-2.0, 2.0, 51))
    assert reference_scale(np.array([1.0]), np.array([0.0]), edges)[0] == 1.0
    # a constant: 1% of the inner range (0) loses to 0.001 x max(1, |mean|)
    assert reference_scale(np.array([0.0]), np.array([-250.0]), (3.0, 3.0))[0] == 0.25


@settings(max_examples=40, deadline=None)
@given(constant=st.floats(-1e6, 1e6, allow_nan=False),
       live=st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=200))
def test_any_live_data_against_a_constant_stays_finite(constant: float,
                                                       live: list[float]) -> None:
    ref = _reference(constant)
    x = np.zeros((len(live), 3))
    x[:, 0] = live
    report = _live(ref, x)
    _finite_or_nan(report)
    for v in judge_drift({"fleet": report}):
        assert all("inf" not in r for r in v.reasons)


def test_the_simulator_leaves_a_constant_feature_constant_when_drifting() -> None:
    from fleet.simdata import InputSampler

    sampler = InputSampler(_reference(5.0))
    rng = np.random.default_rng(0)
    rows = np.array([sampler.sample(rng, 4.0) for _ in range(200)])
    assert (rows[:, 0] == 5.0).all() and rows[:, 1].mean() > 3.0
