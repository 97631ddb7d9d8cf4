"""Property tests of the TF-Serving predict decoder (and the one-line /predict format, which
shares its JSON-to-array step) on hostile input: any body decodes to arrays of the model's
input dtypes, or is a ``PayloadInvalid`` (a 400), never another exception; well-formed rows
and columns round-trip; hand-picked shapes that broke numpy-based decoders are 400s."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.codecs.simple import decode_simple
from edge_runtime.codecs.tfserving import decode_predict
from edge_runtime.errors import PayloadInvalid
from edge_runtime.inputs import spec_dtype
from edge_runtime.manifest import DTYPES, TensorSpec

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=16)
specs_st = st.lists(
    st.builds(TensorSpec, st.sampled_from(["x", "ids", "text"]), st.sampled_from(DTYPES),
              st.lists(st.integers(1, 3) | st.just("batch"), max_size=3).map(tuple)),
    min_size=1, max_size=3, unique_by=lambda s: s.name).map(tuple)


def _value(draw: Any, spec: TensorSpec, rows: int | None) -> Any:
    """A well-formed value of ``spec`` (a batch of ``rows`` or, when None, one instance)."""
    dims = [rows] if rows is not None else []
    dims += [d if isinstance(d, int) else 2 for d in spec.shape[1:]]
    dtype = spec_dtype(spec.dtype)
    count = math.prod(dims)
    if dtype.kind == "O":
        flat = draw(st.lists(st.text(max_size=4), min_size=count, max_size=count))
    elif dtype.kind == "b":
        flat = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    elif dtype.kind == "f":
        flat = draw(st.lists(st.floats(-100, 100, width=16), min_size=count, max_size=count))
    else:
        info = np.iinfo(dtype)
        flat = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=count,
                             max_size=count))
    arr = np.empty(count, dtype=object)
    arr[:] = flat
    return arr.reshape(dims).tolist()


@st.composite
def requests(draw: Any) -> tuple[tuple[TensorSpec, ...], Any]:
    specs = draw(specs_st)
    rows = draw(st.integers(1, 3))
    if draw(st.booleans()):  # row format
        if len(specs) == 1 and draw(st.booleans()):
            instances = [_value(draw, specs[0], None) for _ in range(rows)]
        else:
            instances = [{s.name: _value(draw, s, None) for s in specs} for _ in range(rows)]
        doc: Any = {"instances": instances}
    elif len(specs) == 1 and draw(st.booleans()):
        doc = {"inputs": _value(draw, specs[0], rows)}
    else:
        doc = {"inputs": {s.name: _value(draw, s, rows) for s in specs}}
    if draw(st.integers(0, 2)) == 0:  # break it somewhere
        doc = _break(draw, doc)
    return specs, doc


def _break(draw: Any, doc: Any) -> Any:
    if draw(st.booleans()):
        return draw(values)
    key = next(iter(doc))
    body = doc[key]
    if isinstance(body, list) and body:
        body[draw(st.integers(0, len(body) - 1))] = draw(values)
    elif isinstance(body, dict) and body:
        body[draw(st.sampled_from(sorted(body)))] = draw(values)
    if draw(st.booleans()):
        doc["instances" if key == "inputs" else "inputs"] = draw(values)
    return doc


def _checked(specs: tuple[TensorSpec, ...], arrays: dict[str, Any]) -> None:
    assert set(arrays) == {s.name for s in specs}
    for s in specs:
        assert arrays[s.name].dtype == spec_dtype(s.dtype)


@FUZZ
@given(specs_st, st.binary(max_size=200))
def test_any_bytes_decode_or_are_payload_invalid(specs: tuple[TensorSpec, ...],
                                                 body: bytes) -> None:
    for decode in (decode_predict, decode_simple):
        with contextlib.suppress(PayloadInvalid):
            decode(body, specs)


@FUZZ
@given(requests())
def test_any_request_decodes_to_the_spec_dtypes_or_is_payload_invalid(
        case: tuple[tuple[TensorSpec, ...], Any]) -> None:
    specs, doc = case
    body = json.dumps(doc).encode()
    try:
        arrays, fmt = decode_predict(body, specs)
    except PayloadInvalid:
        pass
    else:
        _checked(specs, arrays)
        assert fmt == ("row" if "instances" in doc else "columnar")
    with contextlib.suppress(PayloadInvalid):
        _checked(specs, decode_simple(body, specs))


@FUZZ
@given(specs_st, st.integers(1, 3), st.data())
def test_rows_and_columns_of_the_same_batch_decode_alike(
        specs: tuple[TensorSpec, ...], rows: int, data: st.DataObject) -> None:
    columns = {s.name: _value(data.draw, s, rows) for s in specs}
    instances = [{name: col[i] for name, col in columns.items()} for i in range(rows)]
    by_rows, _ = decode_predict(json.dumps({"instances": instances}).encode(), specs)
    by_cols, _ = decode_predict(json.dumps({"inputs": columns}).encode(), specs)
    for s in specs:
        np.testing.assert_array_equal(by_rows[s.name], by_cols[s.name])
        assert by_rows[s.name].shape[0] == rows


def _deep(levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


HOSTILE = [
    ("deeper than numpy", {"inputs": _deep(70, 1.0)}, "float32"),
    ("deep strings", {"inputs": _deep(70, "a")}, "string"),
    ("ragged", {"instances": [[1, 2], [3]]}, "float32"),
    ("ragged strings", {"instances": [["a", "b"], ["c"]]}, "string"),
    ("strings in strings", {"instances": ["a", ["b"]]}, "string"),
    ("objects", {"instances": [[{"a": 1}]]}, "float32"),
    ("nulls", {"inputs": [None, 1]}, "int64"),
    ("float16 overflow", {"inputs": [1e300]}, "float16"),
    ("float32 overflow", {"inputs": [[1e300, 1]]}, "float32"),
    ("int8 range", {"inputs": [300]}, "int8"),
    ("beyond 64 bits", {"inputs": [2**70]}, "int64"),
    ("floats for ints", {"inputs": [1.5]}, "int32"),
    ("numbers for strings", {"inputs": [1]}, "string"),
    ("mixed", {"instances": [1, {"x": 1}]}, "float32"),
    ("empty", {"instances": []}, "float32"),
]


@pytest.mark.parametrize(("doc", "dtype"), [(d, t) for _, d, t in HOSTILE],
                         ids=[h[0] for h in HOSTILE])
def test_hostile_shapes_and_values_are_payload_invalid(doc: Any, dtype: str) -> None:
    spec = (TensorSpec("x", dtype, ("batch",)),)
    with pytest.raises(PayloadInvalid):
        decode_predict(json.dumps(doc).encode(), spec)
