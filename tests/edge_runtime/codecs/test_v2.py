"""V2 codec on hand-built bodies: every malformation, output selection, metadata, dtype maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest

from edge_runtime.codecs import v2
from edge_runtime.codecs.v2 import HEADER_LENGTH, InferRequest, decode_request, encode_response
from edge_runtime.errors import InputInvalid, PayloadInvalid
from edge_runtime.manifest import TensorSpec


def body(doc: Any, tail: bytes = b"") -> tuple[bytes, int | None]:
    header = orjson.dumps(doc)
    return header + tail, (len(header) if tail else None)


def inp(name: str = "x", shape: Any = (2,), datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    return {"name": name, "shape": list(shape), "datatype": datatype, **extra}


def binp(size: Any, **kw: Any) -> dict[str, Any]:
    return inp(**kw, parameters={"binary_data_size": size})


def lp(*items: bytes) -> bytes:
    """BYTES binary data: each item as 4-byte little-endian length + bytes."""
    return b"".join(len(i).to_bytes(4, "little") + i for i in items)


@dataclass(frozen=True)
class Bad:
    id: str
    body: bytes
    header_length: int | None
    error: type[PayloadInvalid]
    phrase: str


def bad(id: str, doc: Any, phrase: str, *, tail: bytes = b"", hl: Any = "auto",
        error: type[PayloadInvalid] = InputInvalid) -> Bad:
    raw, length = body(doc, tail)
    return Bad(id, raw, length if hl == "auto" else hl, error, phrase)


def raw(id: str, data: bytes, phrase: str, hl: int | None = None) -> Bad:
    return Bad(id, data, hl, PayloadInvalid, phrase)


F8 = np.arange(2, dtype=np.float32).tobytes()
BAD = [
    raw("bad_json", b'{"inputs": [', "not valid JSON"),
    raw("not_utf8", b'{"id": "\xff"}', "not valid JSON"),
    raw("header_not_json", b'{"inputs": []}xx', "JSON header is not valid JSON", hl=15),
    raw("not_an_object", b"[1, 2]", "must be a JSON object"),
    raw("missing_inputs", b'{"id": "a"}', 'no "inputs"'),
    raw("inputs_not_list", b'{"inputs": {"x": 1}}', '"inputs" must be a list'),
    raw("id_not_string", b'{"id": 7, "inputs": []}', '"id" must be a string'),
    raw("parameters_not_object", b'{"inputs": [], "parameters": []}', "must be an object"),
    raw("binary_default_not_bool", b'{"inputs": [], "parameters": {"binary_data_output": 1}}',
        "binary_data_output must be true or false"),
    raw("header_longer_than_body", b'{"inputs": []}', "is larger than the 14 byte body", hl=15),
    raw("header_negative", b'{"inputs": []}', "is negative", hl=-1),
    bad("input_not_object", {"inputs": [5]}, 'inputs[0] has no "name"', error=PayloadInvalid),
    bad("missing_name", {"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]},
        'inputs[0] has no "name"', error=PayloadInvalid),
    bad("missing_shape", {"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]},
        'has no "shape"'),
    bad("missing_datatype", {"inputs": [{"name": "x", "shape": [1], "data": [1]}]},
        'has no "datatype"'),
    bad("unknown_datatype", {"inputs": [inp(datatype="FP8", data=[1, 2])]},
        "unknown datatype 'FP8'"),
    bad("negative_dim", {"inputs": [inp(shape=[-1, 2], data=[1, 2])]}, "negative dimension"),
    bad("shape_not_ints", {"inputs": [inp(shape=["batch"], data=[1])]}, "list of integers"),
    bad("shape_bool", {"inputs": [inp(shape=[True], data=[1])]}, "list of integers"),
    bad("count_mismatch", {"inputs": [inp(shape=[2, 2], data=[1, 2, 3])]},
        "data has 3 elements but shape [2, 2] needs 4"),
    bad("nested_count_mismatch", {"inputs": [inp(shape=[3], data=[[1, 2], [3, 4]])]},
        "data has 4 elements but shape [3] needs 3"),
    bad("no_data", {"inputs": [inp()]}, 'has neither "data" nor parameters.binary_data_size'),
    bad("data_not_list", {"inputs": [inp(shape=[], data=1.0)]}, '"data" must be a list'),
    bad("ragged_data", {"inputs": [inp(shape=[3], data=[[1, 2], [3]])]}, "ragged"),
    bad("float_for_int", {"inputs": [inp(datatype="INT64", data=[1.5, 2])]},
        "floating-point values in data cannot be int64"),
    bad("int_out_of_range", {"inputs": [inp(datatype="INT8", data=[1, 300])]},
        "value 300 in data is out of range for int8"),
    bad("negative_uint", {"inputs": [inp(datatype="UINT8", data=[-1, 3])]}, "out of range"),
    bad("strings_for_float", {"inputs": [inp(data=["a", "b"])]}, "string values"),
    bad("null_in_data", {"inputs": [inp(data=[1.0, None])]}, "not numbers"),
    bad("int_for_bool", {"inputs": [inp(datatype="BOOL", data=[1, 0])]},
        "integer values in data cannot be bool"),
    bad("numbers_for_bytes", {"inputs": [inp(datatype="BYTES", data=[1, 2])]}, "must be strings"),
    bad("duplicate_input", {"inputs": [inp(data=[1, 2]), inp(data=[3, 4])]},
        "appears more than once"),
    bad("shared_memory", {"inputs": [inp(parameters={"shared_memory_region": "r"})]},
        "shared memory"),
    bad("input_parameters_not_object", {"inputs": [inp(data=[1, 2], parameters=3)]},
        "parameters of input 'x' must be an object", error=PayloadInvalid),
    bad("binary_and_data", {"inputs": [binp(8, data=[1, 2])]}, "has both", tail=F8),
    bad("binary_size_negative", {"inputs": [binp(-8)]}, "integer >= 0", tail=F8),
    bad("binary_size_string", {"inputs": [binp("8")]}, "integer >= 0", tail=F8),
    bad("binary_truncated", {"inputs": [binp(8, name="a"), binp(8)]},
        "binary_data_size is 8 but the body is truncated: only 4 bytes are left",
        tail=F8 + F8[:4]),
    bad("binary_without_header", {"inputs": [binp(8)]},
        f"no {HEADER_LENGTH} header was sent", hl=None),
    bad("binary_extra_bytes", {"inputs": [binp(8)]},
        "4 extra bytes after the JSON header", tail=F8 + b"\0\0\0\0", error=PayloadInvalid),
    bad("extra_bytes_without_binary_inputs", {"inputs": [inp(data=[1, 2])]},
        "8 extra bytes", tail=F8, error=PayloadInvalid),
    bad("binary_size_not_dtype_multiple", {"inputs": [binp(8, shape=[3])]},
        "binary_data_size is 8 bytes but FP32 [3] needs 12", tail=F8),
    bad("bytes_cannot_hold", {"inputs": [binp(4, shape=[2], datatype="BYTES")]},
        "4 bytes cannot hold 2 BYTES elements", tail=b"\0\0\0\0"),
    bad("bytes_element_overruns", {"inputs": [binp(7, shape=[1], datatype="BYTES")]},
        "BYTES element 0 of 5 bytes overruns", tail=lp(b"abcde")[:7]),
    bad("bytes_too_few", {"inputs": [binp(10, shape=[2], datatype="BYTES")]},
        "BYTES data ends after 1 of 2 elements", tail=lp(b"abcdef")),
    bad("bytes_left_over", {"inputs": [binp(11, shape=[1], datatype="BYTES")]},
        "1 bytes are left after the 1 BYTES elements", tail=lp(b"abcdef") + b"!"),
    bad("outputs_not_list", {"inputs": [], "outputs": {"y": 1}}, '"outputs" must be a list',
        error=PayloadInvalid),
    bad("output_without_name", {"inputs": [], "outputs": [{"parameters": {}}]},
        'outputs[0] has no "name"', error=PayloadInvalid),
    bad("output_twice", {"inputs": [], "outputs": [{"name": "y"}, {"name": "y"}]},
        "requested more than once", error=PayloadInvalid),
    bad("classification", {"inputs": [], "outputs": [
        {"name": "y", "parameters": {"classification": 3}}]}, "not supported",
        error=PayloadInvalid),
    bad("binary_data_not_bool", {"inputs": [], "outputs": [
        {"name": "y", "parameters": {"binary_data": "yes"}}]},
        "binary_data must be true or false", error=PayloadInvalid),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_requests(case: Bad) -> None:
    with pytest.raises(PayloadInvalid) as info:
        decode_request(case.body, case.header_length)
    assert type(info.value) is case.error
    assert case.phrase in str(info.value)
    if isinstance(info.value, InputInvalid):
        assert info.value.input_name == "x"


def test_json_and_binary_inputs_in_one_body() -> None:
    ints = np.array([[1, -2], [3, 4]], dtype=np.int64)
    doc = {"id": "r", "parameters": {"note": 1}, "inputs": [
        binp(8, name="a"),
        inp(name="b", shape=[2, 2], datatype="INT64", data=[[1, 2], [3, 4]]),
        binp(15, name="c", shape=[2, 1], datatype="BYTES"),
        binp(32, name="d", shape=[2, 2], datatype="INT64"),
        inp(name="e", shape=[0, 3], data=[]),
    ]}
    req = decode_request(*body(doc, F8 + lp(b"hi", b"there") + ints.tobytes()))
    assert req.id == "r" and req.parameters == {"note": 1}
    assert list(req.inputs) == ["a", "b", "c", "d", "e"]
    np.testing.assert_array_equal(req.inputs["a"], [0.0, 1.0])
    assert req.inputs["b"].dtype == np.int64 and req.inputs["b"].shape == (2, 2)
    assert req.inputs["c"].tolist() == [[b"hi"], [b"there"]]
    np.testing.assert_array_equal(req.inputs["d"], ints)
    assert req.inputs["e"].shape == (0, 3) and req.inputs["e"].dtype == np.float32
    assert req.requested_outputs is None and not req.binary_default


def test_json_numbers_are_cast_to_the_datatype() -> None:
    doc = {"inputs": [inp(data=[1, 2.5]), inp(name="i", datatype="INT8", data=[-128, 127]),
                      inp(name="s", shape=[1], datatype="BYTES", data=["é"]),
                      inp(name="u", shape=[1], datatype="UINT64", data=[2**64 - 1])]}
    req = decode_request(*body(doc))
    assert req.inputs["x"].dtype == np.float32
    assert req.inputs["i"].dtype == np.int8
    assert req.inputs["s"][0] == "é".encode()
    assert req.inputs["u"][0] == 2**64 - 1


def test_aligned_binary_input_is_a_view_of_the_body() -> None:
    header = orjson.dumps({"inputs": [binp(8)]})
    header += b" " * (-len(header) % 8)
    aligned = decode_request(header + F8, len(header)).inputs["x"]
    assert not aligned.flags.owndata and not aligned.flags.writeable
    unaligned = decode_request(header + b" " + F8, len(header) + 1).inputs["x"]
    assert unaligned.flags.aligned
    np.testing.assert_array_equal(aligned, unaligned)


def test_empty_outputs_list_means_all() -> None:
    req = decode_request(*body({"inputs": [], "outputs": []}))
    assert req.requested_outputs is None


@pytest.mark.parametrize(
    ("binary_default", "params", "binary"),
    [
        (False, {}, False),
        (True, {}, True),
        (True, {"binary_data": False}, False),
        (False, {"binary_data": True}, True),
    ],
)
def test_binary_output_resolution(binary_default: bool, params: dict[str, Any],
                                  binary: bool) -> None:
    doc = {"inputs": [], "parameters": {"binary_data_output": binary_default},
           "outputs": [{"name": "y", "parameters": params}]}
    req = decode_request(*body(doc))
    assert req.binary_default is binary_default
    assert req.is_binary("y") is binary
    _, headers = encode_response("m", "1", {"y": np.ones(2, np.float32)}, req, request_id=None)
    assert (HEADER_LENGTH in headers) is binary


OUT = {"y": np.array([[1.5, 2.0]], np.float32), "z": np.array([True, False]),
       "t": np.array(["a", "b"], dtype=object)}


def test_encode_json_response() -> None:
    req = InferRequest(id=None, inputs={})
    raw_body, headers = encode_response("m", "2", OUT, req, request_id="abc")
    assert headers == {"Content-Type": "application/json"}
    assert orjson.loads(raw_body) == {
        "model_name": "m", "model_version": "2", "id": "abc", "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.0]},
            {"name": "z", "datatype": "BOOL", "shape": [2], "data": [True, False]},
            {"name": "t", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
        ]}


def test_encode_respects_requested_outputs_and_binary() -> None:
    req = InferRequest(id=None, inputs={}, requested_outputs=["t", "y"], binary_outputs={"t"})
    raw_body, headers = encode_response("m", "1", OUT, req, request_id=None)
    length = int(headers[HEADER_LENGTH])
    assert headers["Content-Type"] == "application/octet-stream"
    doc = orjson.loads(raw_body[:length])
    assert "id" not in doc
    assert [o["name"] for o in doc["outputs"]] == ["t", "y"]
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 10}
    assert raw_body[length:] == lp(b"a", b"b")


def test_encode_big_endian_and_non_contiguous_outputs() -> None:
    big = np.arange(6, dtype=">f4").reshape(2, 3)[:, ::2]
    for binary in (False, True):
        req = InferRequest(id=None, inputs={}, binary_default=binary)
        raw_body, headers = encode_response("m", "1", {"y": big}, req, request_id=None)
        length = int(headers.get(HEADER_LENGTH, len(raw_body)))
        doc = orjson.loads(raw_body[:length])["outputs"][0]
        data = np.frombuffer(raw_body[length:], "<f4") if binary else np.array(doc["data"])
        np.testing.assert_array_equal(data.reshape(doc["shape"]), big)


@pytest.mark.parametrize(
    ("outputs", "req", "phrase"),
    [
        (OUT, InferRequest(id=None, inputs={}, requested_outputs=["nope"]),
         "requested output 'nope' is not an output of this model"),
        ({"c": np.zeros(2, np.complex64)}, InferRequest(id=None, inputs={}),
         "numpy dtype complex64 has no V2 datatype"),
        ({"t": np.array([b"\xff"], dtype=object)}, InferRequest(id=None, inputs={}),
         "not UTF-8"),
    ],
)
def test_encode_errors(outputs: dict[str, Any], req: InferRequest, phrase: str) -> None:
    with pytest.raises(PayloadInvalid, match=phrase):
        encode_response("m", "1", outputs, req, request_id=None)


def test_check_outputs_before_inference() -> None:
    req = InferRequest(id=None, inputs={}, requested_outputs=["y"])
    v2.check_outputs(req, ["y", "z"])
    with pytest.raises(PayloadInvalid, match="'y' is not an output"):
        v2.check_outputs(req, ["z"])


def test_model_metadata() -> None:
    specs_in = (TensorSpec("x", "float32", ("batch", 4)), TensorSpec("s", "string", ("n",)))
    specs_out = (TensorSpec("y", "int64", ("batch",)),)
    assert v2.model_metadata("m", ["1", "2"], "onnxruntime_onnx", specs_in, specs_out) == {
        "name": "m", "versions": ["1", "2"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]},
                   {"name": "s", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
    }
