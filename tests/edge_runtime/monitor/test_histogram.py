from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge_runtime.monitor.histogram import LogHistogram

QS = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)


def lognormal(seed: int, n: int, sigma: float) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(mean=-4.0, sigma=sigma, size=n)


@pytest.mark.parametrize(
    ("accuracy", "sigma", "n"),
    [(0.01, 1.0, 10_000), (0.01, 3.0, 5_000), (0.05, 1.5, 2_000), (0.001, 0.5, 3_000)],
)
def test_quantiles_within_relative_accuracy_of_nearest_rank(
    accuracy: float, sigma: float, n: int
) -> None:
    values = lognormal(7, n, sigma)
    hist = LogHistogram(accuracy)
    hist.record_many(values)
    for q in QS:
        # The sketch answers with the sample at rank floor(q*(n-1)) ("lower"), not with a
        # linear interpolation between two samples.
        expected = float(np.percentile(values, q * 100, method="lower"))
        got = hist.quantile(q)
        assert abs(got - expected) <= accuracy * expected * (1 + 1e-9), (q, got, expected)


def test_record_and_record_many_fill_the_same_buckets() -> None:
    values = lognormal(3, 4000, 2.0)
    one, many = LogHistogram(), LogHistogram()
    for v in values.tolist():
        one.record(v)
    many.record_many(values)
    assert one.to_dict()["bins"] == many.to_dict()["bins"]
    assert (one.count, one.min, one.max) == (many.count, many.min, many.max)
    assert math.isclose(one.sum, many.sum)


def test_values_on_bucket_boundaries_agree_between_scalar_and_vector_paths() -> None:
    gamma = 1.01 / 0.99
    boundaries = np.array([gamma**k for k in range(-1500, 300, 7)])
    boundaries = boundaries[boundaries > 1e-7]
    one, many = LogHistogram(), LogHistogram()
    for v in boundaries.tolist():
        one.record(v)
    many.record_many(boundaries)
    assert one.to_dict()["bins"] == many.to_dict()["bins"]


def test_merge_equals_histogram_of_concatenation() -> None:
    a, b = lognormal(1, 3000, 1.0), lognormal(2, 1000, 2.5) * 10
    ha, hb, hab = LogHistogram(), LogHistogram(), LogHistogram()
    ha.record_many(a)
    hb.record_many(b)
    hab.record_many(np.concatenate([a, b]))
    ha.merge(hb)
    merged, direct = ha.to_dict(), hab.to_dict()
    assert merged.pop("sum") == pytest.approx(direct.pop("sum"))
    assert merged == direct
    assert [ha.quantile(q) for q in QS] == [hab.quantile(q) for q in QS]


def test_merge_refuses_different_accuracy() -> None:
    with pytest.raises(ValueError, match="accuracy"):
        LogHistogram(0.01).merge(LogHistogram(0.02))


def test_dict_round_trip_through_json() -> None:
    hist = LogHistogram()
    hist.record_many(np.concatenate([lognormal(5, 500, 1.0), [0.0, 1e-9]]))
    wire = json.loads(json.dumps(hist.to_dict(), allow_nan=False))
    back = LogHistogram.from_dict(wire)
    assert back.to_dict() == hist.to_dict()
    assert [back.quantile(q) for q in QS] == [hist.quantile(q) for q in QS]


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"relative_accuracy": 0.01, "min_value": 1e-7, "zero": 0, "bins": {"x": 1}, "sum": 0.0},
        {"relative_accuracy": 0.01, "min_value": 1e-7, "zero": 0, "bins": {"3": -1}, "sum": 0.0},
        {"relative_accuracy": 2.0, "min_value": 1e-7, "zero": 0, "bins": {}, "sum": 0.0},
        {"relative_accuracy": 0.01, "min_value": 1e-7, "zero": 1, "bins": {}, "sum": 0.0},
    ],
)
def test_from_dict_rejects_malformed(broken: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not a LogHistogram"):
        LogHistogram.from_dict(broken)


def test_tiny_values_go_to_the_zero_bucket() -> None:
    hist = LogHistogram()
    for v in (0.0, 5e-8, 1e-7, 0.002):
        hist.record(v)
    data = hist.to_dict()
    assert data["zero"] == 3 and sum(data["bins"].values()) == 1
    assert hist.quantile(0.0) == 0.0
    assert hist.quantile(1.0) == pytest.approx(0.002, rel=0.01)


def test_empty_and_invalid_values() -> None:
    hist = LogHistogram()
    assert (hist.count, hist.sum, hist.min, hist.max) == (0, 0.0, None, None)
    with pytest.raises(ValueError, match="empty"):
        hist.quantile(0.5)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="non-finite"):
            hist.record(bad)
    with pytest.raises(ValueError, match="non-finite"):
        hist.record_many(np.array([0.1, math.nan]))
    hist.record(0.5)
    with pytest.raises(ValueError, match="quantile"):
        hist.quantile(1.5)
    assert hist.count == 1
