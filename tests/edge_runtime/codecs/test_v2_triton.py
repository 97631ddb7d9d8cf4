"""V2 codec against the real tritonclient: its request bodies decode, our responses parse."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from edge_runtime.codecs.v2 import HEADER_LENGTH, decode_request, encode_response

http = pytest.importorskip("tritonclient.http")
triton_utils = pytest.importorskip("tritonclient.utils")
Client = http.InferenceServerClient

ARRAYS: dict[str, NDArray[Any]] = {
    "FP32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "FP16": np.array([[0.5, -1.25, 65504.0]], dtype=np.float16),
    "FP64": np.array([1e-300, np.pi]),
    "INT64": np.array([[-(2**62), 0], [7, 2**62]], dtype=np.int64),
    "INT8": np.array([-128, 0, 127], dtype=np.int8),
    "UINT8": np.arange(256, dtype=np.uint8).reshape(16, 16),
    "BOOL": np.array([[True, False, True]]),
    "BYTES": np.array([[b"alpha"], [b""], ["caf\u00e9".encode()]], dtype=object),
    "EMPTY": np.zeros((0, 4), dtype=np.float32),
}
# Text-only JSON cannot carry arbitrary bytes, so the JSON variant uses UTF-8 strings only.
RAW = np.array([b"\x00\xff", b"zero\x00"], dtype=object)


def infer_input(name: str, arr: np.ndarray[Any, Any], binary: bool) -> Any:
    dt = triton_utils.np_to_triton_dtype(arr.dtype)
    return http.InferInput(name, list(arr.shape), dt).set_data_from_numpy(arr, binary_data=binary)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("name", list(ARRAYS))
def test_triton_request_round_trip(name: str, binary: bool) -> None:
    arr = ARRAYS[name]
    body, header_length = Client.generate_request_body(
        [infer_input(name, arr, binary)], request_id="req-1")
    assert (header_length is not None) is binary
    req = decode_request(body, header_length)
    assert req.id == "req-1"
    got = req.inputs[name]
    assert got.shape == arr.shape and got.dtype == arr.dtype
    np.testing.assert_array_equal(got, arr)
    # tritonclient asks for all outputs in binary when none are named.
    assert req.requested_outputs is None and req.binary_default


def test_triton_raw_bytes_and_mixed_inputs() -> None:
    raw = RAW
    inputs = [
        infer_input("FP32", ARRAYS["FP32"], True),
        infer_input("INT64", ARRAYS["INT64"], False),
        infer_input("raw", raw, True),
        infer_input("BOOL", ARRAYS["BOOL"], True),
    ]
    outputs = [http.InferRequestedOutput("a", binary_data=True),
               http.InferRequestedOutput("b", binary_data=False)]
    body, header_length = Client.generate_request_body(inputs, outputs=outputs)
    req = decode_request(body, header_length)
    assert req.id is None
    assert list(req.inputs) == ["FP32", "INT64", "raw", "BOOL"]
    assert req.inputs["raw"].tolist() == raw.tolist()
    np.testing.assert_array_equal(req.inputs["BOOL"], ARRAYS["BOOL"])
    assert req.requested_outputs == ["a", "b"] and req.binary_outputs == {"a"}


def parse(body: bytes, headers: dict[str, str]) -> Any:
    length = headers.get(HEADER_LENGTH)
    return Client.parse_response_body(
        body, verbose=False, header_length=None if length is None else int(length),
        content_encoding=None)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_triton_parses_our_responses(binary: bool) -> None:
    names = list(ARRAYS)
    outputs = [http.InferRequestedOutput(n, binary_data=binary) for n in names]
    body, header_length = Client.generate_request_body(
        [infer_input("FP32", ARRAYS["FP32"], True)], outputs=outputs, request_id="r9")
    req = decode_request(body, header_length)
    out_body, headers = encode_response("model", "3", ARRAYS, req, request_id=req.id)
    assert headers["Content-Type"] == (
        "application/octet-stream" if binary else "application/json")
    result = parse(out_body, headers)
    response = result.get_response()
    assert response["model_name"] == "model" and response["id"] == "r9"
    for name in names:
        got, want = result.as_numpy(name), ARRAYS[name]
        assert got.shape == want.shape, name
        if want.dtype == object and not binary:
            want = np.array([x.decode() for x in want.flat], dtype=object).reshape(want.shape)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype


def test_triton_default_outputs_are_binary() -> None:
    body, header_length = Client.generate_request_body(
        [infer_input("INT8", ARRAYS["INT8"], False)])
    req = decode_request(body, header_length)
    out = {"y": ARRAYS["FP16"], "raw": RAW}
    out_body, headers = encode_response("m", "1", out, req, request_id=None)
    assert HEADER_LENGTH in headers
    result = parse(out_body, headers)
    np.testing.assert_array_equal(result.as_numpy("y"), ARRAYS["FP16"])
    assert result.as_numpy("raw").tolist() == RAW.tolist()
