"""The device's SQLite database (WAL): one file per store, schema migrations, one lock.

Writes are rare (swaps, one telemetry flush per interval), so a single connection guarded by a
lock is enough; ``synchronous=FULL`` because a swap record must survive a power cut (telemetry
flushes commit without an fsync: ``transaction(durable=False)``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE models(
        name TEXT NOT NULL, version TEXT NOT NULL, path TEXT NOT NULL, manifest TEXT NOT NULL,
        signed_by TEXT, installed_at REAL NOT NULL, PRIMARY KEY(name, version));
    CREATE TABLE active(
        name TEXT PRIMARY KEY, version TEXT NOT NULL, previous TEXT, updated_at REAL NOT NULL);
    CREATE TABLE swaps(
        id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, version TEXT, kind TEXT NOT NULL,
        state TEXT NOT NULL, previous TEXT, target TEXT, reason TEXT NOT NULL DEFAULT '',
        attempts INTEGER NOT NULL DEFAULT 0, package TEXT, deployment TEXT,
        history TEXT NOT NULL DEFAULT '[]', created_at REAL NOT NULL, updated_at REAL NOT NULL);
    CREATE INDEX swaps_open ON swaps(state);
    CREATE TABLE telemetry(
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, model TEXT, version TEXT,
        start REAL NOT NULL, end REAL NOT NULL, payload TEXT NOT NULL, bytes INTEGER NOT NULL);
    CREATE INDEX telemetry_end ON telemetry(end);
    CREATE TABLE outbox(
        id INTEGER PRIMARY KEY AUTOINCREMENT, msg_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
        payload TEXT NOT NULL, bytes INTEGER NOT NULL, created_at REAL NOT NULL, sent_at REAL);
    CREATE INDEX outbox_unsent ON outbox(sent_at, id);
    """,
    # One row per report (SD-card wear: a flush used to write each payload twice, into
    # telemetry and outbox, and touch five indexes and sqlite_sequence). `outbox` now holds every
    # message, kept after sending as the local history; `telemetry` is a view of its rows.
    # Rows are ordered by `end`, so the oldest come first in id order (what pruning reads).
    """
    ALTER TABLE outbox RENAME TO outbox_v1;
    ALTER TABLE telemetry RENAME TO telemetry_v1;
    CREATE TABLE outbox(
        id INTEGER PRIMARY KEY, msg_id TEXT NOT NULL, kind TEXT NOT NULL, model TEXT,
        version TEXT, start REAL NOT NULL, end REAL NOT NULL, payload TEXT NOT NULL,
        bytes INTEGER NOT NULL, whole INTEGER NOT NULL, sent_at REAL);
    CREATE INDEX outbox_v1_key ON outbox_v1(kind, json_extract(payload, '$.end'));
    INSERT INTO outbox (msg_id, kind, model, version, start, end, payload, bytes, whole, sent_at)
    SELECT * FROM (
        SELECT msg_id, kind, NULL, NULL, created_at, created_at, payload, bytes, 1, sent_at
            FROM outbox_v1 WHERE kind = 'event'
        UNION ALL
        SELECT msg_id, kind, json_extract(payload, '$.model'), json_extract(payload, '$.version'),
               COALESCE(json_extract(payload, '$.start'), created_at),
               COALESCE(json_extract(payload, '$.end'), created_at),
               COALESCE(json_extract(payload, '$.payload'), '{}'),
               length(COALESCE(json_extract(payload, '$.payload'), '{}')), 0, sent_at
            FROM outbox_v1 WHERE kind != 'event'
        UNION ALL
        SELECT lower(hex(randomblob(16))), kind, model, version, start, end, payload, bytes, 0,
               end
            FROM telemetry_v1 AS t WHERE NOT EXISTS (
                SELECT 1 FROM outbox_v1 AS o WHERE o.kind = t.kind
                AND json_extract(o.payload, '$.end') = t.end
                AND json_extract(o.payload, '$.start') = t.start
                AND json_extract(o.payload, '$.model') IS t.model
                AND json_extract(o.payload, '$.version') IS t.version))
    ORDER BY 6;
    DROP TABLE outbox_v1;
    DROP TABLE telemetry_v1;
    CREATE VIEW telemetry AS SELECT id, kind, model, version, start, end, payload, bytes
        FROM outbox WHERE whole = 0;
    """,
)


class Database:
    def __init__(self, path: str | Path, *, migrations: tuple[str, ...] = MIGRATIONS) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                     timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._migrate(migrations)

    def _migrate(self, migrations: tuple[str, ...]) -> None:
        with self.transaction() as cur:
            version = cur.execute("PRAGMA user_version").fetchone()[0]
            for i, script in enumerate(migrations[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    cur.execute(statement)
                cur.execute(f"PRAGMA user_version = {i}")

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception.

        ``durable=False`` commits without an fsync (``synchronous=NORMAL``): a power cut may
        take the transaction back, never corrupt the database, and the next durable commit or
        checkpoint syncs it. For telemetry: an unsynced WAL page still dirty in the page cache
        takes the next commit's frames without another write to the card.
        """
        with self._lock:
            cur = self._conn.cursor()
            if not durable:
                cur.execute("PRAGMA synchronous=NORMAL")
            try:
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            finally:
                if not durable:
                    cur.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Cursor]:
        """A cursor for several reads that no write of this process comes between."""
        with self._lock:
            yield self._conn.cursor()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
