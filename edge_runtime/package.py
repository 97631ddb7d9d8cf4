"""Model package file: ``NAME-VERSION.edgepkg``, a zip of a signed manifest and what it hashes.

Members: ``manifest.json`` (canonical JSON), ``signature.json`` (optional, Ed25519 over exactly
the stored manifest bytes), the model file, ``validation.json`` and ``reference_stats.json``.
Every member but the manifest and the signature is listed with its sha256 in
``manifest.files``; nothing else is allowed. Sizes are checked before reading (``pkgzip``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import (
    IntegrityError,
    ManifestInvalid,
    PackageFormatError,
    UnsignedPackage,
)
from edge_runtime.manifest import RESERVED_NAMES, Manifest, file_name_problem, parse_json
from edge_runtime.pkgzip import DEFAULT_LIMITS, PackageLimits, iter_member, open_zip, read_member
from edge_runtime.signing import Signer, TrustStore, signature_bytes

MANIFEST, SIGNATURE = RESERVED_NAMES  # named with the manifest schema, which refuses them
VALIDATION = "validation.json"
REFERENCE_STATS = "reference_stats.json"
SUFFIX = ".edgepkg"
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
        problem = "is reserved" if name in RESERVED_NAMES else file_name_problem(name)
        if problem is not None:
            raise PackageFormatError(path, f"member name {name!r} {problem}")


@dataclass(frozen=True)
class Package:
    """A verified package on disk. Members are read lazily from the zip, within the limits."""

    path: Path
    manifest: Manifest
    signed_by: str | None
    limits: PackageLimits = DEFAULT_LIMITS

    def read(self, member: str) -> bytes:
        if member not in self.manifest.files:
            raise PackageFormatError(self.path, f"no member {member!r}")
        with open_zip(self.path, self.limits) as zf:
            return read_member(self.path, zf, member, self.limits.max_package_bytes)

    def read_json(self, member: str) -> Any:
        try:
            return json.loads(self.read(member))
        except (ValueError, RecursionError) as exc:
            raise PackageFormatError(self.path, f"{member} is not valid JSON ({exc})") from exc

    def extract(self, dest: str | Path) -> None:
        """Write the members and the manifest into dest (must not exist yet), re-hashing them.

        The zip is read again, so a package file changed since verification is caught here.
        """
        for name in self.manifest.files:  # checked already, unless this Package is hand-made
            problem = file_name_problem(name)
            if problem is not None:
                raise PackageFormatError(self.path, f"member name {name!r} {problem}")
        dest = Path(dest)
        dest.mkdir(parents=True)
        meta, cap = self.limits.max_metadata_bytes, self.limits.max_package_bytes
        with open_zip(self.path, self.limits) as zf:
            raw = read_member(self.path, zf, MANIFEST, meta)
            if Manifest.from_bytes(raw, str(self.path)) != self.manifest:
                raise PackageFormatError(self.path, "manifest.json changed since verification")
            _write_new(dest / MANIFEST, [raw])
            if self.signed_by is not None:
                _write_new(dest / SIGNATURE, [read_member(self.path, zf, SIGNATURE, meta)])
            for name, expected in self.manifest.files.items():
                actual = _write_new(dest / name, iter_member(self.path, zf, name, cap))
                if actual != expected:
                    raise IntegrityError(self.path, name, expected, actual)


def _write_new(path: Path, chunks: Iterable[bytes]) -> str:
    """Create ``path`` (never an existing file or a symlink) from chunks; return its sha256."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as fh:
        for chunk in chunks:
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()


def read_manifest(path: str | Path, *, limits: PackageLimits = DEFAULT_LIMITS) -> Manifest:
    """The manifest alone, unverified (to name a swap before it is verified), within limits."""
    path = Path(path)
    with open_zip(path, limits) as zf:
        if MANIFEST not in zf.namelist():
            raise PackageFormatError(path, "not a model package (no manifest.json)")
        raw = read_member(path, zf, MANIFEST, limits.max_metadata_bytes)
    return Manifest.from_bytes(raw, str(path))


def open_package(
    path: str | Path, trust: TrustStore | None, *, allow_unsigned: bool = False,
    limits: PackageLimits = DEFAULT_LIMITS,
) -> Package:
    """Open and verify a package: zip directory, member names, manifest schema, signature over
    the stored manifest bytes, every sha256.

    With ``allow_unsigned`` a package without a signature (or signed by an unknown key) is
    accepted; a signature by a trusted key that does not verify is still refused. Names and
    sizes are checked either way.
    """
    path = Path(path)
    with open_zip(path, limits) as zf:
        names = zf.namelist()
        if MANIFEST not in names:
            raise PackageFormatError(path, "not a model package (no manifest.json)")
        raw = read_member(path, zf, MANIFEST, limits.max_metadata_bytes)
        data = parse_json(raw, f"{path}: manifest.json")
        signed_by = _check_signature(path, zf, raw, trust, allow_unsigned=allow_unsigned,
                                     cap=limits.max_metadata_bytes)
        manifest = Manifest.from_dict(data, str(path))
        extra = set(names) - set(manifest.files) - {MANIFEST, SIGNATURE}
        if extra:
            raise PackageFormatError(path, f"members not listed in the manifest: {sorted(extra)}")
        for member, expected in manifest.files.items():
            if member not in names:
                raise PackageFormatError(path, f"member {member!r} listed but missing")
            actual = _member_sha256(path, zf, member, limits.max_package_bytes)
            if actual != expected:
                raise IntegrityError(path, member, expected, actual)
    return Package(path=path, manifest=manifest, signed_by=signed_by, limits=limits)


def _check_signature(
    path: Path,
    zf: zipfile.ZipFile,
    manifest_bytes: bytes,
    trust: TrustStore | None,
    *,
    allow_unsigned: bool,
    cap: int,
) -> str | None:
    if SIGNATURE not in zf.namelist():
        if allow_unsigned:
            return None
        raise UnsignedPackage(path)
    raw = read_member(path, zf, SIGNATURE, cap)
    try:
        record = parse_json(raw, SIGNATURE)
    except ManifestInvalid as exc:
        raise PackageFormatError(path, f"signature.json is not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise PackageFormatError(path, "signature.json is not valid JSON (not an object)")
    trust = trust or TrustStore()
    if allow_unsigned and record.get("key_id") not in trust.key_ids:
        return None
    # The signature covers the stored bytes: padding or re-serialising the manifest breaks it.
    return trust.verify(path, manifest_bytes, record)


def _member_sha256(path: Path, zf: zipfile.ZipFile, member: str, cap: int) -> str:
    digest = hashlib.sha256()
    for chunk in iter_member(path, zf, member, cap):
        digest.update(chunk)
    return digest.hexdigest()
