from __future__ import annotations

from edge_runtime import monitor


def test_public_names() -> None:
    assert sorted(monitor.__all__) == [
        "CONTENT_TYPE", "DriftAccumulator", "Gauge", "IntervalStats", "LogHistogram",
        "MetricsWindow", "ModelMetrics", "WindowSnapshot", "WindowTotals", "merge_snapshots",
        "render",
    ]
    assert all(hasattr(monitor, name) for name in monitor.__all__)
