"""decode_plain (the everyday V2 JSON request) against decode_request (the general decoder):
same inputs and id whenever the plain one accepts, and None whenever the request is anything
else, so the general decoder words the error or handles the extra fields."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from edge_runtime.codecs import decode_plain, decode_request
from edge_runtime.errors import PayloadInvalid


def item(**kw: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.5]} | kw


EVERYDAY = [
    {"inputs": [item()]},
    {"id": "r-1", "inputs": [item()]},
    {"inputs": [item(data=[[1, 2, 3]])]},  # nested lists, integers into FP32
    {"inputs": [item(datatype="INT64", data=[1, 2, 3]), item(name="y", shape=[1],
                                                             datatype="BOOL", data=[True])]},
    {"inputs": [item(shape=[], data=[4.0])]},
    {"inputs": [item(shape=[0, 3], data=[])]},
]
OTHER = [  # valid, but not the everyday form: the general decoder handles them
    {"inputs": [item()], "outputs": [{"name": "y"}]},
    {"inputs": [item()], "parameters": {"binary_data_output": True}},
    {"inputs": [item(parameters={})]},
    {"inputs": [item(datatype="BYTES", shape=[1], data=["a"])]},
    {"inputs": []},  # the model's validation says what is missing
]
INVALID = [  # the general decoder raises, with its message
    {"inputs": [item(shape=[2, 3])]},
    {"inputs": [item(data=["1.0", 2.0, 3.0])]},
    {"inputs": [item(data=[True, False, True])]},
    {"inputs": [item(datatype="INT32", data=[1.5, 2, 3])]},
    {"inputs": [item(shape=[1, -3])]},
    {"inputs": [item(shape=[1, 3.0])]},
    {"inputs": [item(datatype="FP99")]},
    {"inputs": [item(), item()]},
    {"inputs": [item(name="")]},
    {"inputs": {}},
    {"id": 7, "inputs": [item()]},
    {"inputs": [item(data=None)]},
    {"inputs": [item(data=[[1, 2], [3]])]},
    {},
    [],
]


@pytest.mark.parametrize("doc", EVERYDAY)
def test_everyday_requests_decode_the_same_both_ways(doc: Any) -> None:
    body = json.dumps(doc).encode()
    plain = decode_plain(body)
    assert plain is not None
    general = decode_request(body, None)
    rid, inputs = plain
    assert rid == general.id
    assert inputs.keys() == general.inputs.keys()
    for name, arr in inputs.items():
        want = general.inputs[name]
        assert arr.dtype == want.dtype and arr.shape == want.shape
        np.testing.assert_array_equal(arr, want)


@pytest.mark.parametrize("doc", OTHER)
def test_other_valid_requests_are_left_to_the_general_decoder(doc: Any) -> None:
    body = json.dumps(doc).encode()
    assert decode_plain(body) is None
    decode_request(body, None)  # valid


@pytest.mark.parametrize("doc", INVALID)
def test_invalid_requests_are_left_to_the_general_decoder(doc: Any) -> None:
    body = json.dumps(doc).encode()
    assert decode_plain(body) is None
    with pytest.raises(PayloadInvalid):
        decode_request(body, None)


@pytest.mark.parametrize("body", [b"", b"{", b"\xff", b"null", b'"inputs"'])
def test_bodies_that_are_not_a_json_object(body: bytes) -> None:
    assert decode_plain(body) is None
    with pytest.raises(PayloadInvalid):
        decode_request(body, None)


@pytest.mark.parametrize("request_id", [None, "r-7"])
def test_encode_plain_writes_what_encode_response_writes(request_id: str | None) -> None:
    import orjson

    from edge_runtime.codecs import InferRequest, encode_plain, encode_response

    outputs = {"label": np.array([3, 1], np.int64),
               "probabilities": np.arange(6, dtype=np.float32).reshape(2, 3),
               "flag": np.array(True), "half": np.ones((1, 2), np.float16)}
    plain = encode_plain("m", "2", outputs, request_id)
    general, headers = encode_response("m", "2", outputs, InferRequest(None, {}),
                                       request_id=request_id)
    assert plain is not None and orjson.loads(plain) == orjson.loads(general)
    assert headers == {"Content-Type": "application/json"}
    # Not for it: strings, big-endian or strided arrays (encode_response handles them).
    assert encode_plain("m", "2", {"s": np.array(["a"], object)}, None) is None
    assert encode_plain("m", "2", {"b": np.ones(2, ">f4")}, None) is None
    assert encode_plain("m", "2", {"t": np.ones((3, 2), np.float32).T}, None) is None
