"""Telemetry rows and the outbox for the fleet link, bounded in rows, bytes and age.

One table, ``outbox``, holds every message the device reports: each flush's rows (one per model
version and kind: "metrics", "drift", "feedback") and the agent's events, each with a message id
for the fleet link to send at least once. A row stays after it is sent, as the local history
``edge-runtime status`` reads (the ``telemetry`` view). Rows older than the retention go (an
unsent event excepted), and past ``max_rows`` or ``max_bytes`` the oldest rows go; unsent rows
deleted are counted in ``meta`` (``telemetry_dropped``).

Written for SD cards (docs/benchmarks.md, "SD-card wear"). A flush is one transaction appending
at the end of a table without secondary indexes: the unsent rows are found from an in-memory
low-water mark instead of an index, the sent marks of telemetry rows wait in memory for the next
flush instead of taking a transaction of their own (a crash before then re-sends those rows; the
manager drops duplicates by message id), and row and byte totals are kept in memory. Pruning
works in batches: past a bound, down to ``TRIM_TO`` of it; past the retention, every row that
would pass it within ``EXPIRE_AHEAD`` of it (at most an hour). Deleting a few rows every flush
would rewrite the oldest pages and the free list each time.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from edge_runtime.store.db import Database

TRIM_TO = 0.95
EXPIRE_AHEAD = 0.01
EXPIRE_AHEAD_MAX_S = 3600.0
_BATCH = 512


@dataclass(frozen=True)
class Limits:
    max_rows: int = 20_000
    max_bytes: int = 64 * 2**20
    retention_s: float = 7 * 86400.0


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    msg_id: str
    kind: str
    payload: dict[str, Any]


def _ids(ids: Any) -> str:
    """Row ids as one JSON parameter, for ``id IN (SELECT value FROM json_each(?))``."""
    return json.dumps(sorted(ids))


class TelemetryStore:
    def __init__(self, db: Database, limits: Limits | None = None) -> None:
        self.db = db
        self.limits = limits or Limits()
        self._lock = threading.Lock()  # _sent (the loop's sends, the flush thread's appends)
        self._sent: set[int] = set()  # acknowledged, not yet marked in the table
        # Under the database's lock: every unsent row not in _sent has id >= _low.
        self._low: int | None = None
        self._totals: list[int] | None = None  # [rows, payload bytes] of the table

    def append(self, rows: list[dict[str, Any]]) -> int:
        """rows: {"kind", "model", "version", "start", "end", "payload"}; one transaction."""
        if not rows:
            return 0
        with self._writing(durable=False) as cur:
            for row in rows:
                text = json.dumps(row["payload"], separators=(",", ":"))
                self._insert(cur, (uuid.uuid4().hex, row["kind"], row.get("model"),
                                   row.get("version"), row["start"], row["end"], text,
                                   len(text), 0))
        return len(rows)

    def enqueue(self, kind: str, payload: dict[str, Any]) -> str:
        """Store a whole message (an event) for sending; its message id."""
        msg_id = uuid.uuid4().hex
        text = json.dumps({"msg_id": msg_id, **payload}, separators=(",", ":"))
        now = time.time()
        with self._writing() as cur:
            self._insert(cur, (msg_id, kind, payload.get("model"), payload.get("version"), now,
                               now, text, len(text), 1))
        return msg_id

    @contextmanager
    def _writing(self, *, durable: bool = True) -> Iterator[Any]:
        """A transaction that first writes the pending sent marks and ends with pruning."""
        with self._lock:
            marks = set(self._sent)
        try:
            with self.db.transaction(durable=durable) as cur:
                self._totals_in(cur)  # before any insert counts itself in
                if marks:
                    cur.execute("UPDATE outbox SET sent_at = ? WHERE id IN "
                                "(SELECT value FROM json_each(?))", (time.time(), _ids(marks)))
                yield cur
                self._prune(cur)
        except BaseException:
            self._totals = None  # rolled back: read them again
            raise
        with self._lock:
            self._sent -= marks

    def _insert(self, cur: Any, values: tuple[Any, ...]) -> None:
        cur.execute("INSERT INTO outbox (msg_id, kind, model, version, start, end, payload, "
                    "bytes, whole) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
        if self._low is not None:  # ids grow, except after the table was emptied
            self._low = min(self._low, int(cur.lastrowid))
        totals = self._totals_in(cur)
        totals[0] += 1
        totals[1] += values[7]

    def _totals_in(self, cur: Any) -> list[int]:
        if self._totals is None:
            rows, size = cur.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM outbox"
                                     ).fetchone()
            self._totals = [int(rows), int(size)]
        return self._totals

    def _prune(self, cur: Any) -> None:
        lim = self.limits
        horizon = time.time() - lim.retention_s
        dropped = 0
        oldest = cur.execute("SELECT end FROM outbox WHERE sent_at IS NOT NULL OR whole = 0 "
                             "ORDER BY id LIMIT 1").fetchone()
        if oldest is not None and oldest[0] < horizon:
            dropped += self._expire(cur, horizon + min(lim.retention_s * EXPIRE_AHEAD,
                                                       EXPIRE_AHEAD_MAX_S))
        totals = self._totals_in(cur)
        if totals[0] > lim.max_rows or totals[1] > lim.max_bytes:
            dropped += self._trim(cur, int(lim.max_rows * TRIM_TO), int(lim.max_bytes * TRIM_TO))
        if dropped:
            cur.execute("INSERT INTO meta VALUES ('telemetry_dropped', ?) ON CONFLICT(key) DO "
                        "UPDATE SET value = CAST(value AS INTEGER) + ?", (str(dropped), dropped))

    def _expire(self, cur: Any, before: float) -> int:
        """Delete the rows that end before ``before``, from the oldest on (id order is time
        order), keeping unsent events; the number of unsent rows deleted."""
        after, victims, dropped, size = 0, [], 0, 0
        while True:
            batch = cur.execute("SELECT id, end, bytes, sent_at, whole FROM outbox WHERE id > ? "
                                "ORDER BY id LIMIT ?", (after, _BATCH)).fetchall()
            young = next((i for i, r in enumerate(batch) if r[1] >= before), len(batch))
            for row_id, _end, nbytes, sent_at, whole in batch[:young]:
                if sent_at is None and whole:
                    continue
                victims.append(row_id)
                size += nbytes
                dropped += sent_at is None
            if young < len(batch) or len(batch) < _BATCH:
                break
            after = batch[-1][0]
        if victims:
            cur.execute("DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))",
                        (_ids(victims),))
            totals = self._totals_in(cur)
            totals[0] -= len(victims)
            totals[1] -= size
        return dropped

    def _trim(self, cur: Any, rows: int, size: int) -> int:
        """Delete the oldest rows until at most ``rows`` rows of ``size`` bytes are left; the
        number of unsent rows deleted."""
        totals = self._totals_in(cur)
        after, last, dropped = 0, None, 0
        while totals[0] > rows or totals[1] > size:
            batch = cur.execute("SELECT id, bytes, sent_at FROM outbox WHERE id > ? ORDER BY id "
                                "LIMIT ?", (after, _BATCH)).fetchall()
            if not batch:
                break
            for row_id, nbytes, sent_at in batch:
                if totals[0] <= rows and totals[1] <= size:
                    break
                last = row_id
                totals[0] -= 1
                totals[1] -= nbytes
                dropped += sent_at is None
            after = batch[-1][0]
        if last is not None:
            cur.execute("DELETE FROM outbox WHERE id <= ?", (last,))
        return dropped

    def pending(self, limit: int = 100) -> list[OutboxMessage]:
        """The oldest unsent messages (up to ``limit``), in the order they were stored."""
        with self._lock:
            marked = set(self._sent)
        with self.db.reading() as cur:
            if self._low is None:
                self._low = int(cur.execute(
                    "SELECT COALESCE(MIN(id), (SELECT COALESCE(MAX(id), 0) + 1 FROM outbox)) "
                    "FROM outbox WHERE sent_at IS NULL").fetchone()[0])
            rows = cur.execute("SELECT id, msg_id, kind, model, version, start, end, payload, "
                               "whole FROM outbox WHERE id >= ? AND sent_at IS NULL ORDER BY id "
                               "LIMIT ?", (self._low, limit + len(marked))).fetchall()
            out = [_message(r) for r in rows if r[0] not in marked]
            if out:
                self._low = out[0].id
            elif rows:
                self._low = rows[-1][0] + 1
        return out[:limit]

    def mark_sent(self, ids: list[int]) -> None:
        """Record the broker's acknowledgement. Events are marked at once (rare, and the
        agent's state reads them); telemetry rows with the next append."""
        if not ids:
            return
        with self._lock:
            self._sent.update(ids)
        events = self.db.query("SELECT COUNT(*) FROM outbox WHERE whole = 1 AND sent_at IS NULL "
                               "AND id IN (SELECT value FROM json_each(?))", (_ids(ids),))
        if events[0][0]:
            with self._writing():
                pass

    def recent(self, kind: str, since: float = 0.0) -> list[dict[str, Any]]:
        rows = self.db.query("SELECT model, version, start, end, payload FROM outbox "
                             "WHERE whole = 0 AND kind = ? AND end >= ? ORDER BY id", (kind, since))
        return [{"model": r["model"], "version": r["version"], "start": r["start"],
                 "end": r["end"], "payload": json.loads(r["payload"])} for r in rows]

    def counts(self) -> dict[str, int]:
        telemetry, outbox, unsent = self.db.query(
            "SELECT COALESCE(SUM(whole = 0), 0), COUNT(*), COALESCE(SUM(sent_at IS NULL), 0) "
            "FROM outbox")[0]
        dropped = self.db.query("SELECT value FROM meta WHERE key = 'telemetry_dropped'")
        with self._lock:
            marked = len(self._sent)
        return {"telemetry": int(telemetry), "outbox": int(outbox),
                "outbox_unsent": max(0, int(unsent) - marked),
                "dropped": int(dropped[0][0]) if dropped else 0}


def _message(row: Any) -> OutboxMessage:
    """The message as sent: an event as it was stored, a telemetry row in its envelope."""
    payload = json.loads(row[7])
    if not row[8]:
        payload = {"msg_id": row[1], "kind": row[2], "model": row[3], "version": row[4],
                   "start": row[5], "end": row[6], "payload": payload}
    return OutboxMessage(row[0], row[1], row[2], payload)
