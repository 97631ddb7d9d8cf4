"""The POST /predict/{name} convenience codec."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from edge_runtime.codecs.simple import decode_simple, encode_simple
from edge_runtime.errors import InputInvalid, PayloadInvalid
from edge_runtime.manifest import TensorSpec

SINGLE = (TensorSpec("x", "float32", ("batch", 2)),)
MULTI = (TensorSpec("ids", "int64", ("batch", "seq")), TensorSpec("flag", "bool", ("batch",)))


@pytest.mark.parametrize(
    ("doc", "shape"),
    [
        ([[1, 2], [3, 4]], (2, 2)),
        ([1, 2], (1, 2)),
        ({"x": [1.5, 2]}, (1, 2)),
        ({"x": [[1.5, 2]]}, (1, 2)),
    ],
    ids=["batch", "instance", "named_instance", "named_batch"],
)
def test_single_input(doc: Any, shape: tuple[int, ...]) -> None:
    inputs = decode_simple(orjson.dumps(doc), SINGLE)
    assert inputs["x"].shape == shape and inputs["x"].dtype == np.float32


def test_multi_input() -> None:
    inputs = decode_simple(orjson.dumps({"ids": [[1, 2, 3]], "flag": [True]}), MULTI)
    assert inputs["ids"].dtype == np.int64 and inputs["ids"].shape == (1, 3)
    assert inputs["flag"].tolist() == [True]


def test_string_input_instance() -> None:
    spec = (TensorSpec("s", "string", ("batch",)),)
    inputs = decode_simple(b'"hello"', spec)
    assert inputs["s"].dtype == object and inputs["s"].tolist() == ["hello"]


def test_encode() -> None:
    out = {"y": np.array([[0.5], [1.0]], np.float32), "label": np.array(["a", "b"])}
    assert orjson.loads(encode_simple(out)) == {
        "outputs": {"y": [[0.5], [1.0]], "label": ["a", "b"]}}


@pytest.mark.parametrize(
    ("body", "specs", "error", "phrase"),
    [
        (b"[1, 2", SINGLE, PayloadInvalid, "not valid JSON"),
        (b"[[1, 2]]", MULTI, PayloadInvalid, "the model has 2 inputs ('ids', 'flag')"),
        (b'{"ids": [[1]]}', MULTI, InputInvalid, "input 'flag': missing"),
        (b'{"x": [1, 2], "z": [1]}', SINGLE, InputInvalid, "input 'z': not an input"),
        (b"[[1, 2], [3]]", SINGLE, InputInvalid, "ragged"),
        (b'{"ids": [[1.5]], "flag": [true]}', MULTI, InputInvalid,
         "input 'ids': floating-point values in data cannot be int64"),
        (b'{"ids": [[1]], "flag": [1]}', MULTI, InputInvalid,
         "input 'flag': integer values in data cannot be bool"),
    ],
)
def test_bad_requests(body: bytes, specs: tuple[TensorSpec, ...], error: type[Exception],
                      phrase: str) -> None:
    with pytest.raises(PayloadInvalid) as info:
        decode_simple(body, specs)
    assert type(info.value) is error
    assert phrase in str(info.value)
