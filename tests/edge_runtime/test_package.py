from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from edge_runtime.errors import (
    BadSignature,
    IntegrityError,
    ManifestInvalid,
    PackageFormatError,
    UnsignedPackage,
    UntrustedKey,
)
from edge_runtime.manifest import Manifest, TensorSpec
from edge_runtime.package import (
    MANIFEST,
    SIGNATURE,
    open_package,
    sha256_bytes,
    write_package,
)
from edge_runtime.signing import Signer, TrustStore
from tests.conftest import Keys

MEMBERS = {"model.onnx": b"\x08\x07fake-model-bytes", "validation.json": b"{}",
           "reference_stats.json": b"{}"}


def manifest(**changes: object) -> Manifest:
    base = Manifest(
        name="digits", version="3", format="onnx", precision="int8-static",
        model_file="model.onnx",
        inputs=(TensorSpec("input", "float32", ("batch", 64)),),
        outputs=(TensorSpec("probabilities", "float32", ("batch", 10)),),
        files={k: sha256_bytes(v) for k, v in MEMBERS.items()},
        source={"kind": "onnx", "sha256": "0" * 64}, converter={"name": "edge-runtime"},
        created_at="2026-11-25T00:00:00+00:00", task="classification",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def write(tmp_path: Path, signer: Signer | None) -> Path:
    return write_package(tmp_path, manifest(), MEMBERS, signer=signer)


def rewrite(path: Path, changes: dict[str, bytes], drop: tuple[str, ...] = ()) -> None:
    """Rewrite some members of a package in place (what an attacker or a bad disk does)."""
    with zipfile.ZipFile(path) as zf:
        content = {n: zf.read(n) for n in zf.namelist()}
    content.update(changes)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in content.items():
            if name not in drop:
                zf.writestr(name, data)


def test_round_trip_signed(tmp_path: Path, keys: Keys) -> None:
    path = write(tmp_path, keys.signer)
    assert path.name == "digits-3.edgepkg"
    pkg = open_package(path, keys.trust)
    assert pkg.signed_by == keys.signer.key_id
    assert pkg.manifest == manifest()
    assert pkg.read("model.onnx") == MEMBERS["model.onnx"]
    pkg.extract(tmp_path / "x")
    assert (tmp_path / "x" / "model.onnx").read_bytes() == MEMBERS["model.onnx"]
    assert json.loads((tmp_path / "x" / MANIFEST).read_bytes())["name"] == "digits"


def test_unsigned_refused_unless_allowed(tmp_path: Path, keys: Keys) -> None:
    path = write(tmp_path, None)
    with pytest.raises(UnsignedPackage, match="not signed"):
        open_package(path, keys.trust)
    assert open_package(path, keys.trust, allow_unsigned=True).signed_by is None


def test_untrusted_key_refused(tmp_path: Path, keys: Keys, other_keys: Keys) -> None:
    path = write(tmp_path, other_keys.signer)
    with pytest.raises(UntrustedKey) as info:
        open_package(path, keys.trust)
    assert info.value.key_id == other_keys.signer.key_id
    with pytest.raises(UntrustedKey):
        open_package(path, TrustStore())


def test_tampered_model_file_refused(tmp_path: Path, keys: Keys) -> None:
    path = write(tmp_path, keys.signer)
    rewrite(path, {"model.onnx": b"evil"})
    with pytest.raises(IntegrityError) as info:
        open_package(path, keys.trust)
    assert info.value.member == "model.onnx"
    # --allow-unsigned never skips the checksums
    with pytest.raises(IntegrityError):
        open_package(path, keys.trust, allow_unsigned=True)


def test_tampered_manifest_refused(tmp_path: Path, keys: Keys) -> None:
    path = write(tmp_path, keys.signer)
    evil = b"evil-model"
    data = manifest().to_dict()
    data["files"]["model.onnx"] = sha256_bytes(evil)  # a consistent hash for the new model
    rewrite(path, {MANIFEST: json.dumps(data).encode(), "model.onnx": evil})
    with pytest.raises(BadSignature, match="tampered"):
        open_package(path, keys.trust)
    # a trusted key's signature that fails is refused even in development mode
    with pytest.raises(BadSignature):
        open_package(path, keys.trust, allow_unsigned=True)


def test_signature_stripped_is_unsigned(tmp_path: Path, keys: Keys) -> None:
    path = write(tmp_path, keys.signer)
    rewrite(path, {}, drop=(SIGNATURE,))
    with pytest.raises(UnsignedPackage):
        open_package(path, keys.trust)


def test_garbage_signature_record(tmp_path: Path, keys: Keys) -> None:
    path = write(tmp_path, keys.signer)
    rewrite(path, {SIGNATURE: b"[1, 2]"})
    with pytest.raises(PackageFormatError, match="signature"):
        open_package(path, keys.trust)


def test_not_a_package(tmp_path: Path, keys: Keys) -> None:
    bogus = tmp_path / "x.edgepkg"
    bogus.write_bytes(b"hello")
    with pytest.raises(PackageFormatError, match="not a model package"):
        open_package(bogus, keys.trust)
    with pytest.raises(PackageFormatError, match="not a model package"):
        open_package(tmp_path / "missing.edgepkg", keys.trust)


def test_extra_member_refused(tmp_path: Path, keys: Keys) -> None:
    path = write(tmp_path, keys.signer)
    rewrite(path, {"../../etc/passwd": b"x"})
    with pytest.raises(PackageFormatError, match=r"not listed|path separator"):
        open_package(path, keys.trust)


def test_bad_manifest_json_and_schema(tmp_path: Path, keys: Keys) -> None:
    path = write(tmp_path, None)
    rewrite(path, {MANIFEST: b"{not json"})
    with pytest.raises(ManifestInvalid, match="not valid JSON"):
        open_package(path, keys.trust, allow_unsigned=True)
    data = manifest().to_dict()
    data["precision"] = "int4"
    rewrite(path, {MANIFEST: json.dumps(data).encode()})
    with pytest.raises(ManifestInvalid, match="precision"):
        open_package(path, keys.trust, allow_unsigned=True)


def test_write_is_atomic_on_failure(tmp_path: Path, keys: Keys) -> None:
    class Exploding(Signer):
        def sign(self, message: bytes) -> dict[str, str]:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_package(tmp_path, manifest(), MEMBERS, signer=Exploding(keys.signer.private))
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_bad_member_names(tmp_path: Path) -> None:
    members = {**MEMBERS, "a/b": b""}
    m = manifest(files={k: sha256_bytes(v) for k, v in members.items()})
    with pytest.raises(PackageFormatError):
        write_package(tmp_path, m, members, signer=None)
    assert list(tmp_path.iterdir()) == []
