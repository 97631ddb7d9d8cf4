from __future__ import annotations

import math

import numpy as np
import pytest

from fleet.stats import (
    CategoricalDrift,
    DegradationThresholds,
    InvalidConfig,
    Level,
    check_accuracy,
    check_confidence,
    check_degradation,
    compare_snapshot,
    validation_accuracy,
)
from tests.fleet.stats.conftest import Ref

VALIDATION = {  # the shape converters write to validation.json
    "chosen": "int8-static",
    "candidates": [
        {"precision": "fp32", "chosen": False,
         "outputs": [{"name": "label", "kind": "class", "accuracy": 0.99}]},
        {"precision": "int8-static", "chosen": True,
         "outputs": [{"name": "value", "kind": "value", "accuracy": None},
                     {"name": "label", "kind": "class", "accuracy": 0.98},
                     {"name": "probabilities", "kind": "class", "accuracy": 0.97}]},
    ],
}


def test_validation_accuracy_of_the_packaged_candidate() -> None:
    assert validation_accuracy(VALIDATION) == 0.98
    assert validation_accuracy(VALIDATION, "probabilities") == 0.97
    assert validation_accuracy(VALIDATION, "value") is None
    assert validation_accuracy({"candidates": []}) is None


@pytest.mark.parametrize(("correct", "total", "level"), [
    (990, 1000, Level.OK),
    (925, 1000, Level.WARN),  # below 0.95 * 0.99 but the interval still reaches it
    (9000, 10_000, Level.ALERT),
    (10, 50, Level.INSUFFICIENT),
])
def test_accuracy_levels(correct: int, total: int, level: Level) -> None:
    check = check_accuracy(correct, total, 0.99)
    assert check.level is level
    assert check.threshold == pytest.approx(0.9405)
    if level is not Level.INSUFFICIENT:
        assert check.lower <= check.accuracy <= check.upper


def test_checking_accuracy_every_100_labels_rarely_alerts_falsely() -> None:
    rng = np.random.default_rng(0)
    correct = rng.binomial(100, 0.9405, (300, 100)).cumsum(axis=1)  # exactly at the threshold
    alerts = sum(
        any(check_accuracy(int(c), 100 * (k + 1), 0.99).level is Level.ALERT
            for k, c in enumerate(run))
        for run in correct)
    assert alerts / 300 <= 0.05


def class_entry(mean_top: float, baseline: float, n: int = 5000) -> CategoricalDrift:
    return CategoricalDrift("y", True, n, 20_000, 0.0, 0.0, 0.0, 1.0, 0.0, "class",
                            mean_top, baseline)


@pytest.mark.parametrize(("entry", "level"), [
    (class_entry(0.70, 0.85), Level.ALERT),
    (class_entry(0.80, 0.85), Level.WARN),
    (class_entry(0.84, 0.85), Level.OK),
    (class_entry(0.80, 0.85, n=30), Level.INSUFFICIENT),
    (class_entry(0.87, 0.85), Level.OK),  # more confident is not a degradation
    (class_entry(3.0, 4.5), Level.WARN),  # logits: no test, WARN at most
])
def test_confidence_drop(entry: CategoricalDrift, level: Level) -> None:
    check = check_confidence(entry)
    assert check.level is level
    assert check.drop == pytest.approx(entry.mean_top_baseline - entry.mean_top)
    assert math.isnan(check.p_value) == (entry.mean_top > 1 or level is Level.INSUFFICIENT)


def test_labels_decide_when_there_are_enough(ref: Ref) -> None:
    report = compare_snapshot(ref.snapshot(1, 3000, scale_top=0.3), ref.stats)
    got = check_degradation("2", labels=(990, 1000), validation=0.99, report=report)
    assert (got.level, got.basis, got.confidence) == (Level.OK, "labels", ())


def test_without_labels_the_proxies_decide(ref: Ref) -> None:
    report = compare_snapshot(ref.snapshot(1, 3000, scale_top=0.3), ref.stats)
    got = check_degradation("2", labels=(5, 10), validation=0.99, report=report)
    assert got.basis == "proxy" and got.accuracy is not None
    assert got.accuracy.level is Level.INSUFFICIENT
    assert got.confidence[0].level is Level.ALERT
    assert got.level is Level.ALERT
    assert [v.name for v in got.prediction_drift] == ["y"]
    calm = check_degradation("1", report=compare_snapshot(ref.snapshot(2, 3000), ref.stats))
    assert calm.level is Level.OK
    assert check_degradation("0").level is Level.INSUFFICIENT


def test_bad_thresholds() -> None:
    with pytest.raises(InvalidConfig):
        DegradationThresholds(fraction=0.0)
