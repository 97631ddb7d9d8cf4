"""Assignments (what each device should run) -> retained desired-state documents.

A document's generation grows only when its content changes, so a restarted manager recomputes
the same documents and tells no device anything new or different.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from edge_runtime.protocol import messages as m
from edge_runtime.store.db import Database
from fleet.registry import ModelRegistry


class DesiredStates:
    def __init__(self, db: Database, registry: ModelRegistry, *,
                 artifact_url: str | None = None) -> None:
        self.db = db
        self.registry = registry
        self.artifact_url = artifact_url  # base URL for HTTP delivery (large models), optional

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
            mv = self.registry.get(r["name"], r["version"])
            config = json.loads(r["config"]) if r["config"] else {}
            url = f"{self.artifact_url}/{mv.sha256}.edgepkg" if self.artifact_url else None
            target = m.ModelTarget(mv.version, r["deployment"], mv.artifact(url),
                                   m.Probation(**config.get("probation", {})))
            models[r["name"]] = json.loads(m.encode(target))
            models[r["name"]].pop("schema_version", None)
        return models

    def recompute(self, devices: Iterable[str]) -> list[str]:
        """Refresh the documents of these devices; returns those whose content changed."""
        changed = []
        for device in devices:
            models = self._models(device)
            row = self.db.query("SELECT generation, doc FROM desired WHERE device = ?", (device,))
            if row and json.loads(row[0]["doc"])["models"] == models:
                continue
            generation = (row[0]["generation"] if row else 0) + 1
            doc = {"schema_version": m.SCHEMA_VERSION, "generation": generation,
                   "models": models, "ts": time.time()}
            with self.db.transaction() as cur:
                cur.execute("INSERT INTO desired VALUES (?, ?, ?, 0) ON CONFLICT(device) DO "
                            "UPDATE SET generation = excluded.generation, doc = excluded.doc",
                            (device, generation, json.dumps(doc)))
            changed.append(device)
        return changed

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
