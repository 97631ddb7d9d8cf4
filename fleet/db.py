"""The fleet manager's SQLite database (WAL): the single source of truth.

The admin CLI writes intents here (deployments, rollouts, commands); the running manager
reconciles them into retained desired states. Everything a restart needs is in these tables.
"""

from __future__ import annotations

from pathlib import Path

from edge_runtime.store.db import Database

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE devices(
        id TEXT PRIMARY KEY, status TEXT NOT NULL DEFAULT 'unknown',
        session INTEGER NOT NULL DEFAULT 0, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
        tags TEXT NOT NULL DEFAULT '[]', grp TEXT, profile TEXT, reported TEXT,
        reported_generation INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE models(
        name TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
        chunk_size INTEGER NOT NULL, chunks TEXT NOT NULL, path TEXT NOT NULL,
        manifest TEXT NOT NULL, signed_by TEXT, published_at REAL NOT NULL,
        PRIMARY KEY(name, version));
    CREATE INDEX models_sha ON models(sha256);
    CREATE TABLE aliases(
        name TEXT NOT NULL, alias TEXT NOT NULL, version TEXT NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY(name, alias));
    CREATE TABLE deployments(
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
        target TEXT NOT NULL, created_at REAL NOT NULL, config TEXT NOT NULL DEFAULT '{}');
    CREATE TABLE assignments(
        device TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, deployment TEXT NOT NULL,
        updated_at REAL NOT NULL, PRIMARY KEY(device, name));
    CREATE TABLE desired(
        device TEXT PRIMARY KEY, generation INTEGER NOT NULL, doc TEXT NOT NULL,
        published_generation INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE rollouts(
        id TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, from_version TEXT,
        target TEXT NOT NULL, config TEXT NOT NULL, state TEXT NOT NULL, step INTEGER NOT NULL,
        step_started REAL NOT NULL, paused_from TEXT, reason TEXT NOT NULL DEFAULT '',
        command TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
        history TEXT NOT NULL DEFAULT '[]');
    CREATE TABLE rollout_devices(
        rollout TEXT NOT NULL, device TEXT NOT NULL, step INTEGER NOT NULL, since REAL NOT NULL,
        PRIMARY KEY(rollout, device));
    CREATE TABLE device_state(
        device TEXT NOT NULL, name TEXT NOT NULL, version TEXT, deployment TEXT,
        state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', ts REAL NOT NULL,
        PRIMARY KEY(device, name));
    CREATE TABLE events(
        id INTEGER PRIMARY KEY AUTOINCREMENT, msg_id TEXT UNIQUE, device TEXT NOT NULL,
        deployment TEXT, name TEXT, version TEXT, state TEXT, reason TEXT, ts REAL NOT NULL);
    CREATE INDEX events_deployment ON events(deployment);
    CREATE TABLE seen(msg_id TEXT PRIMARY KEY, ts REAL NOT NULL);
    CREATE TABLE metrics(
        device TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, start REAL NOT NULL,
        end REAL NOT NULL, requests INTEGER NOT NULL, errors INTEGER NOT NULL,
        errors_by_kind TEXT NOT NULL, latency TEXT NOT NULL);
    CREATE INDEX metrics_model ON metrics(name, version, end);
    CREATE TABLE drift(
        device TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, start REAL NOT NULL,
        end REAL NOT NULL, snapshot TEXT NOT NULL);
    CREATE INDEX drift_model ON drift(name, version, end);
    """,
    """
    CREATE TABLE feedback(
        device TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, end REAL NOT NULL,
        n INTEGER NOT NULL, correct INTEGER NOT NULL);
    CREATE INDEX feedback_model ON feedback(name, version, end);
    CREATE TABLE alerts(
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, model TEXT, version TEXT,
        level TEXT NOT NULL, message TEXT NOT NULL, details TEXT NOT NULL, ts REAL NOT NULL);
    CREATE TABLE experiments(
        id TEXT PRIMARY KEY, name TEXT NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL,
        split REAL NOT NULL, unit TEXT NOT NULL, target TEXT NOT NULL, state TEXT NOT NULL,
        config TEXT NOT NULL, looks TEXT NOT NULL DEFAULT '{}', decision TEXT,
        created_at REAL NOT NULL, updated_at REAL NOT NULL);
    ALTER TABLE rollouts ADD COLUMN judge TEXT NOT NULL DEFAULT '{}';
    """,
)


def open_db(path: str | Path) -> Database:
    return Database(path, migrations=MIGRATIONS)
