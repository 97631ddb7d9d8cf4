"""Trusted keys are read without cryptography; signatures still verify through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge_runtime.errors import BadSignature, KeyFileError, UntrustedKey
from edge_runtime.signing import (
    Signer,
    TrustStore,
    generate_keypair,
    key_id,
    load_public_key,
    read_public_key,
)


def test_read_public_key_matches_cryptography(tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path, "k")
    public = Signer.load(priv).private.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert read_public_key(pub) == raw
    assert key_id(load_public_key(pub)) == key_id(public) == Signer.load(priv).key_id
    assert TrustStore.load([pub]).key_ids == TrustStore([public]).key_ids == [key_id(public)]


def test_trust_store_verifies_and_rejects(tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path, "k")
    other_priv, _ = generate_keypair(tmp_path, "o")
    trust = TrustStore.load([tmp_path])  # the directory: both *.pub files
    assert len(trust) == 2
    signer = Signer.load(priv)
    record = signer.sign(b"manifest")
    assert trust.verify("p", b"manifest", record) == signer.key_id
    with pytest.raises(BadSignature):
        trust.verify("p", b"tampered", record)
    only_k = TrustStore.load([pub])
    with pytest.raises(UntrustedKey):
        only_k.verify("p", b"manifest", Signer.load(other_priv).sign(b"manifest"))


@pytest.mark.parametrize("text, reason", [
    ("not a key at all\n", "not a PEM public key"),
    ("-----BEGIN PUBLIC KEY-----\n@@@@\n-----END PUBLIC KEY-----\n", "cannot read public key"),
    ("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n", "not a PEM public key"),
])
def test_bad_public_key_files(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.pub"
    path.write_text(text)
    with pytest.raises(KeyFileError, match=reason):
        read_public_key(path)


def test_other_key_types_are_refused(tmp_path: Path) -> None:
    priv, _ = generate_keypair(tmp_path, "k")
    ec_pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "ec.pub").write_bytes(ec_pub)
    with pytest.raises(KeyFileError, match="not an Ed25519 public key"):
        read_public_key(tmp_path / "ec.pub")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        read_public_key(priv)  # a private key file is not a public key
    with pytest.raises(KeyFileError, match="cannot read public key"):
        read_public_key(tmp_path / "missing.pub")


def test_loading_trust_does_not_import_cryptography(tmp_path: Path) -> None:
    _, pub = generate_keypair(tmp_path, "k")
    code = ("import sys; from edge_runtime.signing import TrustStore; "
            f"t = TrustStore.load([{str(pub)!r}]); "
            "print(len(t), any(m.startswith('cryptography') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False"]
