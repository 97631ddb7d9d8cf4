"""Hand-made model packages, byte by byte: what an attacker or a broken tool produces.

``zipfile`` refuses to write some of these (NUL in names) and warns on others (duplicates), so
the zip is assembled from its records here. Sizes and CRCs are whatever the caller declares.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from edge_runtime.manifest import canonical_json
from edge_runtime.package import sha256_bytes
from edge_runtime.signing import Signer, signature_bytes

STORED, DEFLATED = 0, 8
UTF8_NAMES = 0x800
MEMBERS = {"model.onnx": b"\x08\x07fake-model-bytes " * 64, "validation.json":
           b'{"chosen": "fp32", "reason": "only candidate"}', "reference_stats.json": b"{}"}


@dataclass(frozen=True)
class Entry:
    """One zip entry as stored: ``data`` is the compressed bytes for DEFLATED."""

    name: bytes
    data: bytes
    size: int
    crc: int
    method: int = DEFLATED
    flags: int = UTF8_NAMES


def deflate(raw: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(raw) + c.flush()


def deflate_repeated(block: bytes, count: int) -> bytes:
    """The raw deflate stream of ``block * count`` without holding it in memory."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return b"".join(c.compress(block) for _ in range(count)) + c.flush()


def padded_entry(name: str, doc: bytes, pad: int) -> Entry:
    """An honest entry for ``doc`` (a JSON object) with ``pad`` spaces before its closing brace:
    the same JSON, streamed so a GiB of padding never sits in memory."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    block = b" " * (1 << 20)
    data, crc = [c.compress(doc[:-1])], zlib.crc32(doc[:-1])
    for start in range(0, pad, len(block)):
        chunk = block[:min(len(block), pad - start)]
        data.append(c.compress(chunk))
        crc = zlib.crc32(chunk, crc)
    data += [c.compress(doc[-1:]), c.flush()]
    return Entry(name.encode(), b"".join(data), len(doc) + pad, zlib.crc32(doc[-1:], crc))


def entry(name: str | bytes, raw: bytes, *, method: int = DEFLATED, **declared: Any) -> Entry:
    """An honest entry for ``raw``; keyword arguments override what the headers declare."""
    encoded = name.encode() if isinstance(name, str) else name
    data = deflate(raw) if method == DEFLATED else raw
    honest = Entry(encoded, data, len(raw), zlib.crc32(raw), method)
    return replace(honest, **declared)


def build_zip(entries: Iterable[Entry], *, declared_entries: int | None = None,
              declared_dir_size: int | None = None, zip64: bool = False) -> bytes:
    """The zip of ``entries``; the end record may declare other counts, or defer to a zip64
    end record (as zipfile writes past 65535 entries or 4 GiB)."""
    out, central = bytearray(), bytearray()
    count = 0
    for e in entries:
        count += 1
        offset = len(out)
        out += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, e.flags, e.method, 0, 0x21,
                           e.crc, len(e.data), e.size, len(e.name), 0)
        out += e.name + e.data
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, e.flags,
                               e.method, 0, 0x21, e.crc, len(e.data), e.size, len(e.name), 0, 0,
                               0, 0, 0o644 << 16, offset)
        central += e.name
    n = count if declared_entries is None else declared_entries
    size = len(central) if declared_dir_size is None else declared_dir_size
    if not zip64:
        end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, size, len(out), 0)
        return bytes(out + central + end)
    record_at = len(out) + len(central)
    end = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, size, len(out))
    end += struct.pack("<4sLQL", b"PK\x06\x07", 0, record_at, 1)
    end += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                       0xFFFFFFFF, 0)
    return bytes(out + central + end)


def manifest_dict(members: Mapping[str, bytes] = MEMBERS, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 1, "name": "digits", "version": "3", "format": "onnx",
        "precision": "fp32", "model_file": "model.onnx", "task": "classification",
        "inputs": [{"name": "input", "dtype": "float32", "shape": ["batch", 4]}],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": ["batch", 3]}],
        "files": {k: sha256_bytes(v) for k, v in members.items()},
        "source": {}, "converter": {"name": "pkgcraft"}, "options": {},
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    data.update(changes)
    return data


def package(members: Mapping[str, bytes] = MEMBERS, *, signer: Signer | None = None,
            manifest: dict[str, Any] | None = None, manifest_bytes: bytes | None = None,
            signed_bytes: bytes | None = None, extra: Iterable[Entry] = ()) -> bytes:
    """A package's bytes: manifest (canonical unless given), signature, members, extra entries.

    ``signed_bytes`` is what the signer signs (default: the stored manifest bytes).
    """
    raw = manifest_bytes if manifest_bytes is not None else canonical_json(
        manifest if manifest is not None else manifest_dict(members))
    entries = [entry("manifest.json", raw)]
    if signer is not None:
        record = signer.sign(signed_bytes if signed_bytes is not None else raw)
        entries.append(entry("signature.json", signature_bytes(record)))
    entries += [entry(name, data) for name, data in members.items()]
    return build_zip([*entries, *extra])
