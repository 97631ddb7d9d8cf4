"""Telemetry rows and the outbox for the fleet link, bounded in rows, bytes and age.

Each flush writes one row per model version and kind ("metrics", "drift") into ``telemetry``
(local history for ``edge-runtime status``) and the same payload into ``outbox`` with a message
id, for the fleet link to send at least once. When a bound is hit the oldest rows go first and the
number dropped is counted in ``meta``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from edge_runtime.store.db import Database


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


class TelemetryStore:
    def __init__(self, db: Database, limits: Limits | None = None) -> None:
        self.db = db
        self.limits = limits or Limits()

    def append(self, rows: list[dict[str, Any]]) -> int:
        """rows: {"kind", "model", "version", "start", "end", "payload"}; one transaction."""
        if not rows:
            return 0
        with self.db.transaction() as cur:
            for row in rows:
                text = json.dumps(row["payload"], separators=(",", ":"))
                cur.execute(
                    "INSERT INTO telemetry (kind, model, version, start, end, payload, bytes) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (row["kind"], row.get("model"), row.get("version"), row["start"],
                     row["end"], text, len(text)))
                message = {"kind": row["kind"], "model": row.get("model"),
                           "version": row.get("version"), "start": row["start"],
                           "end": row["end"], "payload": row["payload"]}
                self._enqueue(cur, row["kind"], message)
            self._prune(cur)
        return len(rows)

    def enqueue(self, kind: str, payload: dict[str, Any]) -> str:
        with self.db.transaction() as cur:
            msg_id = self._enqueue(cur, kind, payload)
            self._prune(cur)
        return msg_id

    @staticmethod
    def _enqueue(cur: Any, kind: str, payload: dict[str, Any]) -> str:
        msg_id = uuid.uuid4().hex
        text = json.dumps({"msg_id": msg_id, **payload}, separators=(",", ":"))
        cur.execute("INSERT INTO outbox (msg_id, kind, payload, bytes, created_at) "
                    "VALUES (?, ?, ?, ?, ?)", (msg_id, kind, text, len(text), time.time()))
        return msg_id

    def _prune(self, cur: Any) -> None:
        horizon = time.time() - self.limits.retention_s
        dropped = cur.execute("DELETE FROM telemetry WHERE end < ?", (horizon,)).rowcount
        cur.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (horizon,))
        for table in ("telemetry", "outbox"):
            rows, size = cur.execute(f"SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM {table}"
                                     ).fetchone()
            while rows > self.limits.max_rows or size > self.limits.max_bytes:
                extra = max(rows - self.limits.max_rows, 1)
                victims = cur.execute(f"SELECT id, bytes FROM {table} ORDER BY id LIMIT ?",
                                      (extra,)).fetchall()
                cur.execute(f"DELETE FROM {table} WHERE id <= ?", (victims[-1][0],))
                rows -= len(victims)
                size -= sum(v[1] for v in victims)
                if table == "outbox":
                    dropped += len(victims)
        if dropped:
            cur.execute("INSERT INTO meta VALUES ('telemetry_dropped', ?) ON CONFLICT(key) DO "
                        "UPDATE SET value = CAST(value AS INTEGER) + ?", (str(dropped), dropped))

    def pending(self, limit: int = 100) -> list[OutboxMessage]:
        rows = self.db.query("SELECT id, msg_id, kind, payload FROM outbox WHERE sent_at IS NULL "
                             "ORDER BY id LIMIT ?", (limit,))
        return [OutboxMessage(r["id"], r["msg_id"], r["kind"], json.loads(r["payload"]))
                for r in rows]

    def mark_sent(self, ids: list[int]) -> None:
        with self.db.transaction() as cur:
            cur.executemany("UPDATE outbox SET sent_at = ? WHERE id = ?",
                            [(time.time(), i) for i in ids])

    def recent(self, kind: str, since: float = 0.0) -> list[dict[str, Any]]:
        rows = self.db.query("SELECT model, version, start, end, payload FROM telemetry "
                             "WHERE kind = ? AND end >= ? ORDER BY id", (kind, since))
        return [{"model": r["model"], "version": r["version"], "start": r["start"],
                 "end": r["end"], "payload": json.loads(r["payload"])} for r in rows]

    def counts(self) -> dict[str, int]:
        out = {}
        for table in ("telemetry", "outbox"):
            out[table] = int(self.db.query(f"SELECT COUNT(*) FROM {table}")[0][0])
        out["outbox_unsent"] = int(self.db.query(
            "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")[0][0])
        dropped = self.db.query("SELECT value FROM meta WHERE key = 'telemetry_dropped'")
        out["dropped"] = int(dropped[0][0]) if dropped else 0
        return out
