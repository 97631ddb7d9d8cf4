from __future__ import annotations

import numpy as np

from edge_runtime.manifest import TensorSpec
from edge_runtime.refstats import (
    N_BINS,
    bin_counts,
    compute_reference_stats,
    feature_matrix,
    layout_for,
    quantile_edges,
)


def test_bin_counts_matches_numpy_histogram() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal(5000)
    edges = np.asarray(quantile_edges(ref))
    assert len(edges) == N_BINS + 1
    live = np.concatenate([rng.standard_normal(3000) * 1.5, [np.nan, np.inf]])
    got = bin_counts(edges, live)
    finite = live[np.isfinite(live)]
    inside = finite[(finite >= edges[0]) & (finite <= edges[-1])]
    expected, _ = np.histogram(inside, bins=edges)
    assert got["counts"] == expected.tolist()
    assert got["underflow"] == int((finite < edges[0]).sum())
    assert got["overflow"] == int((finite > edges[-1]).sum())
    assert got["missing"] == 2
    assert got["n"] == 3002
    assert np.isclose(got["sum"], finite.sum())


def test_reference_counts_sum_to_n_and_constant_feature() -> None:
    x = np.zeros((100, 3), dtype=np.float32)
    x[:, 1] = np.arange(100)
    spec = TensorSpec("x", "float32", ("batch", 3))
    out = np.eye(4, dtype=np.float32)[np.arange(100) % 4]
    stats = compute_reference_stats({"x": x}, {"y": out}, (spec,),
                                    (TensorSpec("y", "float32", ("batch", 4)),))
    f0, f1 = stats["features"][0], stats["features"][1]
    assert f0["edges"] == [0.0, 0.0] and f0["counts"] == [100]
    assert sum(f1["counts"]) == 100 and f1["underflow"] == f1["overflow"] == 0
    assert stats["outputs"][0]["kind"] == "class"
    assert stats["outputs"][0]["counts"] == [25, 25, 25, 25]


def test_image_inputs_use_channel_means() -> None:
    layout = layout_for((8, 3, 32, 32))
    assert layout == {"mode": "channel", "axis": 1, "count": 3}
    x = np.ones((8, 3, 32, 32))
    x[:, 2] = 5.0
    m = feature_matrix(layout, x)
    assert m.shape == (8, 3)
    assert np.allclose(m[:, 2], 5.0)
    assert layout_for((8, 64)) == {"mode": "element", "count": 64}


def test_categorical_inputs() -> None:
    spec = TensorSpec("c", "int64", ("batch", 1))
    x = np.array([[1], [2], [2], [7]], dtype=np.int64)
    stats = compute_reference_stats({"c": x}, {}, (spec,), ())
    feat = stats["features"][0]
    assert feat["kind"] == "categorical"
    assert dict(zip(feat["vocab"], feat["counts"], strict=True)) == {"1": 1, "2": 2, "7": 1}
