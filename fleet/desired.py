"""Assignments (what each device should run) -> retained desired-state documents.

A document's generation grows only when its content changes, so a restarted manager recomputes
the same documents and tells no device anything new or different. Each document names its fleet
and device and is published sealed (``edge_runtime.protocol.signed``): signed with the fleet
key when the manager has one, which is what devices require.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edge_runtime.protocol import messages as m
from edge_runtime.protocol.signed import seal
from edge_runtime.signing import Signer
from edge_runtime.store.db import Database
from fleet.registry import ModelRegistry, ModelVersion

log = logging.getLogger("fleet.desired")


class DesiredStates:
    def __init__(self, db: Database, registry: ModelRegistry, *,
                 artifact_url: str | None = None, fleet: str = "default",
                 signing_key: Path | None = None) -> None:
        self.db = db
        self.registry = registry
        self.artifact_url = artifact_url  # base URL for HTTP delivery (large models), optional
        self.fleet = fleet
        # loaded now: a key that cannot be read stops the manager at start, not on a tick
        self.signer = Signer.load(signing_key) if signing_key is not None else None
        self._warned_unsigned = False
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
                generation = (row[0]["generation"] if row else self._reported(device)) + 1
                doc = {"schema_version": m.SCHEMA_VERSION, "fleet": self.fleet,
                       "device": device, "generation": generation, "models": models,
                       "ts": time.time()}
                changed.append((device, generation, json.dumps(doc)))
        finally:
            if changed:
                with self.db.transaction() as cur:
                    cur.executemany("INSERT INTO desired VALUES (?, ?, ?, 0) ON CONFLICT(device) "
                                    "DO UPDATE SET generation = excluded.generation, "
                                    "doc = excluded.doc", changed)
        return [device for device, _g, _doc in changed]

    def _reported(self, device: str) -> int:
        """A device's first document from this database starts above the generation the device
        reports: it refuses anything older than what it last accepted (a manager that lost its
        database would otherwise never reach it again)."""
        rows = self.db.query("SELECT reported_generation FROM devices WHERE id = ?", (device,))
        # capped: what a device reports is its own word, and must not overflow SQLite's integers
        return min(int(rows[0][0]), 2**62) if rows else 0

    def unpublished(self, limit: int = 500) -> list[tuple[str, int, bytes]]:
        """(device, generation, sealed envelope) of documents not yet published."""
        rows = self.db.query("SELECT device, generation, doc FROM desired "
                             "WHERE published_generation < generation LIMIT ?", (limit,))
        if rows and self.signer is None and not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning("no signing key: desired states go out unsigned, and devices refuse "
                        "them unless they run with allow_unsigned_desired (development only)")
        return [(r["device"], r["generation"], self._seal(r["device"], r["doc"])) for r in rows]

    def _seal(self, device: str, text: str) -> bytes:
        doc = json.loads(text)
        # the topic's fleet and device, also for rows written before documents named them
        doc["fleet"], doc["device"] = self.fleet, device
        return seal(doc, self.signer)

    def mark_published(self, done: list[tuple[str, int]]) -> None:
        with self.db.transaction() as cur:
            cur.executemany("UPDATE desired SET published_generation = ? WHERE device = ? AND "
                            "generation = ?", [(g, d, g) for d, g in done])

    def assigned_devices(self, name: str) -> dict[str, str]:
        rows = self.db.query("SELECT device, version FROM assignments WHERE name = ?", (name,))
        return {r["device"]: r["version"] for r in rows}
