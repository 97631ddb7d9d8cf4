"""KServe V2 datatype names <-> numpy dtypes <-> manifest dtype strings."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.errors import PayloadInvalid

__all__ = ["DATATYPES", "datatype_of", "datatype_of_manifest", "dtype_of", "manifest_dtype_of"]

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_BY_DTYPE = {dtype: name for name, dtype in DATATYPES.items()}
_BY_MANIFEST = {
    "bool": "BOOL", "uint8": "UINT8", "int8": "INT8", "int16": "INT16", "int32": "INT32",
    "int64": "INT64", "float16": "FP16", "float32": "FP32", "float64": "FP64", "string": "BYTES",
}
_MANIFEST_OF = {datatype: dtype for dtype, datatype in _BY_MANIFEST.items()}


def dtype_of(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a V2 datatype ("BYTES" is an object array)."""
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise PayloadInvalid(
            f"unknown datatype {datatype!r} (expected one of {', '.join(DATATYPES)})"
        ) from None


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The V2 datatype of a numpy dtype; str, bytes and object arrays are "BYTES"."""
    if dtype.kind in "OSU":
        return "BYTES"
    name = _BY_DTYPE.get(dtype) or _BY_DTYPE.get(dtype.newbyteorder("="))
    if name is None:
        raise PayloadInvalid(f"numpy dtype {dtype} has no V2 datatype")
    return name


def datatype_of_manifest(dtype: str) -> str:
    """The V2 datatype of a manifest dtype: float32 -> FP32, string -> BYTES, ..."""
    return _BY_MANIFEST[dtype]


def manifest_dtype_of(datatype: str) -> str:
    """The manifest dtype of a V2 datatype: FP32 -> float32, BYTES -> string, ...

    Raises ``PayloadInvalid`` for datatypes a manifest cannot declare (UINT16, ...).
    """
    try:
        return _MANIFEST_OF[datatype]
    except KeyError:
        raise PayloadInvalid(f"datatype {datatype!r} has no manifest dtype") from None
