"""Model package file: ``NAME-VERSION.edgepkg``, a zip of a signed manifest and what it hashes.

Members: ``manifest.json`` (canonical JSON), ``signature.json`` (optional, Ed25519 over the
canonical manifest), the model file, ``validation.json`` and ``reference_stats.json``. Every member
but the manifest and the signature is listed with its sha256 in ``manifest.files``; nothing else
is allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import IntegrityError, PackageFormatError, UnsignedPackage
from edge_runtime.manifest import Manifest, canonical_json, parse_json
from edge_runtime.signing import Signer, TrustStore, signature_bytes

MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
VALIDATION = "validation.json"
REFERENCE_STATS = "reference_stats.json"
SUFFIX = ".edgepkg"
_MAX_MEMBERS = 64
_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_package(
    out_dir: str | Path,
    manifest: Manifest,
    members: Mapping[str, bytes],
    *,
    signer: Signer | None,
) -> Path:
    """Write the package atomically (temp file in the same directory, fsync, rename)."""
    expected = {name: sha256_bytes(data) for name, data in members.items()}
    if expected != manifest.files:
        raise ValueError("manifest.files does not match the members given")
    _check_member_names(out_dir, list(members))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / manifest.package_name
    manifest_bytes = manifest.canonical_bytes()
    fd, tmp = tempfile.mkstemp(prefix=f".{manifest.package_name}.", suffix=".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(MANIFEST, manifest_bytes)
                if signer is not None:
                    zf.writestr(SIGNATURE, signature_bytes(signer.sign(manifest_bytes)))
                for name, data in members.items():
                    zf.writestr(name, data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a package is not a secret
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _check_member_names(path: str | Path, names: list[str]) -> None:
    for name in names:
        if not name or "/" in name or "\\" in name or name.startswith(".") or name in (
            MANIFEST, SIGNATURE
        ):
            raise PackageFormatError(path, f"member name {name!r} is not allowed")


@dataclass(frozen=True)
class Package:
    """A verified package on disk. Members are read lazily from the zip."""

    path: Path
    manifest: Manifest
    signed_by: str | None

    def read(self, member: str) -> bytes:
        if member not in self.manifest.files:
            raise PackageFormatError(self.path, f"no member {member!r}")
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(member)

    def read_json(self, member: str) -> Any:
        return json.loads(self.read(member))

    def extract(self, dest: str | Path) -> None:
        """Write the verified members and the manifest into dest (must not exist yet)."""
        dest = Path(dest)
        dest.mkdir(parents=True)
        with zipfile.ZipFile(self.path) as zf:
            for name in [MANIFEST, *self.manifest.files]:
                (dest / name).write_bytes(zf.read(name))
            if self.signed_by is not None:
                (dest / SIGNATURE).write_bytes(zf.read(SIGNATURE))


def open_package(
    path: str | Path, trust: TrustStore | None, *, allow_unsigned: bool = False
) -> Package:
    """Open and verify a package: member list, manifest schema, signature, every sha256.

    With ``allow_unsigned`` a package without a signature (or signed by an unknown key) is
    accepted; a signature by a trusted key that does not verify is still refused.
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise PackageFormatError(path, f"not a model package ({exc})") from exc
    with zf:
        names = zf.namelist()
        if MANIFEST not in names or len(names) > _MAX_MEMBERS:
            raise PackageFormatError(path, "not a model package (no manifest.json)")
        data = parse_json(zf.read(MANIFEST), f"{path}: manifest.json")
        signed_by = _check_signature(path, zf, data, trust, allow_unsigned=allow_unsigned)
        manifest = Manifest.from_dict(data, str(path))
        extra = set(names) - set(manifest.files) - {MANIFEST, SIGNATURE}
        if extra:
            raise PackageFormatError(path, f"members not listed in the manifest: {sorted(extra)}")
        for member, expected in manifest.files.items():
            if member not in names:
                raise PackageFormatError(path, f"member {member!r} listed but missing")
            actual = _zip_member_sha256(zf, member)
            if actual != expected:
                raise IntegrityError(path, member, expected, actual)
    return Package(path=path, manifest=manifest, signed_by=signed_by)


def _check_signature(
    path: Path,
    zf: zipfile.ZipFile,
    manifest_data: Any,
    trust: TrustStore | None,
    *,
    allow_unsigned: bool,
) -> str | None:
    if SIGNATURE not in zf.namelist():
        if allow_unsigned:
            return None
        raise UnsignedPackage(path)
    try:
        record = json.loads(zf.read(SIGNATURE))
        if not isinstance(record, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise PackageFormatError(path, f"signature.json is not valid JSON ({exc})") from exc
    trust = trust or TrustStore()
    if allow_unsigned and record.get("key_id") not in trust.key_ids:
        return None
    message = canonical_json(manifest_data)
    return trust.verify(path, message, record)


def _zip_member_sha256(zf: zipfile.ZipFile, member: str) -> str:
    digest = hashlib.sha256()
    with zf.open(member) as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
