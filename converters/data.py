"""Calibration/validation data, checked against the model's inputs before any conversion starts.

``.npy`` (single-input models), ``.npz`` (one array per input, optional ``labels``/``y``) and
``.csv`` (numeric columns, optional header and label column).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from converters.errors import DataError
from converters.onnx_model import numpy_dtype
from edge_runtime.manifest import TensorSpec

LABEL_KEYS = ("labels", "y")
MIN_CALIBRATION_SAMPLES = 10


@dataclass(frozen=True)
class Dataset:
    inputs: dict[str, NDArray[Any]]
    labels: NDArray[Any] | None
    source: str

    @property
    def n(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def head(self, n: int) -> Dataset:
        labels = None if self.labels is None else self.labels[:n]
        return Dataset({k: v[:n] for k, v in self.inputs.items()}, labels, self.source)


def load(
    path: str | Path, specs: tuple[TensorSpec, ...], *, label_column: str | None = None
) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arrays, labels = {"": _np_load(path)}, None
    elif suffix == ".npz":
        arrays, labels = _load_npz(path)
    elif suffix == ".csv":
        arrays, labels = _load_csv(path, label_column)
    else:
        raise DataError(path, f"unsupported data format {suffix!r} (use .npy, .npz or .csv)")
    return check(Dataset(_match_inputs(path, arrays, specs), labels, str(path)), specs)


def _np_load(path: Path) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(path, f"cannot read ({exc})") from exc


def _load_npz(path: Path) -> tuple[dict[str, NDArray[Any]], NDArray[Any] | None]:
    with _np_load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    labels = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
    return arrays, labels


def _load_csv(
    path: Path, label_column: str | None
) -> tuple[dict[str, NDArray[Any]], NDArray[Any] | None]:
    with path.open() as fh:
        header = fh.readline().strip().split(",")
    has_header = any(not _is_number(h) for h in header)
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=int(has_header), ndmin=2,
                           dtype=np.float64)
    except ValueError as exc:
        raise DataError(path, f"CSV must be numeric ({exc})") from exc
    labels = None
    if label_column is not None:
        if not has_header or label_column not in header:
            raise DataError(path, f"no column named {label_column!r} in the CSV header")
        j = header.index(label_column)
        labels = table[:, j].astype(np.int64)
        table = np.delete(table, j, axis=1)
    return {"": table}, labels


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _match_inputs(
    path: Path, arrays: dict[str, NDArray[Any]], specs: tuple[TensorSpec, ...]
) -> dict[str, NDArray[Any]]:
    names = [s.name for s in specs]
    if len(specs) == 1 and len(arrays) == 1:
        return {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing or len(arrays) != len(specs):
        raise DataError(
            path, f"model inputs are {names}; the data has {sorted(arrays) or 'one unnamed array'}"
        )
    return {n: arrays[n] for n in names}


def check(data: Dataset, specs: tuple[TensorSpec, ...]) -> Dataset:
    """Cast to the model's dtypes and check every non-batch dimension the model fixes."""
    out: dict[str, NDArray[Any]] = {}
    counts = set()
    for spec in specs:
        array = data.inputs[spec.name]
        if array.ndim != len(spec.shape):
            raise DataError(data.source, f"input {spec.name!r} has rank {array.ndim}, the model "
                            f"wants shape {list(spec.shape)}")
        for axis, (want, have) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if axis > 0 and isinstance(want, int) and want != have:
                raise DataError(data.source, f"input {spec.name!r} has shape {list(array.shape)}, "
                                f"the model wants {list(spec.shape)}")
        out[spec.name] = _cast(data.source, spec, array)
        counts.add(array.shape[0])
    if len(counts) != 1 or 0 in counts:
        raise DataError(data.source, f"inputs have different or zero sample counts "
                        f"{sorted(counts)}")
    n = counts.pop()
    if data.labels is not None and len(data.labels) != n:
        raise DataError(data.source, f"{len(data.labels)} labels for {n} samples")
    return Dataset(out, data.labels, data.source)


def _cast(source: str, spec: TensorSpec, array: NDArray[Any]) -> NDArray[Any]:
    want = numpy_dtype(spec.dtype)
    if array.dtype == want:
        return array
    if want.kind in "iub" and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise DataError(source, f"input {spec.name!r} wants {spec.dtype}, data has fractional "
                        f"{array.dtype} values")
    if array.dtype.kind not in "iufb":
        raise DataError(source, f"input {spec.name!r} wants {spec.dtype}, data is {array.dtype}")
    return array.astype(want)


def check_calibration(data: Dataset) -> Dataset:
    if data.n < MIN_CALIBRATION_SAMPLES:
        raise DataError(data.source, f"{data.n} calibration samples; at least "
                        f"{MIN_CALIBRATION_SAMPLES} are needed")
    for name, array in data.inputs.items():
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise DataError(data.source, f"calibration input {name!r} has NaN or inf values")
    return data


def synthetic(specs: tuple[TensorSpec, ...], n: int, *, seed: int = 0) -> Dataset:
    """Standard-normal stand-in data when the user gives none (for latency and agreement only)."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in specs:
        shape = [n] + [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
        inputs[spec.name] = rng.standard_normal(shape).astype(numpy_dtype(spec.dtype))
    return Dataset(inputs, None, "synthetic")
