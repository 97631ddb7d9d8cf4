"""Assignments (what each device should run) -> retained desired-state documents.

A document's generation grows only when its content changes, so a restarted manager recomputes
the same documents and tells no device anything new or different.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from edge_runtime.protocol import messages as m
from edge_runtime.store.db import Database
from fleet.registry import ModelRegistry, ModelVersion


class DesiredStates:
    def __init__(self, db: Database, registry: ModelRegistry, *,
                 artifact_url: str | None = None) -> None:
        self.db = db
        self.registry = registry
        self.artifact_url = artifact_url  # base URL for HTTP delivery (large models), optional
        # a published (name, version) never changes content, so lookups are cached
        self._versions: dict[tuple[str, str], ModelVersion] = {}
        # set by Experiments: the request-level experiment block of a device's model, if any
        self.extras: Callable[[str, str], dict[str, Any] | None] = lambda _d, _n: None

    @staticmethod
    def assign(cur: Any, devices: Iterable[str], name: str, version: str,
               deployment: str) -> None:
        now = time.time()
        cur.executemany(
            "INSERT INTO assignments VALUES (?, ?, ?, ?, ?) ON CONFLICT(device, name) DO UPDATE "
            "SET version = excluded.version, deployment = excluded.deployment, "
            "updated_at = excluded.updated_at",
            [(d, name, version, deployment, now) for d in devices])

    def _models(self, device: str) -> dict[str, Any]:
        rows = self.db.query("SELECT a.name, a.version, a.deployment, d.config FROM assignments a "
                             "LEFT JOIN deployments d ON d.id = a.deployment WHERE a.device = ? "
                             "ORDER BY a.name", (device,))
        models = {}
        for r in rows:
            mv = self._version(r["name"], r["version"])
            config = json.loads(r["config"]) if r["config"] else {}
            url = f"{self.artifact_url}/{mv.sha256}.edgepkg" if self.artifact_url else None
            target = m.ModelTarget(mv.version, r["deployment"], mv.artifact(url),
                                   m.Probation(**config.get("probation", {})))
            entry = json.loads(m.encode(target))
            entry.pop("schema_version", None)
            entry.pop("experiment", None)
            extra = self.extras(device, r["name"])
            if extra is not None:
                entry["experiment"] = extra
            models[r["name"]] = entry
        return models

    def _version(self, name: str, version: str) -> ModelVersion:
        key = (name, version)
        if key not in self._versions:
            self._versions[key] = self.registry.get(name, version)
        return self._versions[key]

    def recompute(self, devices: Iterable[str]) -> list[str]:
        """Refresh the documents of these devices; returns those whose content changed.

        The changed documents are written in one transaction (one fsync, not one per device),
        including those computed before a failure."""
        changed: list[tuple[str, int, str]] = []
        try:
            for device in devices:
                models = self._models(device)
                row = self.db.query("SELECT generation, doc FROM desired WHERE device = ?",
                                    (device,))
                if row and json.loads(row[0]["doc"])["models"] == models:
                    continue
                generation = (row[0]["generation"] if row else 0) + 1
                doc = {"schema_version": m.SCHEMA_VERSION, "generation": generation,
                       "models": models, "ts": time.time()}
                changed.append((device, generation, json.dumps(doc)))
        finally:
            if changed:
                with self.db.transaction() as cur:
                    cur.executemany("INSERT INTO desired VALUES (?, ?, ?, 0) ON CONFLICT(device) "
                                    "DO UPDATE SET generation = excluded.generation, "
                                    "doc = excluded.doc", changed)
        return [device for device, _g, _doc in changed]

    def unpublished(self, limit: int = 500) -> list[tuple[str, int, bytes]]:
        rows = self.db.query("SELECT device, generation, doc FROM desired "
                             "WHERE published_generation < generation LIMIT ?", (limit,))
        return [(r["device"], r["generation"], r["doc"].encode()) for r in rows]

    def mark_published(self, done: list[tuple[str, int]]) -> None:
        with self.db.transaction() as cur:
            cur.executemany("UPDATE desired SET published_generation = ? WHERE device = ? AND "
                            "generation = ?", [(g, d, g) for d, g in done])

    def assigned_devices(self, name: str) -> dict[str, str]:
        rows = self.db.query("SELECT device, version FROM assignments WHERE name = ?", (name,))
        return {r["device"]: r["version"] for r in rows}
