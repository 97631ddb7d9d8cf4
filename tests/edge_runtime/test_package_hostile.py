"""Hostile packages (issue 13, items 11 and 12): refused before anything is extracted or read in
full, with a typed error, signed or not; the store and everything outside it untouched.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from edge_runtime.errors import (
    BadSignature,
    ManifestInvalid,
    PackageError,
    PackageFormatError,
    SwapError,
)
from edge_runtime.manifest import Manifest, canonical_json
from edge_runtime.package import Package, open_package
from edge_runtime.pkgzip import DEFAULT_LIMITS, GIB, MIB, PackageLimits
from edge_runtime.signing import Signer, signature_bytes
from edge_runtime.store.models import ModelStore
from tests.conftest import Keys
from tests.edge_runtime.pkgcraft import (
    MEMBERS,
    STORED,
    UTF8_NAMES,
    build_zip,
    deflate_repeated,
    entry,
    manifest_dict,
    package,
    padded_entry,
)

BAD_NAMES = ["../../x", "/etc/x", "a/b", "name\n", "a\\b", "a\x00b", "x" * 256, ".", "..",
             ".hidden", "", "tab\tname", "rtl\u202egnp.exe", "line\u2028sep", "\ud800"]
SIGNING = ["unsigned", "trusted", "untrusted"]


def tree(root: Path) -> dict[str, str]:
    """Every file under root with its sha256 (to prove nothing changed)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def signer_for(mode: str, keys: Keys, other_keys: Keys) -> Signer | None:
    return {"unsigned": None, "trusted": keys.signer, "untrusted": other_keys.signer}[mode]


def sandbox(tmp_path: Path, keys: Keys) -> ModelStore:
    """A store under tmp_path/sandbox that accepts unsigned and untrusted packages."""
    return ModelStore(tmp_path / "sandbox" / "store", trust=keys.trust, allow_unsigned=True)


def install(store: ModelStore, pkg: Path) -> None:
    """Verify and unpack, as the swap runner does."""
    store.unpack(store.verify(pkg))


# -- 11. names ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_manifest_refuses_names_that_are_not_plain(name: str) -> None:
    data = manifest_dict()
    data["files"][name] = "0" * 64
    with pytest.raises(ManifestInvalid) as info:
        Manifest.from_dict(data)
    assert info.value.field == "files"
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["manifest.json", "signature.json"])
def test_manifest_refuses_to_list_its_own_members(name: str) -> None:
    data = manifest_dict()
    data["files"][name] = "0" * 64
    with pytest.raises(ManifestInvalid, match="reserved"):
        Manifest.from_dict(data)


@pytest.mark.parametrize("mode", SIGNING)
@pytest.mark.parametrize("name", ["../../x", "/tmp/abs-x", "name\n", "a\\b", "n" * 256],
                         ids=repr)
def test_bad_member_names_refused_signed_or_not(tmp_path: Path, keys: Keys, other_keys: Keys,
                                                name: str, mode: str) -> None:
    """The attacker lists the name and ships the file: refused in the zip and in the manifest."""
    members = {**MEMBERS, name: b"pwned"}
    signer = signer_for(mode, keys, other_keys)
    in_zip = write(tmp_path / "zip.edgepkg", package(members, signer=signer))
    only_manifest = write(tmp_path / "manifest.edgepkg", package(
        MEMBERS, signer=signer, manifest=manifest_dict(members)))
    store = sandbox(tmp_path, keys)
    before = tree(tmp_path)
    with pytest.raises(PackageFormatError, match="zip entry"):
        install(store, in_zip)
    with pytest.raises(ManifestInvalid, match="files"):
        install(store, only_manifest)
    assert tree(tmp_path) == before  # nothing written anywhere, store included
    assert not Path("/tmp/abs-x").exists()


def test_nul_in_zip_name_is_not_cut_short(tmp_path: Path) -> None:
    """zipfile truncates a name at NUL: ``model.onnx\\0evil`` must not pass as ``model.onnx``."""
    entries = [entry("manifest.json", canonical_json(manifest_dict())),
               *(entry(n, d) for n, d in MEMBERS.items() if n != "model.onnx"),
               entry(b"model.onnx\x00evil", MEMBERS["model.onnx"])]
    pkg = write(tmp_path / "p.edgepkg", build_zip(entries))
    with pytest.raises(PackageFormatError, match="NUL"):
        open_package(pkg, None, allow_unsigned=True)


def test_longest_plain_name_is_accepted(tmp_path: Path, keys: Keys) -> None:
    name = "m" * 250 + ".onnx"  # 255 bytes, the usual NAME_MAX
    members = {**MEMBERS, name: b"weights"}
    pkg = write(tmp_path / "p.edgepkg", package(members, signer=keys.signer))
    install(sandbox(tmp_path, keys), pkg)
    assert (tmp_path / "sandbox/store/models/digits/3" / name).read_bytes() == b"weights"


@pytest.mark.parametrize("member", ["model.onnx", "manifest.json", "signature.json"])
def test_duplicate_entries_refused(tmp_path: Path, keys: Keys, member: str) -> None:
    """Two entries of one name: a reader that hashes the first and extracts the last is fooled."""
    evil = entry(member, b"evil" if member == "model.onnx" else b"{}")
    pkg = write(tmp_path / "p.edgepkg", package(signer=keys.signer, extra=[evil]))
    with pytest.raises(PackageFormatError, match="twice"):
        open_package(pkg, keys.trust)


def test_hand_made_package_with_bad_name_is_not_extracted(tmp_path: Path, keys: Keys) -> None:
    pkg = write(tmp_path / "p.edgepkg", package(signer=keys.signer))
    good = open_package(pkg, keys.trust)
    files = {**good.manifest.files, "../escape": "0" * 64}
    forged = Package(good.path, replace(good.manifest, files=files), good.signed_by)
    with pytest.raises(PackageError):
        forged.extract(tmp_path / "out" / "x")
    assert not (tmp_path / "out").exists()  # refused before anything is created


def test_package_replaced_after_verification_is_not_extracted(tmp_path: Path,
                                                              keys: Keys) -> None:
    pkg = write(tmp_path / "p.edgepkg", package(signer=keys.signer))
    verified = open_package(pkg, keys.trust)
    other = {**MEMBERS, "model.onnx": b"another model"}
    pkg.write_bytes(package(other, signer=keys.signer))
    with pytest.raises(PackageFormatError, match="changed since verification"):
        verified.extract(tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()


# -- 12. sizes and signatures ---------------------------------------------------------------
def test_signature_covers_the_stored_bytes(tmp_path: Path, keys: Keys) -> None:
    """Whitespace padding keeps the JSON equal but changes the bytes: no longer signed."""
    canonical = canonical_json(manifest_dict())
    padded = canonical[:-1] + b" " * 4096 + b"}"
    pkg = write(tmp_path / "p.edgepkg", package(signer=keys.signer, manifest_bytes=padded,
                                                 signed_bytes=canonical))
    with pytest.raises(BadSignature):
        open_package(pkg, keys.trust)
    with pytest.raises(BadSignature):  # a trusted key's failed signature is never waived
        open_package(pkg, keys.trust, allow_unsigned=True)
    ok = write(tmp_path / "ok.edgepkg", package(signer=keys.signer))
    assert open_package(ok, keys.trust).signed_by == keys.signer.key_id


def _padded(member: str, size: int, keys: Keys, *, real: bool) -> bytes:
    """A package signed over the canonical manifest whose manifest or signature is ``size``
    bytes: really (the same JSON padded with spaces, honest headers: what the issue installed),
    or declared by a header over a tiny stream."""
    canonical = canonical_json(manifest_dict())
    signature = signature_bytes(keys.signer.sign(canonical))
    doc = canonical if member == "manifest.json" else signature
    big = (padded_entry(member, doc, size - len(doc)) if real else
           entry(member, b"", data=deflate_repeated(b" ", 1), size=size, crc=0))
    other = (entry("signature.json", signature) if member == "manifest.json" else
             entry("manifest.json", canonical))
    return build_zip([big, other, *(entry(n, d) for n, d in MEMBERS.items())])


@pytest.mark.parametrize("member", ["manifest.json", "signature.json"])
@pytest.mark.parametrize("real", [True, False], ids=["real-stream", "lying-header"])
def test_oversized_metadata_refused_on_declared_size(tmp_path: Path, keys: Keys, member: str,
                                                     real: bool) -> None:
    size = 64 * MIB if real else GIB
    pkg = write(tmp_path / "p.edgepkg", _padded(member, size, keys, real=real))
    with pytest.raises(PackageFormatError, match=f"{member} declares {size} bytes"):
        open_package(pkg, keys.trust, allow_unsigned=True)


def test_zip_bomb_refused_on_declared_size(tmp_path: Path, keys: Keys) -> None:
    """A model declaring 3 GiB from a 1 KB stream: refused before one byte is inflated."""
    bomb = entry("model.onnx", b"", data=deflate_repeated(b"\0" * MIB, 1), size=3 * GIB, crc=0)
    members = {n: d for n, d in MEMBERS.items() if n != "model.onnx"}
    pkg = write(tmp_path / "p.edgepkg", package(members, signer=keys.signer, manifest=
                                                 manifest_dict(MEMBERS), extra=[bomb]))
    with pytest.raises(PackageFormatError, match="3221225472 bytes"):
        open_package(pkg, keys.trust)


def test_bomb_under_the_size_limit_refused_on_ratio(tmp_path: Path, keys: Keys) -> None:
    model = b"\0" * (16 * MIB)
    members = {**MEMBERS, "model.onnx": model}
    pkg = write(tmp_path / "p.edgepkg", package(members, signer=keys.signer))
    with pytest.raises(PackageFormatError, match="compression ratio"):
        open_package(pkg, keys.trust)


def test_header_lying_small_is_capped(tmp_path: Path) -> None:
    """Declares 1 KiB, inflates to 8 MiB: reading stops at the declared size and fails the CRC."""
    real = b"\0" * (8 * MIB)
    liar = entry("model.onnx", real, size=1024)
    members = {n: d for n, d in MEMBERS.items() if n != "model.onnx"}
    pkg = write(tmp_path / "p.edgepkg", package(members, manifest=manifest_dict(
        {**members, "model.onnx": real[:1024]}), extra=[liar]))
    with pytest.raises(PackageFormatError, match="corrupt"):
        open_package(pkg, None, allow_unsigned=True)


def test_stored_entry_must_declare_its_real_size(tmp_path: Path) -> None:
    liar = entry("model.onnx", MEMBERS["model.onnx"], method=STORED, size=10 * MIB)
    pkg = write(tmp_path / "p.edgepkg", package(
        {n: d for n, d in MEMBERS.items() if n != "model.onnx"},
        manifest=manifest_dict(), extra=[liar]))
    with pytest.raises(PackageFormatError, match="stored but declares"):
        open_package(pkg, None, allow_unsigned=True)


@pytest.mark.parametrize(("flags", "method", "match"), [
    (UTF8_NAMES | 0x1, 8, "encrypted"), (UTF8_NAMES, 12, "compression method 12"),
    (UTF8_NAMES, 14, "compression method 14")])
def test_encrypted_or_exotic_entries_refused(tmp_path: Path, flags: int, method: int,
                                             match: str) -> None:
    odd = entry("model.onnx", MEMBERS["model.onnx"], flags=flags, method=method)
    pkg = write(tmp_path / "p.edgepkg", package(
        {n: d for n, d in MEMBERS.items() if n != "model.onnx"},
        manifest=manifest_dict(), extra=[odd]))
    with pytest.raises(PackageFormatError, match=match):
        open_package(pkg, None, allow_unsigned=True)


def test_too_many_entries_refused_from_the_end_record(tmp_path: Path) -> None:
    entries = [entry(f"f{i}", b"") for i in range(DEFAULT_LIMITS.max_members + 1)]
    pkg = write(tmp_path / "many.edgepkg", build_zip(entries))
    with pytest.raises(PackageFormatError, match="65 zip entries"):
        open_package(pkg, None, allow_unsigned=True)
    # an end record that declares a huge directory is refused before zipfile reads it
    huge = write(tmp_path / "dir.edgepkg", build_zip([entry("manifest.json", b"{}")],
                                                     declared_dir_size=2**31))
    with pytest.raises(PackageFormatError, match="zip directory"):
        open_package(huge, None, allow_unsigned=True)


def test_zip64_end_record_is_read_and_checked(tmp_path: Path, keys: Keys) -> None:
    """A package's zip64 end record is what zipfile believes: honest opens, huge is refused."""
    entries = [entry("manifest.json", canonical_json(manifest_dict())),
               *(entry(n, d) for n, d in MEMBERS.items())]
    honest = write(tmp_path / "z.edgepkg", build_zip(entries, zip64=True))
    assert open_package(honest, None, allow_unsigned=True).manifest.name == "digits"
    for declared in ({"declared_entries": 10**6}, {"declared_dir_size": 2**40}):
        huge = write(tmp_path / "h.edgepkg", build_zip(entries, zip64=True, **declared))
        with pytest.raises(PackageFormatError, match=r"zip entries|zip directory"):
            open_package(huge, None, allow_unsigned=True)


def test_corrupt_member_json_is_a_package_error(tmp_path: Path, keys: Keys) -> None:
    members = {**MEMBERS, "validation.json": b"[" * 100_000}
    pkg = open_package(write(tmp_path / "p.edgepkg", package(members, signer=keys.signer)),
                       keys.trust)
    with pytest.raises(PackageFormatError, match=r"validation\.json is not valid JSON"):
        pkg.read_json("validation.json")


# -- the CLI: one error line, exit 1, store untouched, bounded memory --------------------------
def run_measured(*args: str | Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """`edge-runtime ARGS` in a fresh process; also its peak RSS in KiB (from wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", *map(str, args)],
                                stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read().decode(), err.read().decode()
    return subprocess.CompletedProcess(args, code, *text), usage.ru_maxrss


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture
def store(tmp_path: Path, keys: Keys) -> Path:
    """A store with one good version installed (what must survive every refusal)."""
    root = tmp_path / "store"
    good = write(tmp_path / "good.edgepkg", package(
        signer=keys.signer, manifest=manifest_dict(version="1")))
    proc, _ = run_measured("install", good, "--store", root, "--trusted-keys", keys.public)
    assert proc.returncode == 0, proc.stderr
    return root


def _corrupt_deflate(keys: Keys) -> bytes:
    model = MEMBERS["model.onnx"]
    broken = entry("model.onnx", model, data=b"\xff" * 64)  # BTYPE 11: invalid block type
    members = {n: d for n, d in MEMBERS.items() if n != "model.onnx"}
    return package(members, signer=keys.signer, manifest=manifest_dict(), extra=[broken])


def test_cli_install_refusals_are_one_line_and_leave_the_store(
        tmp_path: Path, keys: Keys, store: Path) -> None:
    cases = {
        "corrupt-deflate": _corrupt_deflate(keys),
        "traversal": package({**MEMBERS, "../../x": b"x"}, signer=keys.signer),
        "padded-manifest": _padded("manifest.json", 64 * MIB, keys, real=True),
        "padded-signature": _padded("signature.json", 64 * MIB, keys, real=True),
    }
    before = tree(store / "models")
    assert "digits/1/model.onnx" in before
    rows_before = _rows(store)
    for name, data in cases.items():
        pkg = write(tmp_path / f"{name}.edgepkg", data)
        for unsigned in ((), ("--allow-unsigned",)):
            proc, _ = run_measured("install", pkg, "--store", store, "--trusted-keys",
                                   keys.public, *unsigned)
            line = one_error_line(proc)
            assert "internal error" not in line, (name, line)
        assert tree(store / "models") == before, name
        assert not list((store / "models").glob("*/.staging-*")), name
    assert _rows(store) == rows_before
    corrupt = tmp_path / "corrupt-deflate.edgepkg"
    assert "corrupt" in one_error_line(run_measured("inspect", corrupt, "--trusted-keys",
                                                    keys.public)[0])


def _rows(store: Path) -> list[tuple[object, ...]]:
    db = ModelStore(store).db
    return [tuple(r) for r in db.query("SELECT name, version, path FROM models")] + [
        tuple(r) for r in db.query("SELECT name, version, previous FROM active")]


def test_refusals_do_not_read_what_they_refuse(tmp_path: Path, keys: Keys) -> None:
    """Peak RSS of refusing 64 MiB metadata or a 3 GiB bomb stays at that of a good inspect."""
    good = write(tmp_path / "good.edgepkg", package(signer=keys.signer))
    base_proc, base = run_measured("inspect", good, "--trusted-keys", keys.public)
    assert base_proc.returncode == 0, base_proc.stderr
    bomb = entry("model.onnx", b"", data=deflate_repeated(b"\0" * MIB, 1), size=3 * GIB, crc=0)
    hostile = {
        "manifest": _padded("manifest.json", 64 * MIB, keys, real=True),
        "signature": _padded("signature.json", 64 * MIB, keys, real=True),
        "bomb": package({n: d for n, d in MEMBERS.items() if n != "model.onnx"},
                        signer=keys.signer, manifest=manifest_dict(), extra=[bomb]),
    }
    for name, data in hostile.items():
        proc, peak = run_measured("inspect", write(tmp_path / f"{name}.edgepkg", data),
                                  "--trusted-keys", keys.public)
        one_error_line(proc)
        print(f"peak RSS {name}: {peak // 1024} MiB (good package: {base // 1024} MiB)")
        assert peak < base + 16 * 1024, (name, peak, base)


def test_swap_error_keeps_the_package_error_text(tmp_path: Path, keys: Keys) -> None:
    pkg = write(tmp_path / "p.edgepkg", _corrupt_deflate(keys))
    store = ModelStore(tmp_path / "store", trust=keys.trust)
    with pytest.raises(PackageFormatError, match="corrupt"):
        store.verify(pkg)
    good = open_package(write(tmp_path / "g.edgepkg", package(signer=keys.signer)), keys.trust)
    pkg.write_bytes(_corrupt_deflate(keys))
    swapped = Package(pkg, good.manifest, good.signed_by)  # verified, then the file changed
    with pytest.raises(SwapError, match="corrupt"):
        store.unpack(swapped)
    assert not list((tmp_path / "store" / "models").rglob("*.onnx"))


def test_inspect_reports_a_broken_validation_member_as_an_error(tmp_path: Path,
                                                                 keys: Keys) -> None:
    broken = write(tmp_path / "b.edgepkg", package({**MEMBERS, "validation.json": b"[1,"},
                                                   signer=keys.signer))
    assert "validation.json is not valid JSON" in one_error_line(
        run_measured("inspect", broken, "--trusted-keys", keys.public)[0])
    without = {n: d for n, d in MEMBERS.items() if n != "validation.json"}
    proc, _ = run_measured("inspect", write(tmp_path / "w.edgepkg", package(
        without, signer=keys.signer)), "--trusted-keys", keys.public)
    assert proc.returncode == 0 and "validation: no report in this package" in proc.stdout


def test_store_limits_are_its_own(tmp_path: Path, keys: Keys) -> None:
    pkg = write(tmp_path / "p.edgepkg", package(signer=keys.signer))
    small = ModelStore(tmp_path / "store", trust=keys.trust,
                       limits=PackageLimits(max_package_bytes=1000))
    with pytest.raises(PackageFormatError, match="at most 1000"):
        small.verify(pkg)
    assert ModelStore(tmp_path / "store2", trust=keys.trust).verify(pkg).signed_by
