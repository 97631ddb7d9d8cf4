"""Is a model version getting worse in the field? Labels if there are any, proxies if not.

With feedback labels: accuracy per version against the package's validation accuracy
(``validation.json``), alerting below ``fraction`` of it (default 0.95). The manager checks
this continuously as labels trickle in, so the interval is a confidence *sequence*
(``sequential.cs_radius``): valid at every check, where a fixed 95% interval re-checked daily
would eventually cross any threshold by chance. ALERT when the whole interval is below the
threshold, WARN when only the point estimate is, "insufficient data" below ``min_labels``.

Without labels: prediction-distribution drift of the outputs (``drift`` + ``decisions``) and a
drop of the mean top score, which the device sums per class output (``sum_top``). Top scores
of probabilities lie in [0, 1], so their variance is at most m(1 - m) and the drop gets a
conservative z-test; for scores outside [0, 1] (logits) no test is possible and the drop can
only WARN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scipy import special

from fleet.stats.decisions import Band, DriftThresholds, EntryVerdict, Level, judge_drift
from fleet.stats.decisions import worst_level as _worst
from fleet.stats.drift import CategoricalDrift, DriftReport
from fleet.stats.errors import InvalidConfig
from fleet.stats.sequential import cs_radius


@dataclass(frozen=True)
class DegradationThresholds:
    fraction: float = 0.95  # alert below this share of the validation accuracy
    alpha: float = 0.05
    min_labels: int = 200
    tau: float = 0.05  # confidence-sequence scale: accuracy changes of a few points matter
    # absolute drop of the mean top score
    confidence_drop: Band = field(default_factory=lambda: Band(0.03, 0.1))
    drift: DriftThresholds = field(default_factory=DriftThresholds)

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0 or not 0.0 < self.alpha < 1.0:
            raise InvalidConfig("fraction/alpha", f"need 0 < fraction <= 1 and 0 < alpha < 1, "
                                f"got {self.fraction}, {self.alpha}")


@dataclass(frozen=True)
class AccuracyCheck:
    correct: int
    total: int
    accuracy: float
    lower: float
    upper: float
    validation: float
    threshold: float
    level: Level


@dataclass(frozen=True)
class ConfidenceCheck:
    output: str
    mean_top: float
    baseline: float
    drop: float
    p_value: float  # NaN: scores are not probabilities, no test
    level: Level


@dataclass(frozen=True)
class DegradationReport:
    version: str
    level: Level
    basis: str  # "labels" or "proxy"
    accuracy: AccuracyCheck | None
    confidence: tuple[ConfidenceCheck, ...]
    prediction_drift: tuple[EntryVerdict, ...]


def validation_accuracy(validation: Mapping[str, Any], output: str | None = None
                        ) -> float | None:
    """The packaged candidate's accuracy from ``validation.json`` (None: no class output)."""
    chosen = [c for c in validation.get("candidates", []) if c.get("chosen")]
    for out in chosen[0].get("outputs", []) if chosen else []:
        if out.get("accuracy") is not None and output in (None, out.get("name")):
            return float(out["accuracy"])
    return None


def check_accuracy(correct: int, total: int, validation: float,
                   thresholds: DegradationThresholds | None = None) -> AccuracyCheck:
    t = thresholds or DegradationThresholds()
    threshold = t.fraction * validation
    if total < t.min_labels:
        acc = correct / total if total else math.nan
        return AccuracyCheck(correct, total, acc, 0.0, 1.0, validation, threshold,
                             Level.INSUFFICIENT)
    acc = correct / total
    p = (correct + 1.0) / (total + 2.0)  # no zero variance at 100% accuracy
    radius = cs_radius(p * (1.0 - p) / total, t.tau, t.alpha)
    lower, upper = max(acc - radius, 0.0), min(acc + radius, 1.0)
    level = Level.ALERT if upper < threshold else Level.WARN if acc < threshold else Level.OK
    return AccuracyCheck(correct, total, acc, lower, upper, validation, threshold, level)


def check_confidence(entry: CategoricalDrift, thresholds: DegradationThresholds | None = None
                     ) -> ConfidenceCheck:
    """Mean top score of a class output against its baseline (from ``drift.compare_*``)."""
    t = thresholds or DegradationThresholds()
    m, mb = entry.mean_top, entry.mean_top_baseline
    drop = mb - m
    if min(entry.n, entry.n_baseline) < t.drift.min_samples or math.isnan(drop):
        return ConfidenceCheck(entry.name, m, mb, drop, math.nan, Level.INSUFFICIENT)
    if 0.0 <= m <= 1.0 and 0.0 <= mb <= 1.0:
        se = math.sqrt(m * (1 - m) / entry.n + mb * (1 - mb) / entry.n_baseline)
        p = float(special.ndtr(-drop / se)) if se > 0 else float(drop <= 0)
        level = t.confidence_drop.level(drop) if p <= t.alpha else Level.OK
    else:
        p = math.nan
        level = Level.WARN if drop >= t.confidence_drop.warn else Level.OK
    return ConfidenceCheck(entry.name, m, mb, drop, p, level)


def check_degradation(version: str, *, labels: tuple[int, int] | None = None,
                      validation: float | None = None, report: DriftReport | None = None,
                      thresholds: DegradationThresholds | None = None) -> DegradationReport:
    """Labels ``(correct, total)`` decide when there are enough of them and a validation
    accuracy to compare with; otherwise the proxies from ``report`` (outputs vs reference)."""
    t = thresholds or DegradationThresholds()
    accuracy = None
    if labels is not None and validation is not None:
        accuracy = check_accuracy(labels[0], labels[1], validation, t)
        if accuracy.level is not Level.INSUFFICIENT:
            return DegradationReport(version, accuracy.level, "labels", accuracy, (), ())
    outputs = report.outputs if report else ()
    confidence = tuple(check_confidence(e, t) for e in outputs
                       if isinstance(e, CategoricalDrift) and e.kind == "class")
    drift = tuple(judge_drift({version: DriftReport(outputs)}, t.drift)) if outputs else ()
    levels = [c.level for c in confidence] + [v.level for v in drift]
    level = _worst(levels) if levels else Level.INSUFFICIENT
    return DegradationReport(version, level, "proxy", accuracy, confidence, drift)
