"""JSON pieces the codecs share: parse a body, JSON values to arrays and arrays back to JSON.

Numeric data goes through numpy in one call each way (``np.asarray`` on the parsed list, orjson's
native numpy serialisation out); only string tensors are walked element by element.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from edge_runtime.errors import InputInvalid, PayloadInvalid

# A float too large for the input's dtype (1e300 as FP32, 70000 as FP16) would become inf: in
# this module numpy's warning about it is an error, which to_array words. (np.errstate around
# each cast costs ~12,000 instructions, 4% of an everyday request; a filter costs nothing
# until it fires.)
warnings.filterwarnings("error", "overflow encountered in cast", RuntimeWarning,
                        re.escape(__name__) + "$")

# Target dtype kind -> kinds of array numpy may infer from JSON that convert without loss of
# meaning (ints become floats; floats never become ints; only true/false become bool).
_ACCEPTS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
_KIND_NAMES = {"b": "boolean", "i": "integer", "u": "integer", "f": "floating-point",
               "U": "string"}


def loads(body: bytes | memoryview, what: str = "the body") -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadInvalid(f"{what} is not valid JSON: {exc}") from exc


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def to_array(data: Any, dtype: np.dtype[Any], name: str, what: str = "data") -> NDArray[Any]:
    """A JSON value (number, string or nested lists) as an array of ``dtype``.

    ``dtype`` object means strings: the result holds ``str``. Raises ``InputInvalid(name, ...)``.
    """
    if dtype.kind == "O":
        return _strings(data, name, what)
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, RuntimeError) as exc:  # (over 64 levels deep: ValueError)
        raise InputInvalid(name, f"ragged nested lists in {what} ({exc})") from exc
    if arr.dtype == dtype or arr.size == 0:
        return arr.astype(dtype, copy=False)
    kind = arr.dtype.kind
    if kind not in _ACCEPTS.get(dtype.kind, ""):
        if kind not in _KIND_NAMES:
            raise InputInvalid(
                name, f"{what} holds values that are not numbers (null, objects, mixed types "
                "or integers beyond 64 bits)")
        raise InputInvalid(name, f"{_KIND_NAMES[kind]} values in {what} cannot be {dtype}")
    if dtype.kind in "iu" and not np.can_cast(arr.dtype, dtype):
        info = np.iinfo(dtype)
        low, high = arr.min(), arr.max()
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise InputInvalid(name, f"value {bad} in {what} is out of range for {dtype}")
    try:
        return arr.astype(dtype)
    except RuntimeWarning:  # numpy's overflow warning, an error in this module (above)
        raise InputInvalid(name, f"values in {what} are out of range for {dtype}") from None


def _strings(data: Any, name: str, what: str) -> NDArray[Any]:
    try:
        arr = np.array(data, dtype=object)
    except (ValueError, TypeError, RuntimeError) as exc:  # ragged in ways numpy refuses
        raise InputInvalid(name, f"{what} must be strings in equal-length nested lists ({exc})"
                           ) from exc
    if not all(isinstance(x, str) for x in arr.reshape(-1)):
        raise InputInvalid(name, f"{what} must be strings in equal-length nested lists")
    return arr


def jsonable(arr: NDArray[Any], name: str) -> Any:
    """``arr`` in a form ``dumps`` writes as nested lists (bytes elements decoded as UTF-8)."""
    if arr.dtype.kind in "OSU":
        return texts(arr, name).reshape(arr.shape).tolist()
    if arr.ndim == 0:
        return arr.item()
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


def texts(arr: NDArray[Any], name: str) -> NDArray[Any]:
    """The elements of a string/bytes array, flat, as an object array of ``str``."""
    out = np.empty(arr.size, dtype=object)
    try:
        out[:] = [x.decode() if isinstance(x, bytes) else x for x in arr.reshape(-1)]
    except UnicodeDecodeError as exc:
        raise PayloadInvalid(
            f"output {name!r} holds bytes that are not UTF-8 text, which JSON cannot carry "
            f"({exc}); request it as binary data") from exc
    return out
