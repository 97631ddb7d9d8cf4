from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pytest

from edge_runtime.manifest import TensorSpec
from edge_runtime.monitor.drift import DriftAccumulator, merge_snapshots
from edge_runtime.refstats import compute_reference_stats

N = 600


def make_data(seed: int, n: int = N) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5)).astype(np.float32)
    x[::97, 2] = np.nan  # the reference itself has missing values
    inputs: dict[str, np.ndarray] = {
        "x": x,  # element layout, numeric
        "img": rng.random((n, 3, 20, 20), dtype=np.float32),  # channel layout, axis 1
        "seq": rng.standard_normal((n, 100, 3)),  # channel layout, last axis
        "c": rng.integers(0, 12, size=(n, 2)),  # categorical ints
        "s": rng.choice(np.array(["red", "green", "blue"]), size=n),  # categorical strings
    }
    outputs: dict[str, np.ndarray] = {
        "y": rng.random((n, 4), dtype=np.float32),  # class
        "r": rng.standard_normal((n, 2, 3)).astype(np.float32),  # numeric (mean of 6)
        "k": rng.integers(0, 5, size=(n, 1)),  # categorical
    }
    return inputs, outputs


def specs(arrays: dict[str, np.ndarray]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(k, str(v.dtype) if v.dtype.kind != "U" else "string",
                            ("batch", *v.shape[1:])) for k, v in arrays.items())


def reference(seed: int = 0) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    inputs, outputs = make_data(seed)
    ref = compute_reference_stats(inputs, outputs, specs(inputs), specs(outputs))
    return json.loads(json.dumps(ref)), inputs, outputs


def assert_matches_reference(snap: dict[str, Any], ref: dict[str, Any]) -> None:
    assert [f["name"] for f in snap["features"]] == [f["name"] for f in ref["features"]]
    for got, want in zip(snap["features"], ref["features"], strict=True):
        assert got["kind"] == want["kind"]
        assert got["counts"] == want["counts"], got["name"]
        assert got["n"] == want["n"]
        if want["kind"] == "numeric":
            for key in ("underflow", "overflow", "missing"):
                assert got[key] == want[key], (got["name"], key)
            for key in ("sum", "sum_sq"):
                assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-9)
        else:
            assert got["vocab"] == want["vocab"] and got["other"] == 0
    for got, want in zip(snap["outputs"], ref["outputs"], strict=True):
        assert (got["name"], got["kind"], got["counts"]) == (want["output"], want["kind"],
                                                             want["counts"])
        if want["kind"] == "class":
            assert got["sum_top"] / (got["n"] - got["missing"]) == pytest.approx(want["mean_top"])


def test_reference_layouts_cover_every_kind() -> None:
    ref, _, _ = reference()
    assert [(lay["input"], lay["mode"]) for lay in ref["layouts"]] == [
        ("x", "element"), ("img", "channel"), ("seq", "channel"), ("c", "element"),
        ("s", "element")]
    kinds = {f["name"].split("[")[0].split(":")[0]: f["kind"] for f in ref["features"]}
    assert kinds == {"x": "numeric", "img": "numeric", "seq": "numeric", "c": "categorical",
                     "s": "categorical"}
    assert [o["kind"] for o in ref["outputs"]] == ["class", "numeric", "categorical"]


@pytest.mark.parametrize("batch", [N, 1, 7, 64])
def test_counting_the_reference_data_reproduces_the_reference(batch: int) -> None:
    ref, inputs, outputs = reference()
    acc = DriftAccumulator(ref)
    for start in range(0, N, batch):
        acc.update({k: v[start:start + batch] for k, v in inputs.items()},
                   {k: v[start:start + batch] for k, v in outputs.items()})
    snap = acc.snapshot()
    assert snap["skipped"] == 0
    assert_matches_reference(snap, ref)


def numeric_ref(edges: list[float]) -> dict[str, Any]:
    return {
        "schema_version": 1, "n": 0,
        "layouts": [{"input": "x", "mode": "element", "count": 2}],
        "features": [
            {"name": "x[0]", "kind": "numeric", "edges": edges},
            {"name": "x[1]", "kind": "numeric", "edges": [5.0, 5.0]},  # constant feature
        ],
        "outputs": [],
    }


def test_underflow_overflow_missing_and_edges() -> None:
    acc = DriftAccumulator(numeric_ref([0.0, 1.0, 2.0, 4.0]))
    col0 = [-0.5, 0.0, 0.99, 1.0, 2.0, 3.9, 4.0, 4.01, np.nan, np.inf, -np.inf]
    col1 = [5.0, 4.9, 5.1, 5.0, np.nan, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    acc.update({"x": np.array([col0, col1]).T}, {})
    f0, f1 = acc.snapshot()["features"]
    # [0,1) gets 0.0 and 0.99; [1,2) gets 1.0; the last bin [2,4] is closed and gets 4.0.
    assert f0["counts"] == [2, 1, 3]
    assert (f0["underflow"], f0["overflow"], f0["missing"], f0["n"]) == (1, 1, 3, 11)
    assert f0["sum"] == pytest.approx(sum(v for v in col0 if np.isfinite(v)))
    assert f1["counts"] == [8]
    assert (f1["underflow"], f1["overflow"], f1["missing"], f1["n"]) == (1, 1, 1, 11)


def test_unseen_categories_count_as_other() -> None:
    ref, inputs, outputs = reference()
    acc = DriftAccumulator(ref)
    c = np.array([[3, 99], [-1, 0]], dtype=np.int32)  # other int dtype, unseen 99 and -1
    s = np.array(["red", "purple"])
    acc.update({**{k: v[:2] for k, v in inputs.items()}, "c": c, "s": s},
               {k: v[:2] for k, v in outputs.items()})
    feats = {f["name"]: f for f in acc.snapshot()["features"]}
    c0, c1, s0 = feats["c[0]"], feats["c[1]"], feats["s[0]"]
    assert (c0["counts"][c0["vocab"].index("3")], c0["other"]) == (1, 1)
    assert (c1["counts"][c1["vocab"].index("0")], c1["other"]) == (1, 1)
    assert (s0["counts"][s0["vocab"].index("red")], s0["other"], s0["n"]) == (1, 1, 2)


@pytest.mark.parametrize(
    ("inputs", "outputs", "skipped", "counted"),
    [
        # 5 inputs + 3 outputs in the reference; ``counted`` = feature/output entries filled.
        ({}, {}, 8, 0),  # everything absent
        ({"x": np.zeros((2, 4), np.float32)}, {}, 8, 0),  # wrong element count
        ({"x": np.array([["a"] * 5])}, {}, 8, 0),  # strings into a numeric input
        ({"img": np.zeros((2, 20, 20, 3), np.float32)}, {}, 8, 0),  # channels-last image
        ({"seq": np.zeros((2, 3, 100))}, {}, 8, 0),  # channel axis has the wrong size
        ({"x": np.float32(1.0)}, {}, 8, 0),  # a scalar has no batch axis
        ({"x": np.zeros((2, 5), np.float32)}, {}, 7, 5),
        ({"unknown": np.zeros(3)}, {}, 8, 0),  # extra tensors are ignored, not skipped
        ({}, {"y": np.zeros((2, 5), np.float32)}, 8, 0),  # wrong class count
        ({}, {"y": np.zeros((2, 4), np.int64)}, 8, 0),  # class scores must be floats
        ({}, {"k": np.zeros((2, 2), np.int64)}, 8, 0),  # categorical output of width 2
        ({}, {"r": np.zeros((2, 0), np.float32)}, 8, 0),  # nothing to average
        ({}, {"y": np.zeros((2, 4), np.float32), "r": np.ones(2), "k": np.ones(2)}, 5, 3),
    ],
)
def test_bad_or_missing_tensors_are_skipped_not_raised(
    inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], skipped: int, counted: int
) -> None:
    ref, _, _ = reference()
    acc = DriftAccumulator(ref)
    acc.update(inputs, outputs)
    snap = acc.snapshot()
    assert snap["skipped"] == skipped
    filled = [e for e in snap["features"] + snap["outputs"] if e["n"]]
    assert len(filled) == counted
    assert all(e["n"] == 2 for e in filled)


def test_class_rows_with_non_finite_scores_are_missing() -> None:
    ref, _, _ = reference()
    acc = DriftAccumulator(ref)
    y = np.array([[0.1, 0.7, 0.1, 0.1], [np.nan, 0.2, 0.3, 0.5], [0.6, 0.2, 0.1, 0.1]],
                 dtype=np.float32)
    acc.update({}, {"y": y})
    (cls, *_) = acc.snapshot()["outputs"]
    assert (cls["counts"], cls["missing"], cls["n"]) == ([1, 1, 0, 0], 1, 3)
    assert cls["sum_top"] == pytest.approx(1.3)


def test_snapshot_is_json_safe_and_resets() -> None:
    ref, inputs, outputs = reference()
    acc = DriftAccumulator(ref)
    acc.update(inputs, outputs)
    acc.update({}, {})
    kept = acc.snapshot(reset=False)
    assert json.loads(json.dumps(kept, allow_nan=False)) == kept
    assert acc.snapshot() == kept
    empty = acc.snapshot()
    assert empty["skipped"] == 0
    assert all(e["n"] == 0 for e in empty["features"] + empty["outputs"])


def without_sums(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if not k.startswith("sum")} for e in entries]


def test_merge_snapshots_equals_counting_everything_once() -> None:
    ref, _, _ = reference()
    live_in, live_out = make_data(seed=5, n=300)
    acc = DriftAccumulator(ref)
    acc.update({k: v[:100] for k, v in live_in.items()}, {k: v[:100] for k, v in live_out.items()})
    a = acc.snapshot()
    acc.update({k: v[100:] for k, v in live_in.items()}, {})  # outputs skipped this time
    b = acc.snapshot()
    acc.update(live_in, live_out)
    once = acc.snapshot()
    merged = merge_snapshots(a, b)
    assert (a["skipped"], b["skipped"], merged["skipped"]) == (0, 3, 3)
    assert without_sums(merged["features"]) == without_sums(once["features"])
    for got, want in zip(merged["features"], once["features"], strict=True):
        for key in ("sum", "sum_sq"):
            assert got.get(key) == pytest.approx(want.get(key))
    assert merged["outputs"][0]["n"] == 100 and once["outputs"][0]["n"] == 300
    assert a == merge_snapshots(a, DriftAccumulator(ref).snapshot())  # empty is neutral


def test_merge_snapshots_rejects_different_references() -> None:
    a = DriftAccumulator(reference()[0]).snapshot()
    for other in (numeric_ref([0.0, 1.0]), numeric_ref([0.0, 1.0, 2.0])):
        b = DriftAccumulator(other).snapshot()
        with pytest.raises(ValueError, match="entries"):
            merge_snapshots(a, b)
    one_bin = DriftAccumulator(numeric_ref([0.0, 1.0])).snapshot()
    two_bins = DriftAccumulator(numeric_ref([0.0, 1.0, 2.0])).snapshot()
    with pytest.raises(ValueError, match="lengths"):
        merge_snapshots(one_bin, two_bins)
    with pytest.raises(ValueError, match="schema"):
        merge_snapshots(a, {**a, "schema_version": 2})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"schema_version": 2}, "schema"),
        ({"layouts": [{"input": "x", "mode": "element", "count": 1}]}, "cover"),
        ({"features": [{"name": "x[0]", "kind": "numeric", "edges": [1.0]},
                       {"name": "x[1]", "kind": "numeric", "edges": [5.0, 5.0]}]}, "two edges"),
        ({"features": [{"name": "x[0]", "kind": "numeric", "edges": [1.0, 2.0]},
                       {"name": "x[1]", "kind": "categorical", "vocab": ["a"]}]}, "share"),
        ({"outputs": [{"output": "z", "kind": "weird"}]}, "unknown kind"),
    ],
)
def test_rejects_malformed_reference(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DriftAccumulator({**numeric_ref([0.0, 1.0]), **change})


def test_concurrent_updates_are_all_counted() -> None:
    ref, inputs, outputs = reference()
    acc = DriftAccumulator(ref)
    row_in, row_out = {k: v[:3] for k, v in inputs.items()}, {k: v[:3] for k, v in outputs.items()}

    def work() -> None:
        for _ in range(200):
            acc.update(row_in, row_out)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = acc.snapshot()
    assert {e["n"] for e in snap["features"] + snap["outputs"]} == {4 * 200 * 3}
