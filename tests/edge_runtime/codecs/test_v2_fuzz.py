"""Property tests of the V2 decoders on hostile input: any body gives a request or a
``PayloadInvalid`` (a 400), never another exception; what decodes has the shape and dtype
it declares; the everyday decoder agrees with the general one; binary tensors round-trip,
and every way of breaking their framing is a ``PayloadInvalid``."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_runtime.codecs.datatypes import DATATYPES
from edge_runtime.codecs.v2 import MAX_ID_BYTES, InferRequest, decode_plain, decode_request
from edge_runtime.errors import PayloadInvalid

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=16)
NUMERIC = [d for d in DATATYPES if d != "BYTES"]


def _data_of(draw: Any, datatype: str, count: int) -> list[Any]:
    kind = DATATYPES[datatype].kind
    if kind == "b":
        return draw(st.lists(st.booleans(), min_size=count, max_size=count))
    if kind == "O":
        return draw(st.lists(st.text(max_size=5), min_size=count, max_size=count))
    if kind == "f":
        finite = st.floats(-1e4, 1e4, width=16) | st.floats(allow_nan=False,
                                                             allow_infinity=False)
        return draw(st.lists(finite, min_size=count, max_size=count))  # some overflow FP16
    info = np.iinfo(DATATYPES[datatype])
    return draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=count,
                         max_size=count))


@st.composite
def valid_items(draw: Any, name: str) -> dict[str, Any]:
    datatype = draw(st.sampled_from(list(DATATYPES)))
    shape = draw(st.lists(st.integers(0, 4), max_size=3))
    data = _data_of(draw, datatype, math.prod(shape))
    if draw(st.booleans()) and len(shape) > 1 and math.prod(shape) > 0:
        data = np.asarray(data, dtype=object).reshape(shape).tolist()  # nested, row-major
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


@st.composite
def broken_items(draw: Any) -> Any:
    item = dict(draw(valid_items(draw(st.text(max_size=3)))))
    key = draw(st.sampled_from(["name", "shape", "datatype", "data", "parameters"]))
    if draw(st.booleans()):
        item.pop(key, None)
    else:
        item[key] = draw(values)
    return item


@st.composite
def documents(draw: Any) -> Any:
    names = draw(st.lists(st.text(min_size=1, max_size=3), max_size=3))
    items = [draw(valid_items(n) | broken_items()) for n in names]
    doc: dict[str, Any] = {"inputs": items}
    if draw(st.booleans()):
        doc["id"] = draw(st.text(max_size=8) | scalars)
    if draw(st.integers(0, 4)) == 0:
        doc["outputs"] = draw(st.lists(st.fixed_dictionaries({"name": st.text(max_size=3)}),
                                       max_size=2) | values)
    if draw(st.integers(0, 4)) == 0:
        doc["parameters"] = draw(values)
    if draw(st.integers(0, 6)) == 0:
        return draw(values)  # not even an object with inputs
    return doc


def _decode(body: bytes, header_length: int | None = None) -> InferRequest | None:
    try:
        return decode_request(body, header_length)
    except PayloadInvalid:
        return None


def _check_decoded(req: InferRequest, doc: dict[str, Any]) -> None:
    for item in doc["inputs"]:
        arr = req.inputs[item["name"]]
        assert arr.shape == tuple(item["shape"])
        assert arr.dtype == DATATYPES[item["datatype"]]
        if arr.dtype.kind == "O":
            assert all(isinstance(x, bytes) for x in arr.reshape(-1))


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_are_payload_invalid(body: bytes) -> None:
    _decode(body)
    assert decode_plain(body) is None or _decode(body) is not None


@FUZZ
@given(documents())
def test_any_document_decodes_to_what_it_declares_or_is_payload_invalid(doc: Any) -> None:
    body = json.dumps(doc).encode()  # json, not orjson: integers beyond 64 bits too
    req = _decode(body)
    if req is not None:
        _check_decoded(req, doc)
        assert req.id is None or len(req.id.encode()) <= MAX_ID_BYTES


@FUZZ
@given(documents())
def test_the_everyday_decoder_agrees_with_the_general_one(doc: Any) -> None:
    body = json.dumps(doc).encode()
    plain = decode_plain(body)
    if plain is None:
        return  # declined: the general decoder answers (or words the error)
    req = decode_request(body, None)
    rid, inputs = plain
    assert rid == req.id and inputs.keys() == req.inputs.keys()
    for name, arr in inputs.items():
        assert arr.dtype == req.inputs[name].dtype
        np.testing.assert_array_equal(arr, req.inputs[name])


@FUZZ
@given(st.text(min_size=MAX_ID_BYTES - 8, max_size=MAX_ID_BYTES + 8))
def test_request_ids_are_bounded_in_bytes(rid: str) -> None:
    doc = {"id": rid, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                  "data": [1.0]}]}
    body = json.dumps(doc).encode()
    req = _decode(body)
    fits = len(rid.encode()) <= MAX_ID_BYTES
    assert (req is not None) == fits
    assert (decode_plain(body) is not None) == fits
    if not fits:
        try:
            decode_request(body, None)
        except PayloadInvalid as exc:
            assert f"at most {MAX_ID_BYTES} bytes" in str(exc)


# -- binary tensors ---------------------------------------------------------------------------
@st.composite
def binary_tensors(draw: Any) -> tuple[str, np.ndarray]:
    datatype = draw(st.sampled_from(list(DATATYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    if datatype == "BYTES":
        flat = draw(st.lists(st.binary(max_size=6), min_size=math.prod(shape),
                             max_size=math.prod(shape)))
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return datatype, arr.reshape(shape)
    dtype = DATATYPES[datatype]
    return datatype, draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(
        dtype, allow_nan=False) if dtype.kind == "f" else None))


def _raw(datatype: str, arr: np.ndarray) -> bytes:
    if datatype != "BYTES":
        return arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    return b"".join(len(x).to_bytes(4, "little") + x for x in arr.flat)


def _binary_body(tensors: list[tuple[str, np.ndarray]]) -> tuple[bytes, bytes, list[int]]:
    raws = [_raw(dt, a) for dt, a in tensors]
    header = json.dumps({"inputs": [
        {"name": f"in{i}", "shape": list(a.shape), "datatype": dt,
         "parameters": {"binary_data_size": len(raw)}}
        for i, ((dt, a), raw) in enumerate(zip(tensors, raws, strict=True))]}).encode()
    return header, b"".join(raws), [len(r) for r in raws]


@FUZZ
@given(st.lists(binary_tensors(), min_size=1, max_size=3), st.integers(0, 63))
def test_binary_tensors_round_trip_at_any_offset(tensors: list[tuple[str, np.ndarray]],
                                                 pad: int) -> None:
    header, tail, _ = _binary_body(tensors)
    header += b" " * pad  # moves the tensors off alignment: they are copied, not misread
    req = decode_request(header + tail, len(header))
    for i, (datatype, arr) in enumerate(tensors):
        got = req.inputs[f"in{i}"]
        assert got.shape == arr.shape and got.dtype == DATATYPES[datatype]
        np.testing.assert_array_equal(got, arr)
        assert got.dtype.kind == "O" or got.flags.aligned


@FUZZ
@given(st.lists(binary_tensors(), min_size=1, max_size=3), st.data())
def test_broken_binary_framing_is_payload_invalid(tensors: list[tuple[str, np.ndarray]],
                                                  data: st.DataObject) -> None:
    header, tail, sizes = _binary_body(tensors)
    how = data.draw(st.sampled_from(["header_length", "truncate", "append", "size", "flip"]))
    hlen: int | None = len(header)
    body = header + tail
    if how == "header_length":
        hlen = data.draw(st.integers(-5, len(body) + 5).filter(lambda n: n != len(header))
                         | st.none())
    elif how == "truncate":
        assume(tail)
        body = body[:data.draw(st.integers(0, len(body) - 1))]
    elif how == "append":
        body += data.draw(st.binary(min_size=1, max_size=9))
    elif how == "size":
        i = data.draw(st.integers(0, len(sizes) - 1))
        doc = json.loads(header)
        doc["inputs"][i]["parameters"]["binary_data_size"] = data.draw(
            (st.integers(-3, sizes[i] + 9) | values).filter(lambda v: v != sizes[i]))
        header = json.dumps(doc).encode()
        body, hlen = header + tail, len(header)
    else:  # any bytes of the tensor data: BYTES length prefixes may now lie
        assume(tail)
        pos = len(header) + data.draw(st.integers(0, len(tail) - 1))
        body = body[:pos] + bytes([body[pos] ^ data.draw(st.integers(1, 255))]) + body[pos + 1:]
    req = _decode(body, hlen)  # a flipped number, or a header length landing on blanks,
    if how in ("truncate", "append", "size"):  # may still decode; never another error
        assert req is None
