"""Persist swap records in the store's SQLite database."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from edge_runtime.store.db import Database
from edge_runtime.swap.machine import TERMINAL, State, SwapRecord

_COLUMNS = ("name", "version", "kind", "state", "previous", "target", "reason", "attempts",
            "package", "deployment", "history")


def save(db: Database, record: SwapRecord) -> SwapRecord:
    """Insert or update; returns the record with its id. Durable when this returns."""
    values: list[Any] = [record.name, record.version, record.kind, record.state.value,
                         record.previous, record.target, record.reason, record.attempts,
                         record.package, record.deployment, json.dumps(list(record.history))]
    now = time.time()
    with db.transaction() as cur:
        if record.id is None:
            cur.execute(
                f"INSERT INTO swaps ({', '.join(_COLUMNS)}, created_at, updated_at) "
                f"VALUES ({', '.join('?' * (len(_COLUMNS) + 2))})", (*values, now, now))
            return replace(record, id=cur.lastrowid)
        cur.execute(
            f"UPDATE swaps SET {', '.join(f'{c} = ?' for c in _COLUMNS)}, updated_at = ? "
            "WHERE id = ?", (*values, now, record.id))
    return record


def _from_row(row: Any) -> SwapRecord:
    return SwapRecord(
        kind=row["kind"], name=row["name"], version=row["version"], state=State(row["state"]),
        previous=row["previous"], target=row["target"], reason=row["reason"],
        attempts=row["attempts"], package=row["package"], deployment=row["deployment"],
        history=tuple(json.loads(row["history"])), id=row["id"],
    )


def unfinished(db: Database) -> list[SwapRecord]:
    done = tuple(s.value for s in TERMINAL)
    # a deploy that reached INSTALLED still has its activation ahead of it
    rows = db.query(f"SELECT * FROM swaps WHERE state NOT IN ({', '.join('?' * len(done))}) "
                    "OR (kind = 'deploy' AND state = 'installed') ORDER BY id", done)
    return [_from_row(r) for r in rows]


def recent(db: Database, name: str | None = None, limit: int = 20) -> list[SwapRecord]:
    where = " WHERE name = ?" if name else ""
    rows = db.query(f"SELECT * FROM swaps{where} ORDER BY id DESC LIMIT ?",
                    ((name, limit) if name else (limit,)))
    return [_from_row(r) for r in rows]
