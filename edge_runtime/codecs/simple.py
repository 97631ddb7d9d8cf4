"""The one-line convenience format of ``POST /predict/{name}``.

Request: a JSON value for a single-input model, or an object ``{input_name: value}``. A value is
the batch, or one instance (rank one less than the spec), which becomes a batch of one.
Response: ``{"outputs": {name: nested list}}``. String inputs decode to object arrays of ``str``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.codecs._json import dumps, jsonable, loads, to_array
from edge_runtime.errors import PayloadInvalid
from edge_runtime.inputs import check_names, spec_dtype
from edge_runtime.manifest import TensorSpec

__all__ = ["decode_simple", "encode_simple"]


def decode_simple(body: bytes | memoryview, specs: tuple[TensorSpec, ...]
                  ) -> dict[str, NDArray[Any]]:
    """The inputs, cast to the spec dtypes, a single instance expanded to a batch of one."""
    doc = loads(body)
    if isinstance(doc, dict):
        if len(doc) != len(specs) or not all(s.name in doc for s in specs):
            check_names(specs, doc.keys())
        return {s.name: _tensor(doc[s.name], s) for s in specs}
    if len(specs) != 1:
        names = ", ".join(repr(s.name) for s in specs)
        raise PayloadInvalid(
            f"the model has {len(specs)} inputs ({names}): send an object {{name: list}}")
    return {specs[0].name: _tensor(doc, specs[0])}


def _tensor(value: Any, spec: TensorSpec) -> NDArray[Any]:
    arr = to_array(value, spec_dtype(spec.dtype), spec.name)
    if arr.ndim == len(spec.shape) - 1:
        return arr[np.newaxis]
    return arr


def encode_simple(outputs: Mapping[str, NDArray[Any]]) -> bytes:
    """``{"outputs": {name: nested list}}``."""
    return dumps({"outputs": {name: jsonable(arr, name) for name, arr in outputs.items()}})
