"""Triton's binary tensor data: raw little-endian numbers, BYTES as 4-byte length + bytes."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InputInvalid

_LEN = struct.Struct("<I")


def unpack_bytes(name: str, buf: memoryview, count: int) -> NDArray[Any]:
    """``count`` length-prefixed elements filling ``buf`` exactly, as an object array of bytes."""
    end = len(buf)
    if count * _LEN.size > end:
        raise InputInvalid(name, f"{end} bytes cannot hold {count} BYTES elements")
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + _LEN.size > end:
            raise InputInvalid(name, f"BYTES data ends after {i} of {count} elements")
        (size,) = _LEN.unpack_from(buf, pos)
        pos += _LEN.size + size
        if pos > end:
            raise InputInvalid(name, f"BYTES element {i} of {size} bytes overruns the data")
        out[i] = bytes(buf[pos - size : pos])
    if pos != end:
        raise InputInvalid(name, f"{end - pos} bytes are left after the {count} BYTES elements")
    return out


def pack(arr: NDArray[Any]) -> bytes:
    """``arr`` in row-major order as binary tensor data."""
    if arr.dtype.kind not in "OSU":
        return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    parts: list[bytes] = []
    for x in arr.reshape(-1):
        data = x if isinstance(x, bytes) else str(x).encode()
        parts += (_LEN.pack(len(data)), data)
    return b"".join(parts)
