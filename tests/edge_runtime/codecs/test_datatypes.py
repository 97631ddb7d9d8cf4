"""V2 datatype names <-> numpy dtypes <-> manifest dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.codecs.datatypes import (
    DATATYPES,
    datatype_of,
    datatype_of_manifest,
    dtype_of,
    manifest_dtype_of,
)
from edge_runtime.errors import PayloadInvalid
from edge_runtime.manifest import DTYPES


def test_datatypes_round_trip() -> None:
    for datatype, dtype in DATATYPES.items():
        assert dtype_of(datatype) == dtype
        assert datatype_of(dtype) == datatype


def test_manifest_dtypes_round_trip() -> None:
    assert datatype_of_manifest("float32") == "FP32"
    assert datatype_of_manifest("string") == "BYTES"
    for dtype in DTYPES:
        assert manifest_dtype_of(datatype_of_manifest(dtype)) == dtype


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [(">f4", "FP32"), ("<U3", "BYTES"), ("S2", "BYTES"), (">i8", "INT64"), ("?", "BOOL")],
)
def test_datatype_of_other_numpy_spellings(dtype: str, datatype: str) -> None:
    assert datatype_of(np.dtype(dtype)) == datatype


@pytest.mark.parametrize(
    ("call", "phrase"),
    [
        (lambda: dtype_of("FP8"), "unknown datatype 'FP8'"),
        (lambda: datatype_of(np.dtype(np.complex128)), "has no V2 datatype"),
        (lambda: manifest_dtype_of("UINT16"), "'UINT16' has no manifest dtype"),
    ],
)
def test_errors(call: object, phrase: str) -> None:
    with pytest.raises(PayloadInvalid, match=phrase):
        call()  # type: ignore[operator]
