"""KServe V2 / Open Inference Protocol REST, with Triton's binary tensor data extension.

A request body is a JSON header, optionally followed by raw tensor bytes; the HTTP header
``Inference-Header-Content-Length`` says where the JSON ends. An input either carries ``data``
(a flat or nested list, row-major) or ``parameters.binary_data_size``: that many bytes, taken from
after the header in input order. Numbers are little-endian; a BYTES tensor is each element as a
4-byte little-endian length then its bytes.

Decoded BYTES inputs are object arrays of ``bytes`` whichever way they came. Numeric inputs sent
as binary are read-only views of the body, or an aligned copy when their offset is unaligned
(unaligned loads fault on some ARM cores). Per-input problems raise ``InputInvalid`` (a
``PayloadInvalid`` carrying the input name); whole-request problems raise ``PayloadInvalid``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from edge_runtime.codecs._binary import pack, unpack_bytes
from edge_runtime.codecs._json import dumps, loads, texts, to_array
from edge_runtime.codecs.datatypes import (
    DATATYPES,
    datatype_of,
    datatype_of_manifest,
    dtype_of,
)
from edge_runtime.errors import InputInvalid, PayloadInvalid
from edge_runtime.manifest import TensorSpec

__all__ = [
    "HEADER_LENGTH",
    "MAX_ID_BYTES",
    "InferRequest",
    "check_outputs",
    "datatype_of",
    "decode_plain",
    "decode_request",
    "dtype_of",
    "encode_plain",
    "encode_response",
    "model_metadata",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_ID_BYTES = 256  # a request id is remembered for label feedback: its size is bounded


@dataclass(frozen=True, eq=False)
class InferRequest:
    """A decoded inference request.

    ``binary_outputs`` is resolved at decode time: a requested output without its own
    ``binary_data`` parameter is in it when the request-level ``binary_data_output`` is true.
    ``binary_default`` then only matters when no outputs are named (all outputs are returned).
    Compared by identity: the inputs are arrays.
    """

    id: str | None
    inputs: dict[str, NDArray[Any]]
    requested_outputs: list[str] | None = None
    binary_outputs: set[str] = field(default_factory=set)
    binary_default: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)

    def is_binary(self, output: str) -> bool:
        """Whether ``output`` goes after the JSON as raw bytes in the response."""
        if output in self.binary_outputs:
            return True
        return self.binary_default and self.requested_outputs is None


def decode_request(body: bytes | memoryview, header_length: int | None) -> InferRequest:
    """Decode a V2 infer request; ``header_length`` is the Inference-Header-Content-Length."""
    header, tail = _split(body, header_length)
    doc = loads(header, "the body" if header_length is None else "the JSON header")
    if not isinstance(doc, dict):
        raise PayloadInvalid("the request must be a JSON object")
    rid = doc.get("id")
    if rid is not None:
        if not isinstance(rid, str):
            raise PayloadInvalid('"id" must be a string')
        if _too_long(rid):
            raise PayloadInvalid(f'"id" is {len(rid.encode())} bytes long: request ids are '
                                 f"at most {MAX_ID_BYTES} bytes")
    params = _parameters(doc, "the request")
    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise PayloadInvalid("parameters.binary_data_output must be true or false")
    inputs = _decode_inputs(doc.get("inputs"), tail, header_length is None)
    requested, binary = _requested_outputs(doc.get("outputs"), binary_default)
    return InferRequest(rid, inputs, requested, binary, binary_default, params)


def _too_long(rid: str) -> bool:
    return len(rid) > MAX_ID_BYTES // 4 and len(rid.encode()) > MAX_ID_BYTES


_PLAIN_KEYS = {"name", "shape", "datatype", "data"}


def decode_plain(body: bytes | memoryview) -> tuple[str | None, dict[str, NDArray[Any]]] | None:
    """(id, inputs) of a V2 JSON request in its everyday form, else None.

    Everyday: a JSON object with ``inputs`` (and maybe a string ``id``) and nothing else, each
    input exactly ``name``, ``shape``, ``datatype`` (numeric) and ``data`` whose size fits the
    shape. That is what most clients send, and it decodes with a few checks instead of
    ``decode_request``'s general walk. None means "not everyday or not valid": the caller then
    runs ``decode_request``, which accepts the rest and words every error, so both give the
    same answer on every body (tests/edge_runtime/codecs/test_v2_plain.py).
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    items = doc.get("inputs")
    rid = doc.get("id")
    if len(doc) != (1 if rid is None else 2) or type(items) is not list or not items or (
            rid is not None and (type(rid) is not str or _too_long(rid))):
        return None
    inputs: dict[str, NDArray[Any]] = {}
    for item in items:
        if type(item) is not dict or item.keys() != _PLAIN_KEYS:
            return None
        name, shape, data, datatype = item["name"], item["shape"], item["data"], item["datatype"]
        dtype = DATATYPES.get(datatype) if type(datatype) is str else None
        if (type(name) is not str or not name or name in inputs or type(shape) is not list
                or type(data) is not list or dtype is None or dtype.kind == "O"):
            return None
        count = 1
        for d in shape:
            if type(d) is not int or d < 0:
                return None
            count *= d
        try:
            arr = to_array(data, dtype, name)
        except InputInvalid:
            return None
        if arr.size != count:
            return None
        inputs[name] = arr.reshape(shape)
    return rid, inputs


_JSON_NUMBERS = {dtype: name for name, dtype in DATATYPES.items() if dtype.kind != "O"}


def encode_plain(model_name: str, model_version: str, outputs: Mapping[str, NDArray[Any]],
                 request_id: str | None) -> bytes | None:
    """``encode_response`` for an everyday request (every output as JSON) when every output is
    a C-contiguous native numeric array, as backends return them; else None."""
    entries = []
    for name, arr in outputs.items():
        datatype = _JSON_NUMBERS.get(arr.dtype)
        if datatype is None or not arr.flags.c_contiguous:
            return None
        entries.append({"name": name, "datatype": datatype, "shape": list(arr.shape),
                        "data": arr.reshape(-1)})
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = entries
    return dumps(doc)


_NO_TAIL = memoryview(b"")


def _split(body: bytes | memoryview, header_length: int | None
           ) -> tuple[bytes | memoryview, memoryview]:
    if header_length is None:
        return body, _NO_TAIL
    view = memoryview(body)
    if header_length < 0:
        raise PayloadInvalid(f"{HEADER_LENGTH} {header_length} is negative")
    if header_length > len(body):
        raise PayloadInvalid(
            f"{HEADER_LENGTH} {header_length} is larger than the {len(body)} byte body")
    return view[:header_length], view[header_length:]


def _parameters(doc: dict[str, Any], what: str) -> dict[str, Any]:
    params = doc.get("parameters", {})
    if not isinstance(params, dict):
        raise PayloadInvalid(f"parameters of {what} must be an object")
    return params


def _input_parameters(item: dict[str, Any], name: str) -> dict[str, Any]:
    if "parameters" not in item:
        return {}
    return _parameters(item, f"input {name!r}")  # the message is formatted only when needed


def _decode_inputs(items: Any, tail: memoryview, no_header: bool) -> dict[str, NDArray[Any]]:
    if items is None:
        raise PayloadInvalid('the request has no "inputs"')
    if not isinstance(items, list):
        raise PayloadInvalid('"inputs" must be a list')
    inputs: dict[str, NDArray[Any]] = {}
    offset = 0
    for index, item in enumerate(items):
        name, arr, offset = _decode_input(item, index, tail, offset, no_header)
        if name in inputs:
            raise InputInvalid(name, 'appears more than once in "inputs"')
        inputs[name] = arr
    if offset != len(tail):
        raise PayloadInvalid(
            f"{len(tail) - offset} extra bytes after the JSON header: the inputs' "
            f"binary_data_size values add up to {offset} of {len(tail)}")
    return inputs


def _decode_input(
    item: Any, index: int, tail: memoryview, offset: int, no_header: bool
) -> tuple[str, NDArray[Any], int]:
    name = item.get("name") if isinstance(item, dict) else None
    if not isinstance(name, str) or not name:
        raise PayloadInvalid(f'inputs[{index}] has no "name"')
    shape = _shape(name, item.get("shape"))
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise InputInvalid(name, 'has no "datatype"')
    if datatype not in DATATYPES:
        raise InputInvalid(name, f"unknown datatype {datatype!r} ({', '.join(DATATYPES)})")
    params = _input_parameters(item, name)
    if "shared_memory_region" in params:
        raise InputInvalid(name, "shared memory inputs are not supported")
    size = params.get("binary_data_size")
    if size is None:
        return name, _json_tensor(name, item.get("data"), datatype, shape), offset
    if "data" in item:
        raise InputInvalid(name, 'has both "data" and parameters.binary_data_size')
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InputInvalid(name, "parameters.binary_data_size must be an integer >= 0")
    end = offset + size
    if end > len(tail):
        hint = f" (no {HEADER_LENGTH} header was sent)" if no_header else ""
        raise InputInvalid(name, f"binary_data_size is {size} but the body is truncated: "
                           f"only {len(tail) - offset} bytes are left{hint}")
    return name, _binary_tensor(name, tail[offset:end], datatype, shape), end


def _shape(name: str, raw: Any) -> tuple[int, ...]:
    if raw is None:
        raise InputInvalid(name, 'has no "shape"')
    if not isinstance(raw, list):
        raise InputInvalid(name, '"shape" must be a list of integers')
    negative = False
    for d in raw:  # a plain loop: this runs on every request
        if type(d) is not int:  # orjson gives exact types: this excludes bool and float
            raise InputInvalid(name, '"shape" must be a list of integers')
        if d < 0:
            negative = True
    if negative:
        raise InputInvalid(name, f"shape {raw} has a negative dimension")
    return tuple(raw)


def _json_tensor(name: str, data: Any, datatype: str, shape: tuple[int, ...]) -> NDArray[Any]:
    if data is None:
        raise InputInvalid(name, 'has neither "data" nor parameters.binary_data_size')
    if not isinstance(data, list):
        raise InputInvalid(name, '"data" must be a list')
    dtype = DATATYPES[datatype]
    arr = to_array(data, dtype, name)
    count = math.prod(shape)
    if arr.size != count:
        raise InputInvalid(
            name, f"data has {arr.size} elements but shape {list(shape)} needs {count}")
    if dtype.kind == "O":
        encoded = np.empty(count, dtype=object)
        encoded[:] = [s.encode() for s in arr.reshape(-1)]
        arr = encoded
    return arr.reshape(shape)


def _binary_tensor(
    name: str, buf: memoryview, datatype: str, shape: tuple[int, ...]
) -> NDArray[Any]:
    dtype = DATATYPES[datatype]
    count = math.prod(shape)
    if dtype.kind == "O":
        return unpack_bytes(name, buf, count).reshape(shape)
    need = count * dtype.itemsize
    if len(buf) != need:
        raise InputInvalid(name, f"binary_data_size is {len(buf)} bytes but {datatype} "
                           f"{list(shape)} needs {need}")
    arr = np.frombuffer(buf, dtype=dtype.newbyteorder("<"))
    if not arr.flags.aligned:
        arr = arr.copy()
    return arr.reshape(shape)


def _requested_outputs(raw: Any, binary_default: bool) -> tuple[list[str] | None, set[str]]:
    if raw is None or raw == []:
        return None, set()
    if not isinstance(raw, list):
        raise PayloadInvalid('"outputs" must be a list')
    names: list[str] = []
    binary: set[str] = set()
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            raise PayloadInvalid(f'outputs[{index}] has no "name"')
        if name in names:
            raise PayloadInvalid(f"output {name!r} is requested more than once")
        params = _parameters(item, f"output {name!r}")
        if "classification" in params or "shared_memory_region" in params:
            raise PayloadInvalid(
                f"output {name!r}: classification and shared memory are not supported")
        flag = params.get("binary_data", binary_default)
        if not isinstance(flag, bool):
            raise PayloadInvalid(f"output {name!r}: parameters.binary_data must be true or false")
        if flag:
            binary.add(name)
        names.append(name)
    return names, binary


def check_outputs(req: InferRequest, outputs: Collection[str]) -> None:
    """Raise ``PayloadInvalid`` if the request names an output the model does not have.

    Call it before inference to fail fast; ``encode_response`` calls it too.
    """
    for name in req.requested_outputs or ():
        if name not in outputs:
            raise PayloadInvalid(
                f"requested output {name!r} is not an output of this model "
                f"(outputs: {', '.join(map(repr, outputs))})")


def encode_response(
    model_name: str,
    model_version: str,
    outputs: Mapping[str, NDArray[Any]],
    req: InferRequest,
    *,
    request_id: str | None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and the HTTP headers to send with it."""
    if req.requested_outputs:
        check_outputs(req, outputs)
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    binary = req.binary_outputs  # req.is_binary(), unrolled: this runs on every request
    all_binary = req.binary_default and req.requested_outputs is None
    for name in req.requested_outputs or outputs:
        arr = outputs[name]
        entry: dict[str, Any] = {
            "name": name, "datatype": datatype_of(arr.dtype), "shape": list(arr.shape)}
        if all_binary or name in binary:
            chunk = pack(arr)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = _json_data(arr, name)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = entries
    header = dumps(doc)
    if not chunks:
        return header, {"Content-Type": "application/json"}
    return b"".join([header, *chunks]), {
        "Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def _json_data(arr: NDArray[Any], name: str) -> Any:
    if arr.dtype.kind in "OSU":
        return texts(arr, name).tolist()
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr).reshape(-1)


def model_metadata(
    name: str,
    versions: Sequence[str],
    platform: str,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
) -> dict[str, Any]:
    """The body of GET /v2/models/{name}; dynamic dimensions are -1."""
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": [_tensor_metadata(s) for s in inputs],
        "outputs": [_tensor_metadata(s) for s in outputs],
    }


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    shape = [d if isinstance(d, int) else -1 for d in spec.shape]
    return {"name": spec.name, "datatype": datatype_of_manifest(spec.dtype), "shape": shape}
