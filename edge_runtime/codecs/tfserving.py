"""TF-Serving REST predict: ``POST /v1/models/{name}:predict``.

Row format ``{"instances": [...]}``: one entry per instance, a plain value for a single-input
model or an object naming each input. Columnar format ``{"inputs": tensor | {name: tensor}}``:
each tensor holds the whole batch. ``signature_name`` is accepted and ignored. The response uses
the request's format: ``{"predictions": [...]}`` (one entry per instance, an object per instance
when there are several outputs) or ``{"outputs": tensor | {name: tensor}}``.

String inputs decode to object arrays of ``str``. ``{"b64": ...}`` binary values are not supported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from edge_runtime.codecs._json import dumps, jsonable, loads, to_array
from edge_runtime.errors import PayloadInvalid
from edge_runtime.inputs import check_names, spec_dtype
from edge_runtime.manifest import TensorSpec

__all__ = ["Format", "decode_predict", "encode_predict"]

Format = Literal["row", "columnar"]


def decode_predict(
    body: bytes | memoryview, specs: tuple[TensorSpec, ...]
) -> tuple[dict[str, NDArray[Any]], Format]:
    """The inputs, cast to the spec dtypes, and the format the response must use."""
    doc = loads(body)
    if not isinstance(doc, dict):
        raise PayloadInvalid('the body must be a JSON object with "instances" or "inputs"')
    if "instances" in doc and "inputs" in doc:
        raise PayloadInvalid('send "instances" (row format) or "inputs" (columnar), not both')
    if "instances" in doc:
        return _rows(doc["instances"], specs), "row"
    if "inputs" in doc:
        return _columns(doc["inputs"], specs), "columnar"
    keys = ", ".join(map(repr, doc)) or "none"
    raise PayloadInvalid(f'the body has no "instances" or "inputs" (keys: {keys})')


def _rows(instances: Any, specs: tuple[TensorSpec, ...]) -> dict[str, NDArray[Any]]:
    if not isinstance(instances, list) or not instances:
        raise PayloadInvalid('"instances" must be a non-empty list')
    named = [isinstance(instance, dict) for instance in instances]
    if all(named):
        return _named_rows(instances, specs)
    if any(named):
        raise PayloadInvalid('"instances" mixes objects and plain values')
    if len(specs) != 1:
        raise PayloadInvalid(f"the model has {len(specs)} inputs ({_names(specs)}): each "
                             "instance must be an object naming them")
    spec = specs[0]
    return {spec.name: to_array(instances, spec_dtype(spec.dtype), spec.name, "instances")}


def _named_rows(
    instances: list[dict[str, Any]], specs: tuple[TensorSpec, ...]
) -> dict[str, NDArray[Any]]:
    for index, instance in enumerate(instances):
        if len(instance) != len(specs) or not all(s.name in instance for s in specs):
            check_names(specs, instance.keys(), where=f" in instances[{index}]")
    return {
        s.name: to_array([i[s.name] for i in instances], spec_dtype(s.dtype), s.name, "instances")
        for s in specs
    }


def _columns(value: Any, specs: tuple[TensorSpec, ...]) -> dict[str, NDArray[Any]]:
    if isinstance(value, dict):
        if len(value) != len(specs) or not all(s.name in value for s in specs):
            check_names(specs, value.keys())
        return {s.name: to_array(value[s.name], spec_dtype(s.dtype), s.name) for s in specs}
    if len(specs) != 1:
        raise PayloadInvalid(f'the model has {len(specs)} inputs ({_names(specs)}): "inputs" '
                             "must be an object naming them")
    spec = specs[0]
    return {spec.name: to_array(value, spec_dtype(spec.dtype), spec.name)}


def _names(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(repr(s.name) for s in specs)


def encode_predict(outputs: Mapping[str, NDArray[Any]], fmt: Format) -> bytes:
    """The response body for outputs of a request decoded in format ``fmt``."""
    if fmt == "columnar":
        if len(outputs) == 1:
            ((name, arr),) = outputs.items()
            return dumps({"outputs": jsonable(arr, name)})
        return dumps({"outputs": {name: jsonable(arr, name) for name, arr in outputs.items()}})
    if fmt == "row":
        return dumps({"predictions": _predictions(outputs)})
    raise ValueError(f"unknown TF-Serving format {fmt!r}")


def _predictions(outputs: Mapping[str, NDArray[Any]]) -> Any:
    for name, arr in outputs.items():
        if arr.ndim == 0:
            raise PayloadInvalid(f"output {name!r} is a scalar with no instances; "
                                 'send the request in columnar format ("inputs")')
    if len(outputs) == 1:
        ((name, arr),) = outputs.items()
        return jsonable(arr, name)
    sizes = {arr.shape[0] for arr in outputs.values()}
    if len(sizes) != 1:
        raise PayloadInvalid(f"outputs have different batch sizes {sorted(sizes)}; send the "
                             'request in columnar format ("inputs")')
    # per-row values must be Python scalars/lists: orjson does not serialise numpy scalars
    columns = {name: _as_list(jsonable(arr, name)) for name, arr in outputs.items()}
    return [{name: col[i] for name, col in columns.items()} for i in range(sizes.pop())]


def _as_list(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value
