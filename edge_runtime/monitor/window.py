"""Rolling request/error/latency windows per model version, plus interval drains for persistence.

A ``MetricsWindow`` keeps a ring of fixed-length time slots, so a snapshot over the last N
seconds merges at most ``slots`` small histograms and old data expires by being overwritten,
with no per-request allocation. Each request is counted three times: into its slot (rolling
views for health checks and /metrics), into cumulative totals (Prometheus counters) and into the
current interval (what the daemon persists to SQLite and sends to the fleet). Draining an
interval therefore never disturbs the rolling window.

A failed request is counted with ``record_error`` only: it is a request (``requests`` counts
it) but its latency is not mixed into the latency of served requests.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.monitor.histogram import LogHistogram

Clock = Callable[[], float]
ModelKey = tuple[str, str]
# ModelMetrics buffers this many requests per version before counting them in one vectorised
# pass (reads count what is buffered first, so nothing they return is ever stale).
FOLD_EVERY = 2048


class PendingRequests:
    """A version's requests not yet counted, as three columns of C doubles: no per-request
    Python object is kept alive until the fold."""

    __slots__ = ("at", "items", "latency")

    def __init__(self) -> None:
        self.latency = array("d")
        self.items = array("d")
        self.at = array("d")

    def add(self, latency_s: float, items: int, at: float) -> int:
        """Append one request; how many are pending now (the caller folds at FOLD_EVERY)."""
        self.latency.append(latency_s)
        self.items.append(items)
        self.at.append(at)
        return len(self.latency)

    def take(self) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]:
        """The columns as arrays; this object starts empty again (holders keep using it)."""
        out = (np.frombuffer(self.latency), np.frombuffer(self.items).astype(np.int64),
               np.frombuffer(self.at))
        self.latency, self.items, self.at = array("d"), array("d"), array("d")
        return out


@dataclass
class IntervalStats:
    """Counts over some span of time: one ring slot, one drain interval, or everything."""

    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: LogHistogram = field(default_factory=LogHistogram)
    items: int = 0

    def add_request(self, latency_s: float, items: int) -> None:
        self.requests += 1
        self.items += items
        self.latency.record(latency_s)

    def add_requests(self, latencies: NDArray[np.float64], items: int) -> None:
        self.requests += int(latencies.size)
        self.items += items
        self.latency.record_many(latencies)

    def add_error(self, kind: str) -> None:
        self.requests += 1
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def merge(self, other: IntervalStats) -> None:
        self.requests += other.requests
        self.items += other.items
        for kind, n in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        self.latency.merge(other.latency)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class WindowSnapshot:
    """Stats over the last ``window_seconds`` (the span actually covered, see ``snapshot``)."""

    requests: int
    errors: dict[str, int]
    error_rate: float
    throughput_rps: float
    p50: float | None
    p95: float | None
    p99: float | None
    window_seconds: float
    items: int = 0


@dataclass(frozen=True)
class WindowTotals:
    """Cumulative counts since the window was created, for Prometheus counters."""

    requests: int
    errors: dict[str, int]
    latency_sum: float
    latency_count: int
    items: int
    #: every served request's latency since the start, for the Prometheus histogram
    latency: LogHistogram = field(default_factory=LogHistogram)


class MetricsWindow:
    """Ring of ``slots`` slots of ``slot_seconds`` each. Not thread-safe: ``ModelMetrics`` locks."""

    def __init__(
        self, slot_seconds: float = 10.0, slots: int = 90, *, clock: Clock = time.monotonic,
        started: float | None = None,
    ) -> None:
        """``started``: when counting began (default: now). Throughput never divides by time
        before it, nor by time after it that the window did not exist to count."""
        if slot_seconds <= 0 or slots < 1:
            raise ValueError(f"need slot_seconds > 0 and slots >= 1, got {slot_seconds}, {slots}")
        self.slot_seconds = slot_seconds
        self.slots = slots
        self._clock = clock
        self._started = clock() if started is None else started
        self._epochs: list[int | None] = [None] * slots
        self._ring = [IntervalStats() for _ in range(slots)]
        self._total_requests = self._total_items = 0
        self._total_latency = 0.0
        # bounded like any LogHistogram: one count per occupied log bucket
        self._total_hist = LogHistogram()
        self._total_errors: dict[str, int] = {}
        self._interval = IntervalStats()

    def _slot(self) -> IntervalStats:
        """The slot for now, cleared first if it still holds a slot from a previous lap."""
        slot = self._slot_at(math.floor(self._clock() / self.slot_seconds))
        assert slot is not None  # now is never older than what the ring holds
        return slot

    def _slot_at(self, epoch: int) -> IntervalStats | None:
        """The slot of ``epoch``; None when the ring has moved past it (too old to keep)."""
        pos = epoch % self.slots
        held = self._epochs[pos]
        if held != epoch:
            if held is not None and held > epoch:
                return None
            self._epochs[pos] = epoch
            self._ring[pos] = IntervalStats()
        return self._ring[pos]

    def record(self, latency_s: float, *, items: int = 1) -> None:
        """Count one served request (``items`` batch rows) that took ``latency_s`` seconds."""
        self._slot().add_request(latency_s, items)
        self._interval.add_request(latency_s, items)
        self._total_requests += 1
        self._total_items += items
        self._total_latency += latency_s
        self._total_hist.record(latency_s)

    def record_batch(self, latency: NDArray[np.float64], items: NDArray[np.int64],
                     at: NDArray[np.float64]) -> None:
        """Count served requests given as columns (latency in seconds, batch rows, clock time
        when served), each into the slot of its own time (what ``record`` would have done).
        The batch is counted into a histogram once and merged into the slot and the interval
        (a merge is a dict walk over a few dozen buckets; counting is a dozen numpy calls)."""
        epochs = np.floor(at / self.slot_seconds).astype(np.int64)
        first, last = int(epochs.min()), int(epochs.max())
        if first == last:  # nearly always: one slot, no selection
            batch = self._add_to_slot(first, latency, items)
        else:
            batch = IntervalStats()
            for epoch in np.unique(epochs).tolist():
                pick = epochs == epoch
                batch.merge(self._add_to_slot(epoch, latency[pick], items[pick]))
        self._interval.merge(batch)
        self._total_requests += batch.requests
        self._total_items += batch.items
        self._total_latency += batch.latency.sum
        self._total_hist.merge(batch.latency)

    def _add_to_slot(self, epoch: int, latency: NDArray[np.float64],
                     items: NDArray[np.int64]) -> IntervalStats:
        batch = IntervalStats()
        batch.add_requests(latency, int(items.sum()))
        slot = self._slot_at(epoch)
        if slot is not None:
            slot.merge(batch)
        return batch

    def record_error(self, kind: str) -> None:
        """Count one failed request; ``kind`` is a short stable label (e.g. "input_invalid")."""
        self._slot().add_error(kind)
        self._interval.add_error(kind)
        self._total_requests += 1
        self._total_errors[kind] = self._total_errors.get(kind, 0) + 1

    def snapshot(self, seconds: float) -> WindowSnapshot:
        """Merge the slots of the last ``seconds`` (capped at the ring's span).

        The current slot is only partly over, so the covered span runs from the start of the
        oldest merged slot (or ``started``, if later) to now; throughput divides by that span,
        not by ``seconds``, so a fresh window does not under-report, nor over-report.
        """
        now = self._clock()
        current = math.floor(now / self.slot_seconds)
        wanted = min(self.slots, max(1, math.ceil(seconds / self.slot_seconds)))
        merged = IntervalStats()
        for epoch in range(current - wanted + 1, current + 1):
            pos = epoch % self.slots
            if self._epochs[pos] == epoch:
                merged.merge(self._ring[pos])
        start = max((current - wanted + 1) * self.slot_seconds, self._started)
        return _to_snapshot(merged, max(now - start, 0.0))

    def totals(self) -> WindowTotals:
        served = self._total_requests - sum(self._total_errors.values())
        return WindowTotals(self._total_requests, dict(self._total_errors), self._total_latency,
                            served, self._total_items, self._total_hist.copy())

    def drain(self) -> IntervalStats:
        """Hand over the counts since the last drain and start a new interval."""
        out, self._interval = self._interval, IntervalStats()
        return out


def _to_snapshot(stats: IntervalStats, span: float) -> WindowSnapshot:
    hist = stats.latency
    p50, p95, p99 = (hist.quantile(q) if hist.count else None for q in (0.5, 0.95, 0.99))
    return WindowSnapshot(
        requests=stats.requests,
        errors=dict(stats.errors),
        error_rate=stats.error_count / stats.requests if stats.requests else 0.0,
        throughput_rps=stats.requests / span if span > 0 else 0.0,
        p50=p50,
        p95=p95,
        p99=p99,
        window_seconds=span,
        items=stats.items,
    )


class ModelMetrics:
    """Thread-safe map of (model, version) -> ``MetricsWindow``; what handlers and the daemon use.

    ``wall_clock`` stamps drained intervals (they are stored and compared across devices), while
    windows use the monotonic ``clock`` so NTP jumps do not corrupt rates.
    """

    def __init__(
        self,
        *,
        slot_seconds: float = 10.0,
        slots: int = 90,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self._slot_seconds = slot_seconds
        self._slots = slots
        self._clock = clock
        self._wall_clock = wall_clock
        # Windows are created when their first requests are folded, which may be long after
        # those requests were served: their span starts here, when counting began.
        self._started = clock()
        self._lock = threading.Lock()
        self._windows: dict[ModelKey, MetricsWindow] = {}
        self._pending: dict[ModelKey, PendingRequests] = {}
        self._last_drain = wall_clock()

    def _window(self, model: str, version: str) -> MetricsWindow:
        key = (model, version)
        window = self._windows.get(key)
        if window is None:
            window = MetricsWindow(self._slot_seconds, self._slots, clock=self._clock,
                                   started=self._started)
            self._windows[key] = window
        return window

    def record(self, model: str, version: str, latency_s: float, *, items: int = 1) -> None:
        """Count one served request. Hot path: three appends; every ``FOLD_EVERY`` requests of
        a version are counted together (histogram buckets in one numpy pass)."""
        if not math.isfinite(latency_s):
            raise ValueError(f"cannot record non-finite latency {latency_s}")
        now = self._clock()
        key = (model, version)
        with self._lock:
            if self._pending_locked(key).add(latency_s, items, now) >= FOLD_EVERY:
                self._fold(key)

    @property
    def lock(self) -> threading.Lock:
        """The lock guarding pending columns and windows (the telemetry hub shares it)."""
        return self._lock

    def pending_for(self, key: ModelKey) -> PendingRequests:
        """The version's pending columns, for a caller that appends to them itself while
        holding ``lock`` and calls ``fold_locked`` at ``FOLD_EVERY`` (the telemetry hub)."""
        with self._lock:
            return self._pending_locked(key)

    def _pending_locked(self, key: ModelKey) -> PendingRequests:
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = PendingRequests()
        return pending

    def fold_locked(self, key: ModelKey) -> None:
        """Count a version's pending requests; the caller holds ``lock``."""
        self._fold(key)

    def _fold(self, key: ModelKey) -> None:
        pending = self._pending.get(key)
        if pending is not None and pending.latency:
            self._window(*key).record_batch(*pending.take())

    def _fold_all(self) -> None:
        for key in list(self._pending):
            self._fold(key)

    def record_error(self, model: str, version: str, kind: str) -> None:
        with self._lock:
            self._window(model, version).record_error(kind)

    def snapshot_all(self, seconds: float) -> dict[ModelKey, WindowSnapshot]:
        with self._lock:
            self._fold_all()
            return {key: w.snapshot(seconds) for key, w in sorted(self._windows.items())}

    def totals_all(self) -> dict[ModelKey, WindowTotals]:
        with self._lock:
            self._fold_all()
            return {key: w.totals() for key, w in sorted(self._windows.items())}

    def drain_interval(self) -> list[dict[str, Any]]:
        """JSON-safe counts per model version since the previous drain; idle versions are left out.

        ``start`` is the previous drain's wall-clock time (or creation), ``end`` is now.
        """
        with self._lock:
            self._fold_all()
            end = self._wall_clock()
            start, self._last_drain = self._last_drain, end
            drained = [(key, w.drain()) for key, w in sorted(self._windows.items())]
        return [
            {
                "model": model,
                "version": version,
                "start": start,
                "end": end,
                "requests": stats.requests,
                "errors": dict(stats.errors),
                "items": stats.items,
                "latency": stats.latency.to_dict(),
            }
            for (model, version), stats in drained
            if stats.requests
        ]
