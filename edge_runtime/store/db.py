"""The device's SQLite database (WAL): one file per store, schema migrations, one lock.

Writes are rare (swaps, one telemetry flush per interval), so a single connection guarded by a
lock is enough; ``synchronous=FULL`` because a swap record must survive a power cut.
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
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
