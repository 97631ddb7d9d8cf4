from __future__ import annotations

import copy
import zlib
from typing import Any

import numpy as np
import pytest

from edge_runtime.monitor import wire
from edge_runtime.monitor.drift import DriftAccumulator, merge_snapshots
from tests.edge_runtime.monitor.test_drift import make_data, numeric_ref, reference


def live_snapshot(seed: int, n: int = 300) -> tuple[dict[str, Any], dict[str, Any]]:
    ref, _, _ = reference()
    acc = DriftAccumulator(ref)
    inputs, outputs = make_data(seed, n)
    acc.update(inputs, outputs)
    acc.update({}, {})  # some skipped entries too
    return ref, acc.snapshot()


def test_round_trip_is_exact() -> None:
    ref, snap = live_snapshot(1)
    layout = wire.SnapshotLayout(ref)
    data = wire.encode(layout, snap)
    assert data.startswith(wire.MAGIC)
    assert wire.decode(layout, data) == snap
    assert layout.expand(layout.flatten(snap)) == snap


@pytest.mark.parametrize("top", [0, 255, 256, 70_000, 5_000_000_000])
def test_every_count_width_round_trips(top: int) -> None:
    layout = wire.SnapshotLayout(numeric_ref([0.0, 1.0, 2.0]))
    flat = layout.zeros()
    flat.counts[1] = top
    flat.sums[:] = [1.5, -2.25, 3.0, 9.0]
    got = wire.decode_flat(layout, wire.encode(layout, flat))
    assert got.counts.tolist() == flat.counts.tolist()
    assert got.sums.tolist() == flat.sums.tolist()


def test_flat_vectors_add_like_merge_snapshots() -> None:
    ref, a = live_snapshot(2)
    _, b = live_snapshot(3, n=50)
    layout = wire.SnapshotLayout(ref)
    summed = layout.expand(layout.flatten(a) + layout.flatten(b))
    merged = merge_snapshots(a, b)
    assert summed["skipped"] == merged["skipped"]
    for got, want in zip(summed["features"] + summed["outputs"],
                         merged["features"] + merged["outputs"], strict=True):
        sums = {k for k in got if k.startswith("sum")}
        assert {k: v for k, v in got.items() if k not in sums} == {
            k: v for k, v in want.items() if k not in sums}
        assert [got[k] for k in sums] == pytest.approx([want[k] for k in sums])


def test_reference_flattens_into_the_same_layout() -> None:
    ref, inputs, outputs = reference()
    layout = wire.SnapshotLayout(ref)
    acc = DriftAccumulator(ref)
    acc.update(inputs, outputs)
    counted = layout.flatten(acc.snapshot())
    from_ref = layout.flatten_reference(ref)
    assert counted.counts.tolist() == from_ref.counts.tolist()
    np.testing.assert_allclose(counted.sums, from_ref.sums, rtol=1e-6)


def test_another_reference_is_rejected() -> None:
    ref, snap = live_snapshot(4)
    other = copy.deepcopy(ref)
    other["features"][0]["edges"][1] += 1e-9  # same shape, different bins
    data = wire.encode(wire.SnapshotLayout(ref), snap)
    with pytest.raises(wire.WireFormatError, match="another reference"):
        wire.decode(wire.SnapshotLayout(other), data)


@pytest.mark.parametrize("mangle", [
    lambda d: b"XXXX" + d[4:],
    lambda d: d[:-5],
    lambda d: d[:4] + b"garbage",
    lambda d: d + b"trailing",
    lambda d: wire.MAGIC + zlib.compress(b"\0" * 10_000_000),  # bounded inflate
    lambda d: wire.MAGIC + zlib.compress(zlib.decompress(d[4:])[:-8]),  # lengths
])
def test_malformed_bytes_raise_wire_format_error(mangle: Any) -> None:
    ref, snap = live_snapshot(5)
    layout = wire.SnapshotLayout(ref)
    with pytest.raises(wire.WireFormatError):
        wire.decode_flat(layout, mangle(wire.encode(layout, snap)))


@pytest.mark.parametrize("change", [
    lambda s: s["features"].pop(),
    lambda s: s["features"][0].update(kind="categorical"),
    lambda s: s["features"][0]["counts"].append(1),
    lambda s: s["features"][0].pop("underflow"),
    lambda s: s["features"][-1].update(vocab=["x", "y", "z"]),
])
def test_snapshots_of_another_shape_are_rejected(change: Any) -> None:
    ref, snap = live_snapshot(6)
    change(snap)
    with pytest.raises(wire.WireFormatError):
        wire.SnapshotLayout(ref).flatten(snap)


def test_negative_counts_and_wrong_vectors_are_rejected() -> None:
    layout = wire.SnapshotLayout(numeric_ref([0.0, 1.0]))
    flat = layout.zeros()
    flat.counts[0] = -1
    with pytest.raises(wire.WireFormatError, match="negative"):
        wire.encode(layout, flat)
    with pytest.raises(wire.WireFormatError, match="do not fit"):
        wire.encode(layout, wire.FlatSnapshot(np.zeros(3, np.int64), np.zeros(4)))
    with pytest.raises(wire.WireFormatError, match="schema"):
        wire.SnapshotLayout({**numeric_ref([0.0, 1.0]), "schema_version": 99})


def test_is_smaller_than_compressed_json() -> None:
    import json

    ref, snap = live_snapshot(7, n=1000)
    data = wire.encode(wire.SnapshotLayout(ref), snap)
    assert len(data) < len(zlib.compress(json.dumps(snap).encode(), 9))
