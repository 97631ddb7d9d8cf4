"""Check decoded inputs against a model's input specs: names, dtype, shape, batch. Hot path.

Codecs turn a body into ``{name: array}``; ``validate_inputs`` then makes those arrays fit the
manifest or raises ``InputInvalid(input_name, reason)``. An input that already has the spec dtype
and is C-contiguous and aligned is passed through as the same object (no copy).

The batch dimension is the first dimension of every input whose spec starts with a dynamic
(named) dimension; all such inputs must agree on it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, NoReturn

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InputInvalid
from edge_runtime.manifest import DTYPES, TensorSpec

__all__ = ["check_names", "spec_dtype", "validate_inputs"]

_NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    d: np.dtype(object if d == "string" else d) for d in DTYPES
}


def spec_dtype(dtype: str) -> np.dtype[Any]:
    """The numpy dtype of a manifest dtype; "string" is an object array (of str or bytes)."""
    return _NUMPY_DTYPES[dtype]


def check_names(
    specs: tuple[TensorSpec, ...], names: Collection[str], *, where: str = ""
) -> None:
    """Raise ``InputInvalid`` unless ``names`` are exactly the spec names.

    The error names the first missing (else unknown) input and lists every other one.
    """
    expected = [s.name for s in specs]
    missing = [n for n in expected if n not in names]
    known = set(expected)
    unknown = [n for n in names if n not in known]
    if not missing and not unknown:
        return
    details = []
    if len(missing) > 1 or (missing and unknown):
        details.append("missing: " + ", ".join(map(repr, missing)))
    if len(unknown) > 1 or (missing and unknown):
        details.append("unknown: " + ", ".join(map(repr, unknown)))
    details.append("the model takes " + ", ".join(map(repr, expected)))
    reason = f"missing{where}" if missing else f"not an input of this model{where}"
    raise InputInvalid((missing or unknown)[0], f"{reason} ({'; '.join(details)})")


def validate_inputs(
    specs: tuple[TensorSpec, ...],
    inputs: Mapping[str, NDArray[Any]],
    *,
    max_batch: int | None = None,
) -> dict[str, NDArray[Any]]:
    """The inputs in spec order, each C-contiguous in its spec dtype, or ``InputInvalid``."""
    if max_batch is None and len(inputs) == len(specs):
        ready = _already_valid(specs, inputs)
        if ready is not None:
            return ready
    if len(inputs) != len(specs) or _any_missing(specs, inputs):
        check_names(specs, inputs.keys())
    out: dict[str, NDArray[Any]] = {}
    batch: tuple[str, int] | None = None
    for spec in specs:
        arr = _conform(spec, inputs[spec.name])
        if spec.shape and isinstance(spec.shape[0], str):
            batch = _check_batch(spec.name, arr.shape[0], batch, max_batch)
        out[spec.name] = arr
    return out


Plan = tuple[tuple[str, np.dtype[Any], int, tuple[tuple[int, int], ...], bool], ...]
_PLANS: dict[int, tuple[tuple[TensorSpec, ...], Plan]] = {}


def _plan(specs: tuple[TensorSpec, ...]) -> Plan:
    """Per input: name, dtype, rank, the fixed (position, size) dims, whether it is batched.
    Cached by the specs' identity (a loaded manifest's tuple), keeping them alive meanwhile."""
    entry = _PLANS.get(id(specs))
    if entry is not None and entry[0] is specs:
        return entry[1]
    plan = tuple((s.name, _NUMPY_DTYPES[s.dtype], len(s.shape),
                  tuple((i, d) for i, d in enumerate(s.shape) if not isinstance(d, str)),
                  bool(s.shape) and isinstance(s.shape[0], str)) for s in specs)
    if len(_PLANS) >= 256:
        _PLANS.clear()
    _PLANS[id(specs)] = (specs, plan)
    return plan


def _already_valid(specs: tuple[TensorSpec, ...], inputs: Mapping[str, NDArray[Any]]
                   ) -> dict[str, NDArray[Any]] | None:
    """The inputs as they are when every one already fits (what well-behaved clients send),
    else None and ``validate_inputs`` takes its general path, which words the error."""
    out: dict[str, NDArray[Any]] = {}
    batch = -1
    for name, dtype, rank, fixed, batched in _plan(specs):
        arr = inputs.get(name)
        if arr is None or arr.dtype != dtype or arr.ndim != rank:
            return None
        shape = arr.shape
        for i, d in fixed:
            if shape[i] != d:
                return None
        if batched:
            if shape[0] < 1 or (batch >= 0 and shape[0] != batch):
                return None
            batch = shape[0]
        flags = arr.flags
        if not (flags.c_contiguous and flags.aligned):
            return None
        out[name] = arr
    return out


def _any_missing(specs: tuple[TensorSpec, ...], inputs: Mapping[str, NDArray[Any]]) -> bool:
    for spec in specs:  # noqa: SIM110 - a plain loop, no generator: this runs per request
        if spec.name not in inputs:
            return True
    return False


def _conform(spec: TensorSpec, arr: NDArray[Any]) -> NDArray[Any]:
    shape = arr.shape
    dims = spec.shape
    if len(shape) != len(dims):
        _bad_shape(spec, shape)
    for d, n in zip(dims, shape, strict=True):  # a plain loop: this runs on every request
        if d != n and not isinstance(d, str):
            _bad_shape(spec, shape)
    dtype = _NUMPY_DTYPES[spec.dtype]
    if arr.dtype != dtype:
        arr = _cast(spec.name, arr, dtype)
    flags = arr.flags
    if flags.c_contiguous and flags.aligned:
        return arr
    return np.array(arr, order="C")


def _bad_shape(spec: TensorSpec, shape: tuple[int, ...]) -> NoReturn:
    expected = ", ".join(map(str, spec.shape))
    raise InputInvalid(spec.name, f"shape {list(shape)} does not match [{expected}]")


def _cast(name: str, arr: NDArray[Any], dtype: np.dtype[Any]) -> NDArray[Any]:
    src = arr.dtype
    if dtype.kind == "O":
        if src.kind not in "US":
            raise InputInvalid(name, f"dtype {src} cannot be a string input")
    elif src.kind in "OUS" or not np.can_cast(src, dtype, "same_kind"):
        raise InputInvalid(name, f"dtype {src} cannot be safely cast to {dtype}")
    elif src.kind in "iu" and dtype.kind in "iu" and arr.size and not np.can_cast(src, dtype):
        info = np.iinfo(dtype)
        low, high = arr.min(), arr.max()
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise InputInvalid(name, f"value {bad} is out of range for {dtype}")
    return arr.astype(dtype)


def _check_batch(
    name: str, size: int, batch: tuple[str, int] | None, max_batch: int | None
) -> tuple[str, int]:
    if batch is not None:
        if size != batch[1]:
            raise InputInvalid(
                name, f"batch size {size} differs from {batch[1]} of input {batch[0]!r}"
            )
        return batch
    if size < 1:
        raise InputInvalid(name, "batch size is 0; send at least one instance")
    if max_batch is not None and size > max_batch:
        raise InputInvalid(name, f"batch size {size} is over the limit of {max_batch}")
    return name, size
