"""Throughput is requests over the window's elapsed time, or over the time since counting began
(the daemon's start) when that is shorter: never over the instant a window was first folded."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.monitor.window import MetricsWindow, ModelMetrics


@dataclass
class FakeClock:
    now: float = 5000.0

    def __call__(self) -> float:
        return self.now


def test_one_request_in_the_last_minute_is_not_1788_rps() -> None:
    clock = FakeClock()
    metrics = ModelMetrics(clock=clock)  # the daemon starts
    clock.now += 30.0
    metrics.record("m", "1", 0.002)
    clock.now += 0.0005  # `status` right after: the window is created by this snapshot's fold
    snap = metrics.snapshot_all(60.0)[("m", "1")]
    assert snap.requests == 1
    assert snap.window_seconds == pytest.approx(30.0005)
    assert snap.throughput_rps == pytest.approx(1 / 30.0005)


def test_413_requests_over_30_s() -> None:
    clock = FakeClock()
    metrics = ModelMetrics(clock=clock)
    for i in range(413):
        clock.now = 5000.0 + 30.0 * i / 412
        metrics.record("m", "1", 0.001)
    snaps = metrics.snapshot_all(60.0)
    assert snaps[("m", "1")].throughput_rps == pytest.approx(413 / 30.0)
    assert metrics.snapshot_all(300.0)[("m", "1")].throughput_rps == pytest.approx(413 / 30.0)


def test_long_running_daemon_divides_by_the_window() -> None:
    clock = FakeClock(now=10_000.0)
    metrics = ModelMetrics(slot_seconds=10.0, clock=clock)
    clock.now = 20_000.0  # up for hours; a version that takes traffic only now
    for _ in range(600):
        metrics.record("m", "2", 0.001)
        clock.now += 0.1
    snap = metrics.snapshot_all(60.0)[("m", "2")]
    # The 60 s view merges the six 10 s slots up to now: 50 s <= span <= 60 s.
    assert 50.0 <= snap.window_seconds <= 60.0
    assert snap.throughput_rps == pytest.approx(snap.requests / snap.window_seconds)
    assert 9.0 <= snap.throughput_rps <= 10.5


@settings(max_examples=200, deadline=None)
@given(uptime=st.floats(0.001, 2000.0), gaps=st.lists(st.floats(0.0, 40.0), max_size=60),
       tail=st.floats(0.0, 30.0), seconds=st.sampled_from([10.0, 60.0, 300.0, 900.0]))
def test_rate_is_requests_over_min_of_window_and_uptime(uptime: float, gaps: list[float],
                                                        tail: float, seconds: float) -> None:
    clock = FakeClock()
    started = clock.now
    metrics = ModelMetrics(slot_seconds=10.0, slots=90, clock=clock)
    clock.now += uptime
    times = []
    for gap in gaps:
        clock.now += gap
        times.append(clock.now)
        metrics.record("m", "1", 0.001)
    clock.now += tail
    snap = metrics.snapshot_all(seconds).get(("m", "1"))
    if snap is None:
        assert not gaps
        return
    now = clock.now
    window_start = (math.floor(now / 10.0) - math.ceil(seconds / 10.0) + 1) * 10.0
    span = now - max(window_start, started)
    assert snap.window_seconds == pytest.approx(span)
    assert snap.requests == sum(1 for t in times if math.floor(t / 10.0) * 10.0 >= window_start)
    expected = snap.requests / span if span > 0 else 0.0
    assert snap.throughput_rps == pytest.approx(expected)
    assert snap.window_seconds <= now - started + 1e-9


def test_a_window_made_directly_counts_from_its_creation() -> None:
    clock = FakeClock()
    window = MetricsWindow(10.0, 6, clock=clock)
    clock.now += 4.0
    window.record(0.001)
    assert window.snapshot(60.0).throughput_rps == pytest.approx(1 / 4.0)
    early = MetricsWindow(10.0, 6, clock=clock, started=clock.now - 40.0)
    early.record(0.001)
    assert early.snapshot(60.0).window_seconds == pytest.approx(40.0)
