"""On-device monitoring: latency/error/throughput windows, drift counts, Prometheus text.

Everything here is transport-free and clock-injectable; the daemon drains intervals into the
store and the API layer serves ``render(...)``.
"""

from __future__ import annotations

from edge_runtime.monitor.drift import DriftAccumulator, merge_snapshots
from edge_runtime.monitor.histogram import LogHistogram
from edge_runtime.monitor.prometheus import CONTENT_TYPE, Gauge, render
from edge_runtime.monitor.window import (
    IntervalStats,
    MetricsWindow,
    ModelMetrics,
    WindowSnapshot,
    WindowTotals,
)

__all__ = [
    "CONTENT_TYPE",
    "DriftAccumulator",
    "Gauge",
    "IntervalStats",
    "LogHistogram",
    "MetricsWindow",
    "ModelMetrics",
    "WindowSnapshot",
    "WindowTotals",
    "merge_snapshots",
    "render",
]
