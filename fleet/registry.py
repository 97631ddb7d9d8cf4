"""The model registry: published packages (verified, chunk-hashed for MQTT delivery), versions,
aliases (production, staging, custom) and lineage from the manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.manifest import Manifest, validate_name
from edge_runtime.package import open_package, sha256_file
from edge_runtime.protocol.messages import Artifact
from edge_runtime.signing import TrustStore
from edge_runtime.store.db import Database
from fleet.errors import FleetError, UnknownModel

CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    sha256: str
    size: int
    chunk_size: int
    chunks: tuple[str, ...]
    path: Path
    manifest: Manifest
    signed_by: str | None
    published_at: float

    def artifact(self, url: str | None = None) -> Artifact:
        return Artifact(self.sha256, self.size, self.chunk_size, self.chunks, url)

    def lineage(self) -> dict[str, Any]:
        m = self.manifest
        return {"source": m.source, "precision": m.precision, "format": m.format,
                "converter": m.converter, "created_at": m.created_at}


def chunk_hashes(path: Path, chunk_size: int = CHUNK_SIZE) -> tuple[str, ...]:
    out = []
    with path.open("rb") as fh:
        while data := fh.read(chunk_size):
            out.append(hashlib.sha256(data).hexdigest())
    return tuple(out)


class ModelRegistry:
    def __init__(self, db: Database, artifacts: Path, trust: TrustStore, *,
                 allow_unsigned: bool = False) -> None:
        self.db = db
        self.artifacts = artifacts
        self.trust = trust
        self.allow_unsigned = allow_unsigned

    def publish(self, package: Path) -> ModelVersion:
        """Verify the package as a device would, keep a copy, and register the version."""
        pkg = open_package(package, self.trust, allow_unsigned=self.allow_unsigned)
        m = pkg.manifest
        sha = sha256_file(package)
        try:
            existing = self.get(m.name, m.version)
        except UnknownModel:
            existing = None
        if existing is not None:
            if existing.sha256 == sha:
                return existing
            raise FleetError(f"{m.name} {m.version} is already published with other content; "
                             "publish a new version")
        self.artifacts.mkdir(parents=True, exist_ok=True)
        dest = self.artifacts / f"{sha}.edgepkg"
        tmp = dest.with_suffix(".tmp")
        shutil.copyfile(package, tmp)
        tmp.replace(dest)
        chunks = chunk_hashes(dest)
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (m.name, m.version, sha, dest.stat().st_size, CHUNK_SIZE,
                         json.dumps(chunks), str(dest), json.dumps(m.to_dict()), pkg.signed_by,
                         time.time()))
        return self.get(m.name, m.version)

    def _row(self, row: Any) -> ModelVersion:
        return ModelVersion(row["name"], row["version"], row["sha256"], row["size"],
                            row["chunk_size"], tuple(json.loads(row["chunks"])),
                            Path(row["path"]), Manifest.from_dict(json.loads(row["manifest"])),
                            row["signed_by"], row["published_at"])

    def get(self, name: str, version: str) -> ModelVersion:
        rows = self.db.query("SELECT * FROM models WHERE name = ? AND version = ?",
                             (name, version))
        if not rows:
            raise UnknownModel(name, version)
        return self._row(rows[0])

    def resolve(self, name: str, version_or_alias: str) -> ModelVersion:
        """A version, or an alias of one (production, staging, ...)."""
        alias = self.db.query("SELECT version FROM aliases WHERE name = ? AND alias = ?",
                              (name, version_or_alias))
        return self.get(name, alias[0][0] if alias else version_or_alias)

    def by_sha(self, sha256: str) -> ModelVersion | None:
        rows = self.db.query("SELECT * FROM models WHERE sha256 = ?", (sha256,))
        return self._row(rows[0]) if rows else None

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        sql = "SELECT * FROM models" + (" WHERE name = ?" if name else "") + \
            " ORDER BY name, published_at"
        return [self._row(r) for r in self.db.query(sql, (name,) if name else ())]

    def aliases(self, name: str) -> dict[str, str]:
        rows = self.db.query("SELECT alias, version FROM aliases WHERE name = ?", (name,))
        return {r["alias"]: r["version"] for r in rows}

    def set_alias(self, name: str, alias: str, version: str) -> None:
        validate_name("alias", alias)
        self.get(name, version)
        with self.db.transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?)",
                        (name, alias, version, time.time()))
