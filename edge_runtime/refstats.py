"""Reference statistics for drift: the bins a device fills and the counts the fleet compares with.

The converter computes them from calibration/validation data; the device counts live traffic into
the same bins (``bin_counts``), so the fleet compares histograms without seeing raw data.

Features: an input with at most ``MAX_ELEMENT_FEATURES`` values per sample gives one feature per
value ("element" layout). A larger input (an image) gives one feature per channel, the per-sample
mean over the other axes ("channel" layout, channel axis 1 for rank-4, the last axis otherwise).
Integer, bool and string inputs with few distinct values are categorical (vocabulary counts).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.manifest import TensorSpec

SCHEMA_VERSION = 1
N_BINS = 50
MAX_ELEMENT_FEATURES = 256
MAX_VOCAB = 64
MAX_CLASSES = 1000


def layout_for(shape: tuple[int, ...]) -> dict[str, Any]:
    """How an input of this per-batch shape (batch first) maps onto features."""
    per_sample = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if per_sample <= MAX_ELEMENT_FEATURES:
        return {"mode": "element", "count": per_sample}
    axis = 1 if len(shape) == 4 else len(shape) - 1
    return {"mode": "channel", "axis": axis, "count": int(shape[axis])}


def feature_matrix(layout: Mapping[str, Any], array: NDArray[Any]) -> NDArray[Any]:
    """[n_samples, n_features] view of one input batch, as the layout says."""
    n = array.shape[0] if array.ndim else 1
    if layout["mode"] == "element":
        return array.reshape(n, -1)
    axis = int(layout["axis"])
    other = tuple(a for a in range(1, array.ndim) if a != axis)
    # float inputs are averaged in their own precision (numpy sums pairwise: plenty for 50
    # bins) rather than copied to float64, which on a 1x3x224x224 image costs 3x the time
    source = array if array.dtype.kind == "f" else np.asarray(array, dtype=np.float64)
    means: NDArray[Any] = source.mean(axis=other)
    return means.reshape(n, -1).astype(np.float64, copy=False)


def _is_categorical(dtype: np.dtype[Any], values: NDArray[Any]) -> bool:
    if dtype.kind in "OUSb":
        return True
    return dtype.kind in "iu" and len(np.unique(values)) <= MAX_VOCAB


def quantile_edges(values: NDArray[Any], n_bins: int = N_BINS) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [0.0, 0.0]
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, n_bins + 1)))
    if edges.size == 1:
        edges = np.array([edges[0], edges[0]])
    return [float(e) for e in edges]


def bin_counts(edges: NDArray[Any], values: NDArray[Any]) -> dict[str, Any]:
    """Count values into bins [e_i, e_i+1) (last bin closed), with under/overflow and missing."""
    values = np.asarray(values, dtype=np.float64).ravel()
    missing = ~np.isfinite(values)
    v = values[~missing]
    n_bins = len(edges) - 1
    idx = np.searchsorted(edges, v, side="right") - 1
    idx[v == edges[-1]] = n_bins - 1
    under, over = int((idx < 0).sum()), int((idx >= n_bins).sum())
    inside = idx[(idx >= 0) & (idx < n_bins)]
    counts = np.bincount(inside, minlength=n_bins)
    return {
        "counts": counts.tolist(),
        "underflow": under,
        "overflow": over,
        "missing": int(missing.sum()),
        "n": int(values.size),
        "sum": float(v.sum()),
        "sum_sq": float(np.square(v).sum()),
    }


def _numeric_feature(name: str, values: NDArray[Any]) -> dict[str, Any]:
    edges = quantile_edges(np.asarray(values, dtype=np.float64))
    return {"name": name, "kind": "numeric", "edges": edges,
            **bin_counts(np.asarray(edges), values)}


def _categorical_feature(name: str, values: NDArray[Any]) -> dict[str, Any]:
    vocab, counts = np.unique(np.asarray(values).astype(str), return_counts=True)
    return {"name": name, "kind": "categorical", "vocab": vocab.tolist(),
            "counts": counts.tolist(), "n": int(counts.sum())}


def input_features(spec: TensorSpec, array: NDArray[Any]) -> tuple[dict[str, Any], list[Any]]:
    layout = layout_for(tuple(array.shape))
    matrix = feature_matrix(layout, array)
    categorical = layout["mode"] == "element" and _is_categorical(array.dtype, matrix)
    features = []
    for j in range(matrix.shape[1]):
        name = f"{spec.name}[{j}]" if layout["mode"] == "element" else f"{spec.name}:c{j}:mean"
        column = matrix[:, j]
        features.append(
            _categorical_feature(name, column) if categorical else _numeric_feature(name, column)
        )
    return {"input": spec.name, **layout}, features


def output_stats(spec: TensorSpec, array: NDArray[Any]) -> dict[str, Any]:
    """Class counts for class outputs, a score histogram for regression outputs."""
    a = np.asarray(array)
    if a.ndim == 2 and 2 <= a.shape[1] <= MAX_CLASSES and a.dtype.kind == "f":
        top = a.argmax(axis=1)
        return {"output": spec.name, "kind": "class", "classes": int(a.shape[1]),
                "counts": np.bincount(top, minlength=a.shape[1]).tolist(),
                "mean_top": float(a.max(axis=1).mean()), "n": int(a.shape[0])}
    flat = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(-1, 1)
    if flat.shape[1] == 1 and a.dtype.kind in "iuOUSb":
        return {"output": spec.name, **_categorical_feature(spec.name, flat[:, 0])}
    return {"output": spec.name, **_numeric_feature(spec.name, flat.mean(axis=1))}


def compute_reference_stats(
    inputs: Mapping[str, NDArray[Any]],
    outputs: Mapping[str, NDArray[Any]],
    input_specs: tuple[TensorSpec, ...],
    output_specs: tuple[TensorSpec, ...],
) -> dict[str, Any]:
    layouts, features = [], []
    for spec in input_specs:
        layout, feats = input_features(spec, inputs[spec.name])
        layouts.append(layout)
        features.extend(feats)
    n = int(next(iter(inputs.values())).shape[0])
    return {
        "schema_version": SCHEMA_VERSION,
        "n": n,
        "layouts": layouts,
        "features": features,
        "outputs": [output_stats(s, outputs[s.name]) for s in output_specs if s.name in outputs],
    }
