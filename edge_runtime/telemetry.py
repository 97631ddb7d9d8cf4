"""Local monitoring hub: request metrics and drift histograms per model version, flushed to
SQLite (telemetry + outbox) every interval.

Drift counting is amortised: requests are buffered (bounded in rows and bytes) and counted in one
vectorised update, so the per-request cost on the hot path is an append.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.feedback import FeedbackBook
from edge_runtime.monitor import wire
from edge_runtime.monitor.drift import DriftAccumulator
from edge_runtime.monitor.health import ServiceHealth
from edge_runtime.monitor.window import FOLD_EVERY, ModelMetrics, PendingRequests
from edge_runtime.monitor.wire import SnapshotLayout
from edge_runtime.package import REFERENCE_STATS
from edge_runtime.store.models import InstalledModel
from edge_runtime.store.telemetry import TelemetryStore

log = logging.getLogger("edge_runtime.telemetry")
Arrays = Mapping[str, NDArray[Any]]
# The request rate behind the sampling probability is measured over windows this long: short,
# so that a burst after an idle spell is sampled within a tenth of a second, not a second later.
DRIFT_RATE_WINDOW_S = 0.1
DRIFT_BUFFER_ROWS = 1024
DRIFT_BUFFER_BYTES = 1 << 20
# A request at least this large is counted at once: buffering it saves no numpy call overhead
# and concatenating it with the next one would only copy it.
DRIFT_LARGE_REQUEST_BYTES = 1 << 18
# Rows of one request counted into the drift histograms at most: a large batch is counted as a
# uniform random sample of its rows, so one 40,000-row request costs what 1,024 rows do (the
# histograms' n says how many rows were counted).
DRIFT_MAX_ROWS_PER_REQUEST = 1024
# Rows kept in memory while the store refuses writes: a day of one model's 10 s intervals.
UNFLUSHED_MAX_ROWS = 10_000


@dataclass
class _DriftSlot:
    acc: DriftAccumulator
    layout: SnapshotLayout
    # Buffered tensors per input / output name, counted together in ``count``.
    inputs: dict[str, list[NDArray[Any]]] = field(default_factory=dict)
    outputs: dict[str, list[NDArray[Any]]] = field(default_factory=dict)
    rows: int = 0
    nbytes: int = 0
    start: float = field(default_factory=time.time)
    # Sampling under load (Telemetry's drift_max_rows_per_s and drift_max_cpu): rows seen
    # since ``since``, the probability a request is counted (from the last window's rate), the
    # seconds one counted row costs (smoothed over counts), and running totals.
    since: float = 0.0
    seen: int = 0
    keep: float = 1.0
    row_cost_s: float = 0.0
    seen_total: int = 0
    counted_total: int = 0

    def admit(self, rows: int, now: float, budget: float, cpu: float,
              draw: Callable[[], float]) -> bool:
        """Whether to count this request: all of them while the rate stays within the limit
        (``budget`` rows a second, and as many rows as ``cpu`` seconds a second of counting
        buy at the measured cost per row; 0 = no such limit), else each with probability
        limit / rate: a uniform random sample, so the histograms stay unbiased (their ``n``
        says how many rows were counted)."""
        if budget <= 0 and cpu <= 0:
            self.seen_total += rows
            self.counted_total += rows
            return True
        if now - self.since >= DRIFT_RATE_WINDOW_S:
            rate = self.seen / (now - self.since)
            limit = budget if budget > 0 else math.inf
            if cpu > 0 and self.row_cost_s > 0:
                limit = min(limit, cpu / self.row_cost_s)
            self.keep = 1.0 if rate <= limit else limit / rate
            self.since, self.seen = now, 0
        self.seen += rows
        self.seen_total += rows
        if self.keep >= 1.0 or draw() < self.keep:
            self.counted_total += rows
            return True
        return False

    def add(self, inputs: Arrays, outputs: Arrays, rows: int) -> bool:
        size = _buffer(self.inputs, inputs)
        _buffer(self.outputs, outputs)
        self.rows += rows
        self.nbytes += size
        return (self.rows >= DRIFT_BUFFER_ROWS or self.nbytes >= DRIFT_BUFFER_BYTES
                or size >= DRIFT_LARGE_REQUEST_BYTES)

    def count(self) -> None:
        if not self.rows and not self.inputs and not self.outputs:
            return
        ins, outs = _concat(self.inputs), _concat(self.outputs)
        rows = self.rows
        self.inputs, self.outputs, self.rows, self.nbytes = {}, {}, 0, 0
        t0 = time.perf_counter()
        self.acc.update(ins, outs)
        if rows:  # what a row costs to count, for drift_max_cpu (smoothed: counts vary)
            cost = (time.perf_counter() - t0) / rows
            self.row_cost_s = cost if not self.row_cost_s else 0.7 * self.row_cost_s + 0.3 * cost


def _sample_rows(inputs: Arrays, outputs: Arrays, rows: int,
                 draw: Callable[[], float]) -> tuple[Arrays, Arrays]:
    """DRIFT_MAX_ROWS_PER_REQUEST of a request's rows, the same rows of every tensor that has
    one per row (a tensor without a batch axis, such as a model's state, is kept whole)."""
    rng = np.random.default_rng(int(draw() * 2**32))
    idx = np.sort(rng.choice(rows, DRIFT_MAX_ROWS_PER_REQUEST, replace=False))

    def pick(arrays: Arrays) -> dict[str, NDArray[Any]]:
        return {k: a[idx] if a.ndim and a.shape[0] == rows else a for k, a in arrays.items()}

    return pick(inputs), pick(outputs)


def _buffer(buffered: dict[str, list[NDArray[Any]]], arrays: Arrays) -> int:
    """Append each tensor to its name's list; their bytes. A plain loop: runs per request."""
    size = 0
    for name, a in arrays.items():
        size += a.nbytes
        parts = buffered.get(name)
        if parts is None:
            buffered[name] = [a]
        else:
            parts.append(a)
    return size


def _concat(parts: dict[str, list[NDArray[Any]]]) -> dict[str, NDArray[Any]]:
    out = {}
    for key, arrays in parts.items():
        if len(arrays) == 1:
            out[key] = arrays[0]
            continue
        try:
            out[key] = np.concatenate(arrays)
        except ValueError:  # different non-batch shapes: count the first shape only
            same = [a for a in arrays if a.ndim and a.shape[1:] == arrays[0].shape[1:]]
            if same:  # (scalars have no batch axis: left out, the accumulator skips them)
                out[key] = np.concatenate(same)
    return out


@dataclass
class _Tap:
    """What ``observe`` needs of one loaded version, found by the model object's identity."""

    model: InstalledModel
    key: tuple[str, str]
    pending: PendingRequests
    slot: _DriftSlot | None


class Telemetry:
    def __init__(self, store: TelemetryStore | None, *, monitoring: bool = True,
                 drift: bool = True, feedback: FeedbackBook | None = None,
                 drift_max_rows_per_s: float = 0.0, drift_max_cpu: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 draw: Callable[[], float] = random.random) -> None:
        self.feedback = feedback
        self.store = store
        self.monitoring = monitoring
        self.drift = drift
        self.drift_budget = drift_max_rows_per_s
        self.drift_cpu = drift_max_cpu
        self._clock = clock
        self._draw = draw
        self.metrics = ModelMetrics(clock=clock)  # one clock: observe reads it once
        self._drift: dict[tuple[str, str], _DriftSlot] = {}
        self._no_ref: set[tuple[str, str]] = set()
        # One lock for the metrics and the drift slots: a request takes it once (observe).
        self._lock = self.metrics.lock
        self._taps: dict[int, _Tap] = {}
        self.health = ServiceHealth()  # the process's tasks and faults (/metrics, status)
        self._unflushed: list[dict[str, Any]] = []  # rows a failed flush could not store

    def attach(self, model: InstalledModel) -> None:
        """Start drift counting for a loaded version, from the reference stats it shipped with."""
        key = (model.name, model.version)
        if key in self._drift or key in self._no_ref:
            return
        try:
            ref = json.loads((model.path / REFERENCE_STATS).read_text())
            slot = _DriftSlot(DriftAccumulator(ref), SnapshotLayout(ref))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s %s: no drift histograms (%s)", model.name, model.version, exc)
            self._no_ref.add((model.name, model.version))
            return
        with self._lock:
            self._drift[(model.name, model.version)] = slot

    def _tap(self, model: InstalledModel) -> _Tap:
        key = (model.name, model.version)
        if self.drift:
            self.attach(model)
        tap = _Tap(model, key, self.metrics.pending_for(key), self._drift.get(key))
        if len(self._taps) >= 64:  # loaded versions come and go; this only saves lookups
            self._taps.clear()
        self._taps[id(model)] = tap
        return tap

    def observe(self, model: InstalledModel, latency_s: float, rows: int, inputs: Arrays,
                outputs: Arrays) -> None:
        """Count one served request: its latency into the metrics and (within the drift
        budget) its tensors into the drift histograms. Hot path: one lock, no key tuple."""
        tap = self._taps.get(id(model))
        if tap is None or tap.model is not model or (tap.slot is None and self.drift
                                                     and tap.key not in self._no_ref):
            tap = self._tap(model)
        now = self._clock()
        with self._lock:
            if self.monitoring and tap.pending.add(latency_s, rows, now) >= FOLD_EVERY:
                self.metrics.fold_locked(tap.key)
            slot = tap.slot
            if slot is None or not self.drift or not slot.admit(rows, now, self.drift_budget,
                                                                self.drift_cpu, self._draw):
                return
            if rows > DRIFT_MAX_ROWS_PER_REQUEST:
                inputs, outputs = _sample_rows(inputs, outputs, rows, self._draw)
                slot.counted_total -= rows - DRIFT_MAX_ROWS_PER_REQUEST
                rows = DRIFT_MAX_ROWS_PER_REQUEST
            if slot.add(inputs, outputs, rows):
                slot.count()

    def drift_sampling(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Per version: (rows seen, rows counted into the drift histograms) since start."""
        with self._lock:
            return {key: (slot.seen_total, slot.counted_total)
                    for key, slot in self._drift.items()}

    def error(self, name: str, version: str, kind: str) -> None:
        if self.monitoring:
            self.metrics.record_error(name, version, kind)

    def flush(self) -> int:
        """Persist what accumulated since the last flush; returns rows written. When the store
        refuses them (disk full, read-only), the rows are kept for the next flush (bounded:
        the oldest beyond ``UNFLUSHED_MAX_ROWS`` are counted as lost) and the error raised."""
        rows, self._unflushed = self._unflushed, []
        for item in self.metrics.drain_interval():
            rows.append({"kind": "metrics", "model": item["model"], "version": item["version"],
                         "start": item["start"], "end": item["end"], "payload": item})
        now = time.time()
        for name, version, counts in self.feedback.drain() if self.feedback else ():
            rows.append({"kind": "feedback", "model": name, "version": version, "start": now,
                         "end": now, "payload": {"n": counts.n, "correct": counts.correct}})
        with self._lock:
            for (name, version), slot in self._drift.items():
                try:
                    row = _drift_row(name, version, slot, now)
                except Exception:  # one version's histograms must not cost every other row
                    self.health.fault("drift_snapshot")
                    log.exception("%s %s: drift snapshot failed (its counts are lost)", name,
                                  version)
                    continue
                if row is not None:
                    rows.append(row)
        if self.store is not None and rows:
            try:
                self.store.append(rows)
            except Exception:
                lost = max(0, len(rows) - UNFLUSHED_MAX_ROWS)
                if lost:
                    self.health.fault("telemetry_rows_lost", lost)
                self._unflushed = rows[lost:]
                raise
        return len(rows)


def _drift_row(name: str, version: str, slot: _DriftSlot, now: float) -> dict[str, Any] | None:
    start, slot.start = slot.start, now
    slot.count()
    snap = slot.acc.snapshot(reset=True)
    if not _has_data(snap):
        return None
    # the compact wire form (counts only, in the reference's order): ~1-2 KB
    data = base64.b64encode(wire.encode(slot.layout, snap)).decode()
    return {"kind": "drift", "model": name, "version": version, "start": start, "end": now,
            "payload": {"encoding": wire.MAGIC.decode(), "data": data}}


def _has_data(snap: Mapping[str, Any]) -> bool:
    return any(f.get("n", 0) for f in snap.get("features", [])) or any(
        o.get("n", 0) for o in snap.get("outputs", []))
