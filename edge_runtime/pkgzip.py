"""The zip boundary of a model package: declared sizes checked before anything is read.

A package comes from anywhere (a registry, a fleet download, a USB stick), so nothing in it is
read until the central directory's declared sizes, entry count, names, compression methods and
ratios are within ``PackageLimits``; then every member is streamed with a hard cap (its declared
size), so a header that lies cannot get past either. Every failure of the zip layer, including
a corrupt deflate stream, is a ``PackageFormatError``.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edge_runtime.errors import PackageFormatError
from edge_runtime.manifest import RESERVED_NAMES, file_name_problem

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
_CHUNK = MIB
# What zipfile itself raises on broken archives (struct.error: short records;
# NotImplementedError: a version or method it does not read).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, struct.error, ValueError,
               NotImplementedError)
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


@dataclass(frozen=True)
class PackageLimits:
    """What a package may declare. Models can be hundreds of MB; metadata is a few KB."""

    #: manifest.json and signature.json, each
    max_metadata_bytes: int = MIB
    #: sum of every member's declared uncompressed size (the model dominates)
    max_package_bytes: int = 2 * GIB
    max_members: int = 64
    #: the central directory itself (64 entries of at most 255-byte names need ~25 KB)
    max_directory_bytes: int = MIB
    #: declared size / compressed size, for members larger than ``ratio_floor``: real models
    #: compress by 1.1-3x, a zip bomb by ~1000x
    max_ratio: int = 100
    ratio_floor: int = MIB


DEFAULT_LIMITS = PackageLimits()


def open_zip(path: Path, limits: PackageLimits) -> zipfile.ZipFile:
    """Open the package's zip after checking its directory; the caller closes it."""
    try:
        with open(path, "rb") as fh:
            _check_end_record(path, fh, limits)
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        raise PackageFormatError(path, f"not a model package ({exc})") from exc
    try:
        check_entries(path, zf.infolist(), limits)
    except BaseException:
        zf.close()
        raise
    return zf


def _check_end_record(path: Path, fh: BinaryIO, limits: PackageLimits) -> None:
    """Entry count and directory size from the end record, before zipfile reads the directory.

    The record is searched for the way zipfile does (the last 22 bytes when they are a record
    without a comment, else the last signature in the last 64 KiB), so both read the same one.
    """
    size = fh.seek(0, 2)
    tail_len = min(size, _EOCD.size + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = len(tail) - _EOCD.size
    if tail[pos:pos + 4] != b"PK\x05\x06" or tail[-2:] != b"\0\0":  # else: has a comment
        pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + _EOCD.size > len(tail):
        raise PackageFormatError(path, "not a model package (no zip end record)")
    _, _, _, _, entries, dir_size, _, _ = _EOCD.unpack_from(tail, pos)
    loc = pos - _EOCD64_LOCATOR.size
    if loc >= 0 and tail[loc:loc + 4] == b"PK\x06\x07":
        rec = size - tail_len + loc - _EOCD64.size
        if rec < 0:
            raise PackageFormatError(path, "not a model package (truncated zip64 end record)")
        fh.seek(rec)
        raw = fh.read(_EOCD64.size)
        if len(raw) == _EOCD64.size and raw[:4] == b"PK\x06\x06":
            fields = _EOCD64.unpack(raw)
            entries, dir_size = fields[7], fields[8]
    if entries > limits.max_members:
        raise PackageFormatError(path, f"{entries} zip entries (at most {limits.max_members})")
    if dir_size > limits.max_directory_bytes:
        raise PackageFormatError(path, f"zip directory of {dir_size} bytes (at most "
                                       f"{limits.max_directory_bytes})")


def check_entries(path: Path, infos: list[zipfile.ZipInfo], limits: PackageLimits) -> None:
    """Names, duplicates, methods and declared sizes of every entry; nothing is read."""
    if len(infos) > limits.max_members:
        raise PackageFormatError(path, f"{len(infos)} zip entries (at most {limits.max_members})")
    seen: set[str] = set()
    total = 0
    for info in infos:
        _check_name(path, info, seen)
        _check_entry(path, info, limits)
        total += info.file_size
    if total > limits.max_package_bytes:
        raise PackageFormatError(path, f"members declare {total} bytes in all (at most "
                                       f"{limits.max_package_bytes})")


def _check_name(path: Path, info: zipfile.ZipInfo, seen: set[str]) -> None:
    # zipfile cuts a name at NUL; the name as stored is what a extractor elsewhere would see
    problem = file_name_problem(info.orig_filename)
    if problem is not None:
        raise PackageFormatError(path, f"zip entry {info.orig_filename!r} {problem}")
    if info.filename in seen:
        raise PackageFormatError(path, f"zip entry {info.filename!r} appears twice")
    seen.add(info.filename)


def _check_entry(path: Path, info: zipfile.ZipInfo, limits: PackageLimits) -> None:
    name = info.filename
    if info.flag_bits & 0x1:
        raise PackageFormatError(path, f"zip entry {name!r} is encrypted")
    if info.compress_type not in _METHODS:
        raise PackageFormatError(path, f"zip entry {name!r} uses compression method "
                                       f"{info.compress_type} (only stored or deflated)")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise PackageFormatError(path, f"zip entry {name!r} is stored but declares "
                                       f"{info.file_size} bytes in {info.compress_size}")
    cap = limits.max_metadata_bytes if name in RESERVED_NAMES else limits.max_package_bytes
    if info.file_size > cap:
        raise PackageFormatError(path, f"{name} declares {info.file_size} bytes (at most {cap})")
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > limits.ratio_floor and ratio > limits.max_ratio:
        raise PackageFormatError(path, f"zip entry {name!r} declares a {ratio:.0f}:1 "
                                       f"compression ratio (at most {limits.max_ratio}:1)")


def iter_member(path: Path, zf: zipfile.ZipFile, name: str, cap: int) -> Iterator[bytes]:
    """The member's bytes in chunks; refuses it past ``cap`` or past its declared size."""
    try:
        info = zf.getinfo(name)
    except KeyError as exc:
        raise PackageFormatError(path, f"no member {name!r}") from exc
    if info.file_size > cap:
        raise PackageFormatError(path, f"{name} declares {info.file_size} bytes (at most {cap})")
    limit = min(cap, info.file_size)
    seen = 0
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(_CHUNK):
                seen += len(chunk)
                if seen > limit:
                    raise PackageFormatError(path, f"{name} is longer than it declares")
                yield chunk
    except _ZIP_ERRORS as exc:
        raise PackageFormatError(path, f"member {name!r} is corrupt ({exc})") from exc
    if seen != info.file_size:
        raise PackageFormatError(path, f"{name} is shorter than it declares")


def read_member(path: Path, zf: zipfile.ZipFile, name: str, cap: int) -> bytes:
    return b"".join(iter_member(path, zf, name, cap))
