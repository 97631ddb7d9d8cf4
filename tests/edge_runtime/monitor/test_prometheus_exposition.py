"""/metrics text checked with a real parser (prometheus_client's): counters and one histogram
per model version, fixed buckets on every device, the histogram invariants (cumulative
buckets, +Inf == _count, _sum), and bucket counts within the log histogram's 1% of exact."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from edge_runtime.monitor.histogram import DEFAULT_ACCURACY, LogHistogram
from edge_runtime.monitor.prometheus import LATENCY_BUCKETS, Gauge, bucket_counts, render
from edge_runtime.monitor.window import MetricsWindow, ModelKey, WindowTotals

H = "edge_request_duration_seconds"


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def totals_for(latencies: list[float], errors: int = 0) -> WindowTotals:
    clock = iter(range(10**6))
    window = MetricsWindow(clock=lambda: float(next(clock)))
    for value in latencies:
        window.record(value)
    for _ in range(errors):
        window.record_error("invalid_input")
    return window.totals()


def check_histogram(fams: dict[str, Any], key: ModelKey, latencies: list[float]) -> None:
    samples = [s for s in fams[H].samples
               if (s.labels.get("model"), s.labels.get("version")) == key]
    buckets = [s for s in samples if s.name == f"{H}_bucket"]
    les = [s.labels["le"] for s in buckets]
    assert les == [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]  # the same on every device
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)  # cumulative
    (count,) = [s.value for s in samples if s.name == f"{H}_count"]
    (total,) = [s.value for s in samples if s.name == f"{H}_sum"]
    assert counts[-1] == count == len(latencies)
    assert math.isclose(total, math.fsum(latencies), rel_tol=1e-9, abs_tol=1e-12)
    for bound, n in zip(LATENCY_BUCKETS, counts, strict=False):
        # a value within the log histogram's relative accuracy of a bound may land either side
        low = sum(v <= bound * (1 - 2 * DEFAULT_ACCURACY) for v in latencies)
        high = sum(v <= bound * (1 + 2 * DEFAULT_ACCURACY) for v in latencies)
        assert low <= n <= high, (bound, n, low, high)


def test_exposition_parses_with_types_and_no_rate_gauge() -> None:
    lat = [0.0002, 0.003, 0.003, 0.07, 1.5, 30.0]
    text = render({("digits", "3"): totals_for(lat, errors=2)}, feedback={("digits", "3"): (5, 4)},
                  extra_gauges=[Gauge("edge_task_running", "Running.", 1, {"task": "flush"})])
    fams = families(text)
    kinds = {name: f.type for name, f in fams.items()}
    assert kinds == {"edge_requests": "counter", "edge_errors": "counter", H: "histogram",
                     "edge_feedback": "counter", "edge_feedback_correct": "counter",
                     "edge_task_running": "gauge"}
    assert "rps" not in text and "quantile" not in text
    check_histogram(fams, ("digits", "3"), lat)
    ids = {"model": "digits", "version": "3"}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in fams.values() for s in f.samples}
    assert values[("edge_requests_total", tuple(sorted(ids.items())))] == 8
    assert values[("edge_feedback_total", tuple(sorted(ids.items())))] == 5
    assert values[("edge_feedback_correct_total", tuple(sorted(ids.items())))] == 4


def test_a_version_with_only_errors_has_an_empty_histogram() -> None:
    fams = families(render({("m", "1"): totals_for([], errors=3)}))
    check_histogram(fams, ("m", "1"), [])


def test_histograms_of_two_devices_add_up_to_the_histogram_of_both() -> None:
    a, b = [0.001, 0.02, 0.4], [0.0009, 0.03, 7.0, 12.0]
    both = LogHistogram()
    for v in a + b:
        both.record(v)
    summed = [x + y for x, y in zip(bucket_counts(totals_for(a).latency),
                                    bucket_counts(totals_for(b).latency), strict=True)]
    assert summed == bucket_counts(both)


_LATENCY = st.floats(min_value=0.0, max_value=60.0, allow_nan=False)
_NAME = st.text(min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(versions=st.dictionaries(st.tuples(_NAME, _NAME), st.lists(_LATENCY, max_size=60),
                                min_size=1, max_size=3),
       feedback=st.tuples(st.integers(0, 10**12), st.integers(0, 10**12)))
def test_any_traffic_renders_a_valid_exposition(versions: dict[ModelKey, list[float]],
                                                feedback: tuple[int, int]) -> None:
    totals = {key: totals_for(lat) for key, lat in versions.items()}
    fams = families(render(totals, feedback=dict.fromkeys(versions, feedback)))
    for key, lat in versions.items():
        check_histogram(fams, key, lat)
    assert len(fams["edge_feedback"].samples) == len(versions)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=1e-6, max_value=100.0), min_size=1, max_size=200))
def test_bucket_counts_are_exact_away_from_the_bounds(latencies: list[float]) -> None:
    hist = LogHistogram()
    for v in latencies:
        hist.record(v)
    counts = bucket_counts(hist)
    assert counts[-1] == len(latencies)
    for bound, n in zip(LATENCY_BUCKETS, counts, strict=False):
        near = [v for v in latencies if abs(v - bound) <= 2 * DEFAULT_ACCURACY * bound]
        exact = sum(v <= bound for v in latencies)
        assert abs(n - exact) <= len(near)
