"""Ed25519 keys and manifest signatures.

A private key is a PKCS#8 PEM file (mode 0600); a public key is a SubjectPublicKeyInfo PEM file.
A key id is the first 16 hex digits of the sha256 of the raw 32-byte public key.

``cryptography`` is imported only to sign, to verify or to make keys: a serving daemon whose
packages are already installed never loads it (its libraries are ~11 MB of resident memory).
Trusted public keys are read without it: an Ed25519 SubjectPublicKeyInfo is a fixed 12-byte DER
prefix followed by the raw key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import BadSignature, KeyFileError, PackageFormatError, UntrustedKey

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

ALGORITHM = "ed25519"
# DER of SubjectPublicKeyInfo{AlgorithmIdentifier{1.3.101.112}, BIT STRING(32 bytes)} up to the key
_SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")
_PEM_PUBLIC = ("-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----")


def _raw_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def _raw_public(public: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return _raw_id(_raw_public(public))


@dataclass(frozen=True)
class Signer:
    private: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id(self.private.public_key())

    def sign(self, message: bytes) -> dict[str, str]:
        sig = self.private.sign(message)
        return {"alg": ALGORITHM, "key_id": self.key_id, "sig": base64.b64encode(sig).decode()}

    @classmethod
    def load(cls, path: str | Path) -> Signer:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise KeyFileError(path, f"cannot read private key ({exc})") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(path, "not an Ed25519 private key")
        return cls(key)


class TrustStore:
    """The public keys a device accepts signatures from, by key id (raw 32-byte keys)."""

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self._keys = {_raw_id(raw): raw for raw in map(_raw_public, keys)}

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> TrustStore:
        """Load public keys from files, or every ``*.pub`` file in a directory."""
        store = cls()
        for p in map(Path, paths):
            for f in sorted(p.glob("*.pub")) if p.is_dir() else [p]:
                raw = read_public_key(f)
                store._keys[_raw_id(raw)] = raw
        return store

    def verify(self, package: str | Path, message: bytes, signature: dict[str, Any]) -> str:
        """Return the signing key id, or raise a SignatureError subclass."""
        kid = signature.get("key_id")
        if signature.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise PackageFormatError(package, "signature.json is not an ed25519 signature record")
        raw = self._keys.get(kid)
        if raw is None:
            raise UntrustedKey(package, kid)
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        encoded = signature.get("sig")
        if not isinstance(encoded, str):
            raise BadSignature(package, kid)
        try:
            sig = base64.b64decode(encoded, validate=True)
            Ed25519PublicKey.from_public_bytes(raw).verify(sig, message)
        except (InvalidSignature, ValueError) as exc:
            raise BadSignature(package, kid) from exc
        return kid


def read_public_key(path: str | Path) -> bytes:
    """The raw 32 bytes of an Ed25519 public key PEM file (no ``cryptography`` import)."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, ValueError) as exc:
        raise KeyFileError(path, f"cannot read public key ({exc})") from exc
    begin, end = _PEM_PUBLIC
    head, found, rest = text.partition(begin)
    body, closed, _ = rest.partition(end)
    if not found or not closed or head.strip():
        raise KeyFileError(path, "cannot read public key (not a PEM public key)")
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except ValueError as exc:
        raise KeyFileError(path, f"cannot read public key ({exc})") from exc
    if len(der) != len(_SPKI_ED25519) + 32 or not der.startswith(_SPKI_ED25519):
        raise KeyFileError(path, "not an Ed25519 public key")
    return der[len(_SPKI_ED25519):]


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(read_public_key(path))


def generate_keypair(
    directory: str | Path, name: str, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write NAME.key (0600) and NAME.pub into directory; refuse to overwrite unless asked."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    if not overwrite and (priv_path.exists() or pub_path.exists()):
        raise KeyFileError(priv_path, "key already exists (pass --force to replace it)")
    private = Ed25519PrivateKey.generate()
    priv_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(priv_pem)
    pub_path.write_bytes(pub_pem)
    return priv_path, pub_path


def signature_bytes(record: dict[str, str]) -> bytes:
    return json.dumps(record, sort_keys=True, indent=2).encode()
