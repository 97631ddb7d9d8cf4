"""Fleet statistics engine: drift, A/B experiments, canary judgement, degradation (issue 6).

A pure library: no MQTT, no I/O, no clocks. The fleet manager feeds it device reports (drift
snapshots, interval telemetry, feedback counts) and persists the small state values it returns.

    binned        two-sample statistics on binned counts, vectorised over devices
    drift         snapshots vs reference / baseline -> typed per-entry results
    merge         FleetView: reports summed per group x time window
    decisions     effect-size thresholds + Benjamini-Hochberg -> warn/alert levels
    sequential    always-valid tests (mSPRT), confidence sequences, CUPED
    canary        Kayenta-like judge: per-metric outcome, score, guard rails
    assignment    SHA-256 arm assignment
    degradation   accuracy vs validation; confidence and prediction drift as proxies

Device reports travel in ``edge_runtime.monitor.wire`` (shared with the device).
"""

from __future__ import annotations

from fleet.stats.assignment import Arm, assign, bucket
from fleet.stats.binned import (
    chi_square,
    ks_estimate,
    ks_pvalue,
    ks_statistic,
    mean_test,
    psi,
    rank_sum,
    total_variation,
    wasserstein,
)
from fleet.stats.canary import (
    CanaryConfig,
    CanaryMetric,
    CanaryVerdict,
    Method,
    MetricResult,
    Outcome,
    RateData,
    ValueData,
    judge_canary,
)
from fleet.stats.decisions import (
    Band,
    DriftThresholds,
    EntryVerdict,
    Level,
    benjamini_hochberg,
    bh_adjust,
    judge_drift,
    worst_level,
)
from fleet.stats.degradation import (
    AccuracyCheck,
    ConfidenceCheck,
    DegradationReport,
    DegradationThresholds,
    check_accuracy,
    check_confidence,
    check_degradation,
    validation_accuracy,
)
from fleet.stats.drift import (
    CategoricalDrift,
    DriftReport,
    EntryDrift,
    NumericDrift,
    compare_devices,
    compare_snapshot,
    compare_to_rest,
)
from fleet.stats.errors import InvalidConfig, LayoutMismatch, StatsError
from fleet.stats.merge import FleetView, WindowKey, merge_flat
from fleet.stats.sequential import (
    Cuped,
    Decision,
    Estimate,
    LookResult,
    SequentialState,
    SequentialTest,
    cs_radius,
    cuped,
    decide,
    means,
    mixture_ratio,
    proportions,
    ratio_per_unit,
    step,
    update,
)

__all__ = [
    "AccuracyCheck", "Arm", "Band", "CanaryConfig", "CanaryMetric", "CanaryVerdict",
    "CategoricalDrift", "ConfidenceCheck", "Cuped", "Decision", "DegradationReport",
    "DegradationThresholds", "DriftReport", "DriftThresholds", "EntryDrift",
    "EntryVerdict", "Estimate", "FleetView", "InvalidConfig", "LayoutMismatch", "Level",
    "LookResult", "Method", "MetricResult", "NumericDrift", "Outcome", "RateData",
    "SequentialState", "SequentialTest", "StatsError", "ValueData", "WindowKey", "assign",
    "benjamini_hochberg", "bh_adjust", "bucket", "check_accuracy", "check_confidence",
    "check_degradation", "chi_square", "compare_devices", "compare_snapshot", "compare_to_rest",
    "cs_radius", "cuped", "decide", "judge_canary", "judge_drift", "ks_estimate", "ks_pvalue",
    "ks_statistic",
    "mean_test", "means", "merge_flat", "mixture_ratio", "proportions", "psi", "rank_sum",
    "ratio_per_unit", "step", "total_variation", "update", "validation_accuracy",
    "wasserstein", "worst_level",
]
