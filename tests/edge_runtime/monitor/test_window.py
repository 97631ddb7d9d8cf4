from __future__ import annotations

import json
import threading
from dataclasses import dataclass

import pytest

from edge_runtime.monitor.histogram import LogHistogram
from edge_runtime.monitor.window import MetricsWindow, ModelMetrics


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_snapshot_counts_requests_errors_and_latency() -> None:
    clock = FakeClock()
    window = MetricsWindow(10.0, 6, clock=clock)
    clock.advance(20.0)
    for i in range(1, 101):
        window.record(i / 1000, items=4)
    window.record_error("input_invalid")
    window.record_error("input_invalid")
    window.record_error("inference_failed")
    snap = window.snapshot(60.0)
    assert snap.requests == 103
    assert snap.items == 400
    assert snap.errors == {"input_invalid": 2, "inference_failed": 1}
    assert snap.error_rate == pytest.approx(3 / 103)
    # Created at t=1000, now t=1020: the covered span is 20 s, not the 60 s asked for.
    assert snap.window_seconds == pytest.approx(20.0)
    assert snap.throughput_rps == pytest.approx(103 / 20.0)
    for got, want in ((snap.p50, 0.050), (snap.p95, 0.095), (snap.p99, 0.099)):
        assert got == pytest.approx(want, rel=0.01)


def test_empty_window_has_no_quantiles() -> None:
    window = MetricsWindow(clock=FakeClock())
    snap = window.snapshot(60.0)
    assert (snap.requests, snap.errors, snap.error_rate, snap.throughput_rps) == (0, {}, 0.0, 0.0)
    assert (snap.p50, snap.p95, snap.p99) == (None, None, None)


def test_only_errors_gives_rate_one_and_no_latency() -> None:
    window = MetricsWindow(clock=FakeClock())
    window.record_error("timeout")
    snap = window.snapshot(10.0)
    assert snap.error_rate == 1.0 and snap.p50 is None


@pytest.mark.parametrize(
    ("ages", "seconds", "expected"),
    [
        # (ages in seconds of the recorded requests, snapshot span, requests seen)
        ([0.0], 10.0, 1),
        ([5.0, 15.0, 25.0], 10.0, 1),
        ([5.0, 15.0, 25.0], 20.0, 2),
        ([5.0, 15.0, 25.0], 30.0, 3),
        ([5.0, 55.0, 65.0], 60.0, 2),
        ([5.0, 55.0, 65.0], 3600.0, 2),  # capped at the ring's 60 s: 65 s ago has expired
    ],
)
def test_window_expiry(ages: list[float], seconds: float, expected: int) -> None:
    # now = 1099.5 sits in slot [1090, 1100); slots are aligned to multiples of 10 s.
    clock = FakeClock(999.5)
    window = MetricsWindow(10.0, 6, clock=clock)
    for age in sorted(ages, reverse=True):
        clock.now = 1099.5 - age
        window.record(0.01)
    clock.now = 1099.5
    assert window.snapshot(seconds).requests == expected


def test_reused_slot_forgets_the_previous_lap() -> None:
    clock = FakeClock(0.0)
    window = MetricsWindow(1.0, 3, clock=clock)
    window.record(0.5)
    window.record_error("x")
    clock.advance(3.0)  # same ring position, next lap
    window.record(0.1)
    snap = window.snapshot(3.0)
    assert (snap.requests, snap.errors) == (1, {})
    assert snap.p99 == pytest.approx(0.1, rel=0.01)


def test_totals_are_cumulative_and_never_expire() -> None:
    clock = FakeClock()
    window = MetricsWindow(1.0, 2, clock=clock)
    window.record(0.25, items=3)
    window.record_error("bad")
    clock.advance(1000.0)
    window.record(0.75)
    totals = window.totals()
    assert window.snapshot(2.0).requests == 1
    assert (totals.requests, totals.errors, totals.items) == (3, {"bad": 1}, 4)
    assert (totals.latency_sum, totals.latency_count) == (1.0, 2)


def test_drain_returns_interval_and_keeps_windows() -> None:
    clock, wall = FakeClock(), FakeClock(1_700_000_000.0)
    metrics = ModelMetrics(clock=clock, wall_clock=wall)
    metrics.record("det", "1", 0.010, items=8)
    metrics.record("det", "1", 0.020)
    metrics.record_error("det", "1", "input_invalid")
    metrics.record("cls", "2", 0.005)
    wall.advance(30.0)
    first = metrics.drain_interval()
    assert json.loads(json.dumps(first, allow_nan=False)) == first
    by_model = {(d["model"], d["version"]): d for d in first}
    det = by_model["det", "1"]
    assert (det["start"], det["end"]) == (1_700_000_000.0, 1_700_000_030.0)
    assert (det["requests"], det["errors"], det["items"]) == (3, {"input_invalid": 1}, 9)
    hist = LogHistogram.from_dict(det["latency"])
    assert hist.count == 2 and hist.quantile(1.0) == pytest.approx(0.020, rel=0.01)
    assert by_model["cls", "2"]["requests"] == 1

    # Draining did not touch the rolling windows or the totals.
    assert metrics.snapshot_all(60.0)["det", "1"].requests == 3
    assert metrics.totals_all()["det", "1"].requests == 3

    wall.advance(30.0)
    assert metrics.drain_interval() == []  # idle versions are left out
    metrics.record("cls", "2", 0.001)
    wall.advance(5.0)
    (only,) = metrics.drain_interval()
    assert (only["model"], only["requests"]) == ("cls", 1)
    assert (only["start"], only["end"]) == (1_700_000_060.0, 1_700_000_065.0)


def test_model_metrics_counts_from_many_threads() -> None:
    metrics = ModelMetrics(clock=FakeClock())

    def work(version: str) -> None:
        for i in range(500):
            metrics.record("m", version, 0.001 * (i % 7 + 1))
            if i % 10 == 0:
                metrics.record_error("m", version, "boom")

    threads = [threading.Thread(target=work, args=(str(i % 2),)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals = metrics.totals_all()
    assert sorted(totals) == [("m", "0"), ("m", "1")]
    for total in totals.values():
        assert (total.requests, total.errors, total.latency_count) == (
            3 * 550, {"boom": 150}, 1500)
    assert sum(d["requests"] for d in metrics.drain_interval()) == 6 * 550


@pytest.mark.parametrize(("slot_seconds", "slots"), [(0.0, 10), (-1.0, 10), (1.0, 0)])
def test_rejects_bad_ring(slot_seconds: float, slots: int) -> None:
    with pytest.raises(ValueError, match="slot"):
        MetricsWindow(slot_seconds, slots, clock=FakeClock())


def test_buffered_requests_land_in_the_slot_of_their_own_time() -> None:
    """ModelMetrics counts requests in batches; each still lands in the slot of the time it was
    recorded, and every read counts what is buffered first."""
    clock = FakeClock()
    metrics = ModelMetrics(slot_seconds=10.0, slots=6, clock=clock)
    direct = MetricsWindow(10.0, 6, clock=clock)
    for i in range(150):  # more than one fold, spread over 3 slots
        metrics.record("m", "1", 0.001 * (i % 9 + 1), items=2)
        direct.record(0.001 * (i % 9 + 1), items=2)
        clock.advance(0.2)
    for seconds in (10.0, 20.0, 60.0):
        got, want = metrics.snapshot_all(seconds)["m", "1"], direct.snapshot(seconds)
        assert (got.requests, got.items, got.p50, got.p99) == (
            want.requests, want.items, want.p50, want.p99)
    assert metrics.snapshot_all(10.0)["m", "1"].requests < 150  # older slots are left out
    assert metrics.totals_all()["m", "1"].latency_sum == pytest.approx(direct.totals().latency_sum)


def test_a_buffered_request_older_than_the_ring_still_counts_in_totals() -> None:
    clock = FakeClock()
    metrics = ModelMetrics(slot_seconds=1.0, slots=3, clock=clock)
    metrics.record("m", "1", 0.004)
    clock.advance(10.0)
    metrics.record_error("m", "1", "boom")  # the ring moves on before the fold
    assert metrics.snapshot_all(3.0)["m", "1"].requests == 1  # only the error is recent
    assert metrics.totals_all()["m", "1"].requests == 2
    (interval,) = metrics.drain_interval()
    assert interval["requests"] == 2


def test_model_metrics_refuses_a_non_finite_latency() -> None:
    metrics = ModelMetrics(clock=FakeClock())
    with pytest.raises(ValueError, match="non-finite"):
        metrics.record("m", "1", float("nan"))
    assert metrics.totals_all() == {}
