"""Ed25519 keys and manifest signatures.

A private key is a PKCS#8 PEM file (mode 0600); a public key is a SubjectPublicKeyInfo PEM file.
A key id is the first 16 hex digits of the sha256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_runtime.errors import BadSignature, KeyFileError, PackageFormatError, UntrustedKey

ALGORITHM = "ed25519"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


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
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise KeyFileError(path, f"cannot read private key ({exc})") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(path, "not an Ed25519 private key")
        return cls(key)


class TrustStore:
    """The public keys a device accepts signatures from, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self._keys = {key_id(k): k for k in keys}

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> TrustStore:
        """Load public keys from files, or every ``*.pub`` file in a directory."""
        keys: list[Ed25519PublicKey] = []
        for p in map(Path, paths):
            files = sorted(p.glob("*.pub")) if p.is_dir() else [p]
            keys.extend(load_public_key(f) for f in files)
        return cls(keys)

    def verify(self, package: str | Path, message: bytes, signature: dict[str, Any]) -> str:
        """Return the signing key id, or raise a SignatureError subclass."""
        kid = signature.get("key_id")
        if signature.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise PackageFormatError(package, "signature.json is not an ed25519 signature record")
        public = self._keys.get(kid)
        if public is None:
            raise UntrustedKey(package, kid)
        try:
            public.verify(base64.b64decode(signature.get("sig", ""), validate=True), message)
        except (InvalidSignature, ValueError) as exc:
            raise BadSignature(package, kid) from exc
        return kid


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(path, f"cannot read public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(path, "not an Ed25519 public key")
    return key


def generate_keypair(
    directory: str | Path, name: str, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write NAME.key (0600) and NAME.pub into directory; refuse to overwrite unless asked."""
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
