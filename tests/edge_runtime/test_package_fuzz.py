"""Fuzz the package reader: mutated zips, members and manifests.

Every input either opens (and then extracts only plain, listed names into the target directory)
or raises a ``PackageError`` subclass: never another exception, never a write outside the
target. Bounded: a few hundred examples per test, no example database in the checkout.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.errors import PackageError
from edge_runtime.manifest import canonical_json
from edge_runtime.package import MANIFEST, SIGNATURE, open_package, read_manifest, sha256_bytes
from edge_runtime.signing import Signer, TrustStore, signature_bytes
from tests.edge_runtime.pkgcraft import (
    MEMBERS,
    Entry,
    build_zip,
    deflate,
    entry,
    manifest_dict,
    package,
)

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
OUTCOMES: Counter[str] = Counter()

SIGNER = Signer(Ed25519PrivateKey.generate())
TRUST = TrustStore([SIGNER.private.public_key()])
BASES = [package(signer=SIGNER), package()]

# Fragments that make names hostile, glued together by the strategy below.
_FRAGMENTS = ["..", ".", "/", "\\", "\x00", "\n", "\r", "\t", "a", "model.onnx", "é", "\u202e",
              "\u2028", "\ud800", "\x7f", "x" * 128, "manifest.json", " "]
NAMES = st.one_of(
    st.lists(st.sampled_from(_FRAGMENTS), min_size=0, max_size=4).map("".join),
    st.text(st.characters(), max_size=24),
    st.sampled_from(["model.onnx", "validation.json", "w.bin"]),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)


def check_reader(data: bytes, *, allow_unsigned: bool) -> str:
    """Open ``data`` as a package and extract it; return the outcome, or fail the test."""
    with tempfile.TemporaryDirectory(prefix="pkgfuzz-") as tmp:
        outer = Path(tmp)
        inner = outer / "inner"
        inner.mkdir()
        path = inner / "p.edgepkg"
        path.write_bytes(data)
        target = inner / "target"
        with contextlib.suppress(PackageError):
            read_manifest(path)
        try:
            pkg = open_package(path, TRUST, allow_unsigned=allow_unsigned)
            pkg.extract(target)
            for member in pkg.manifest.files:
                pkg.read(member)
        except PackageError as exc:
            OUTCOMES[type(exc).__name__] += 1
            outcome = "refused"
        else:
            expected = {MANIFEST, *pkg.manifest.files} | ({SIGNATURE} if pkg.signed_by else set())
            assert set(os.listdir(target)) == expected
            outcome = "opened"
            OUTCOMES["opened"] += 1
        assert os.listdir(outer) == ["inner"]
        for root, dirs, files in os.walk(inner):
            assert Path(root) in (inner, target), (root, dirs, files)
            assert not any(Path(root, f).is_symlink() for f in files)
        return outcome


@FUZZ
@given(base=st.sampled_from(range(len(BASES))), allow_unsigned=st.booleans(),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                      min_size=1, max_size=12))
def test_bytes_flipped(base: int, allow_unsigned: bool, flips: list[tuple[float, int]]) -> None:
    data = bytearray(BASES[base])
    for where, value in flips:
        data[int(where * len(data))] = value
    check_reader(bytes(data), allow_unsigned=allow_unsigned)


@FUZZ
@given(base=st.sampled_from(range(len(BASES))), start=st.floats(0, 1),
       length=st.integers(0, 400), insert=st.binary(max_size=64))
def test_bytes_cut_or_inserted(base: int, start: float, length: int, insert: bytes) -> None:
    """Truncated files, cut-out ranges and inserted garbage (shifts every offset after it)."""
    data = BASES[base]
    at = int(start * len(data))
    check_reader(data[:at] + insert + data[at + length:], allow_unsigned=True)


@st.composite
def mutated_entry(draw: st.DrawFn, name: str, raw: bytes) -> Entry:
    """One member as an attacker or a broken writer stores it: any header field may lie."""
    honest = entry(name, raw)
    if draw(st.integers(0, 9)) >= 3:  # most members stay honest, so some packages still open
        return honest
    choice = draw(st.sampled_from(["truncated", "garbage", "size", "crc", "method",
                                   "stored-lie", "name"]))
    if choice == "truncated":
        return Entry(honest.name, honest.data[:draw(st.integers(0, len(honest.data)))],
                     honest.size, honest.crc)
    if choice == "garbage":
        return Entry(honest.name, draw(st.binary(max_size=64)), honest.size, honest.crc)
    if choice == "size":
        return Entry(honest.name, honest.data, draw(st.integers(0, 2**32 - 1)), honest.crc)
    if choice == "crc":
        return Entry(honest.name, honest.data, honest.size, draw(st.integers(0, 2**32 - 1)))
    if choice == "method":
        return Entry(honest.name, honest.data, honest.size, honest.crc,
                     method=draw(st.sampled_from([0, 1, 9, 12, 14, 99, 65535])),
                     flags=draw(st.integers(0, 0xFFFF)))
    if choice == "stored-lie":
        return Entry(honest.name, raw, draw(st.integers(0, 2**32 - 1)), honest.crc, method=0)
    if choice == "name":
        return Entry(draw(NAMES).encode("utf-8", "surrogatepass"), honest.data, honest.size,
                     honest.crc)
    return honest


@FUZZ
@given(data=st.data(), signed=st.booleans(),
       extra=st.lists(st.tuples(NAMES, st.binary(max_size=32)), max_size=2))
def test_members_mutated(data: st.DataObject, signed: bool,
                         extra: list[tuple[str, bytes]]) -> None:
    """Each member's header or data may lie; extra entries, duplicates and odd names appear."""
    raw = canonical_json(manifest_dict())
    members: dict[str, bytes] = {MANIFEST: raw}
    if signed:
        members[SIGNATURE] = signature_bytes(SIGNER.sign(raw))
    members.update(MEMBERS)
    entries = [data.draw(mutated_entry(name, body)) for name, body in members.items()]
    entries += [entry(name.encode("utf-8", "surrogatepass"), body) for name, body in extra]
    order = data.draw(st.permutations(entries))
    check_reader(build_zip(order), allow_unsigned=True)


@st.composite
def mutated_manifest(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A manifest changed as JSON, and the members the package ships with it."""
    members = dict(MEMBERS)
    doc = manifest_dict(members)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "delete", "file", "files", "tensor"]))
        key = draw(st.sampled_from([*doc, "extra"]) | st.text(max_size=6))
        if op == "set":
            doc[key] = draw(JSON)
        elif op == "delete":
            doc.pop(key, None)
        elif op == "file":  # a new member the package really ships, under a hostile name
            name, body = draw(NAMES), draw(st.binary(max_size=16))
            members[name] = body
            if isinstance(doc.get("files"), dict):
                doc["files"][name] = sha256_bytes(body)
            if draw(st.booleans()):
                doc["model_file"] = name
        elif op == "files":
            doc["files"] = draw(st.dictionaries(NAMES, st.text("0123456789abcdefABC", min_size=63,
                                                               max_size=65), max_size=3))
        elif isinstance(doc.get("inputs"), list) and doc["inputs"]:
            doc["inputs"][0] = draw(JSON)
    return doc, members


@FUZZ
@given(mutation=mutated_manifest(), signed=st.booleans(), ascii_escapes=st.booleans())
def test_manifest_mutated_as_json(mutation: tuple[dict[str, Any], dict[str, bytes]],
                                  signed: bool, ascii_escapes: bool) -> None:
    """Signed by the trusted key or not: either way only the reader's own checks stand in the
    way (a signature over a hostile manifest proves nothing about its names)."""
    doc, members = mutation
    try:
        raw = json.dumps(doc).encode() if ascii_escapes else canonical_json(doc)
    except UnicodeEncodeError:  # a lone surrogate only travels as a JSON escape
        raw = json.dumps(doc).encode()
    entries = [entry(MANIFEST, raw)]
    if signed:
        entries.append(entry(SIGNATURE, signature_bytes(SIGNER.sign(raw))))
    entries += [Entry(n.encode("utf-8", "surrogatepass"), deflate(b), len(b), zlib.crc32(b))
                for n, b in members.items()]
    check_reader(build_zip(entries), allow_unsigned=True)


def test_the_fuzz_reached_both_outcomes() -> None:
    """The unmutated bases open; with the tests above, refusals of several kinds were seen."""
    for base in BASES:
        assert check_reader(base, allow_unsigned=True) == "opened"
    assert check_reader(BASES[0], allow_unsigned=False) == "opened"
    print(f"package fuzz outcomes: {dict(OUTCOMES)}")
