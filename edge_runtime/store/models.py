"""Installed model versions on disk (``STORE/NAME/VERSION/``) and the active pointers in SQLite."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.errors import IntegrityError, ModelNotFound, PackageError, SwapError
from edge_runtime.manifest import Manifest
from edge_runtime.package import MANIFEST, Package, open_package, sha256_file
from edge_runtime.pkgzip import DEFAULT_LIMITS, PackageLimits
from edge_runtime.signing import TrustStore
from edge_runtime.store.db import Database

DB_FILE = "store.db"


@dataclass(frozen=True)
class InstalledModel:
    name: str
    version: str
    path: Path
    manifest: Manifest
    signed_by: str | None
    installed_at: float

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file


@dataclass(frozen=True)
class ActiveRef:
    name: str
    version: str
    previous: str | None


class ModelStore:
    """What is installed and what is active. Unpacking never touches the serving version."""

    def __init__(self, root: str | Path, *, trust: TrustStore | None = None,
                 allow_unsigned: bool = False, limits: PackageLimits = DEFAULT_LIMITS) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = Database(self.root / DB_FILE)
        self.trust = trust or TrustStore()
        self.allow_unsigned = allow_unsigned
        self.limits = limits

    def verify(self, package: str | Path) -> Package:
        return open_package(package, self.trust, allow_unsigned=self.allow_unsigned,
                            limits=self.limits)

    def version_dir(self, name: str, version: str) -> Path:
        return self.root / "models" / name / version

    def unpack(self, pkg: Package) -> Path:
        """Extract into a staging dir and rename it into place (idempotent after a crash)."""
        m = pkg.manifest
        dest = self.version_dir(m.name, m.version)
        if dest.exists():
            if self._same_manifest(dest, m):
                return dest
            raise SwapError(m.name, m.version, "a different package with this version is "
                            "already installed")
        staging = dest.parent / f".staging-{m.version}-{uuid.uuid4().hex[:8]}"
        try:
            pkg.extract(staging)
            staging.rename(dest)
        except (OSError, PackageError) as exc:  # disk full, package gone or changed
            shutil.rmtree(staging, ignore_errors=True)
            raise SwapError(m.name, m.version, f"cannot unpack {pkg.path} ({exc})") from exc
        return dest

    def clean_staging(self, name: str) -> None:
        for stale in (self.root / "models" / name).glob(".staging-*"):
            shutil.rmtree(stale, ignore_errors=True)

    @staticmethod
    def _same_manifest(dest: Path, manifest: Manifest) -> bool:
        try:
            return Manifest.from_bytes((dest / MANIFEST).read_bytes()) == manifest
        except (OSError, ValueError):
            return False

    def register(self, pkg: Package, path: Path) -> InstalledModel:
        m = pkg.manifest
        now = time.time()
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?)",
                (m.name, m.version, str(path), json.dumps(m.to_dict()), pkg.signed_by, now),
            )
        return InstalledModel(m.name, m.version, path, m, pkg.signed_by, now)

    def installed(self, name: str | None = None) -> list[InstalledModel]:
        sql = "SELECT * FROM models" + (" WHERE name = ?" if name else "")
        rows = self.db.query(sql + " ORDER BY name, installed_at", (name,) if name else ())
        return [
            InstalledModel(r["name"], r["version"], Path(r["path"]),
                           Manifest.from_dict(json.loads(r["manifest"])), r["signed_by"],
                           r["installed_at"])
            for r in rows
        ]

    def get(self, name: str, version: str) -> InstalledModel:
        found = [m for m in self.installed(name) if m.version == version]
        if not found:
            raise ModelNotFound(name, version)
        return found[0]

    def check_files(self, model: InstalledModel) -> None:
        """Re-hash the unpacked files before loading: the disk may have changed since install."""
        for member, expected in model.manifest.files.items():
            actual = sha256_file(model.path / member)
            if actual != expected:
                raise IntegrityError(model.path, member, expected, actual)

    def active(self, name: str) -> ActiveRef | None:
        rows = self.db.query("SELECT * FROM active WHERE name = ?", (name,))
        return ActiveRef(rows[0]["name"], rows[0]["version"], rows[0]["previous"]) if rows else None

    def actives(self) -> list[ActiveRef]:
        rows = self.db.query("SELECT * FROM active ORDER BY name")
        return [ActiveRef(r["name"], r["version"], r["previous"]) for r in rows]

    def set_active(self, name: str, version: str, previous: str | None) -> None:
        with self.db.transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO active VALUES (?, ?, ?, ?)",
                        (name, version, previous, time.time()))

    def clear_active(self, name: str) -> None:
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM active WHERE name = ?", (name,))

    def remove(self, name: str, version: str) -> None:
        ref = self.active(name)
        if ref is not None and version in (ref.version, ref.previous):
            raise SwapError(name, version, "is active or the rollback target; not removed")
        self.get(name, version)
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM models WHERE name = ? AND version = ?", (name, version))
        shutil.rmtree(self.version_dir(name, version), ignore_errors=True)
