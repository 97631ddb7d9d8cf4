from __future__ import annotations

import functools

import numpy as np
import pytest

from edge_runtime.monitor import wire
from edge_runtime.monitor.drift import merge_snapshots
from fleet.stats import FleetView, InvalidConfig, WindowKey, merge_flat
from tests.fleet.stats.conftest import Ref

HOUR = 3600.0


def assert_same(got: wire.FlatSnapshot, want: wire.FlatSnapshot) -> None:
    assert got.counts.tolist() == want.counts.tolist()
    np.testing.assert_allclose(got.sums, want.sums, rtol=1e-12)
    assert got.skipped == want.skipped


def test_view_of_everything_equals_merge_snapshots(ref: Ref) -> None:
    snaps = [ref.snapshot(i, 50 + 10 * i) for i in range(6)]
    view = FleetView(ref.layout, window_seconds=HOUR)
    for i, s in enumerate(snaps):
        view.add(wire.encode(ref.layout, s), group=f"g{i % 2}", time=1000.0 + i * HOUR / 2,
                 device=f"d{i}")
    want = ref.layout.flatten(functools.reduce(merge_snapshots, snaps))
    assert_same(view.merged(), want)
    assert_same(merge_flat(ref.layout, [ref.layout.flatten(s) for s in snaps]), want)


def test_groups_and_windows_select_what_they_say(ref: Ref) -> None:
    view = FleetView(ref.layout, window_seconds=HOUR)
    a, b, c = (ref.layout.flatten(ref.snapshot(i, 100)) for i in range(3))
    assert view.add(a, group="lab", time=10.0) == WindowKey("lab", 0.0)
    view.add(b, group="field", time=HOUR + 5)
    view.add(c, group="field", time=2 * HOUR + 5)
    assert view.keys() == [WindowKey("field", HOUR), WindowKey("field", 2 * HOUR),
                           WindowKey("lab", 0.0)]
    assert_same(view.merged(groups=["field"]), b + c)
    assert_same(view.merged(since=HOUR, until=2 * HOUR), b)
    assert_same(view.by_group()["lab"], a)
    assert view.reports(WindowKey("lab", 0.0)) == 1
    assert view.reports(WindowKey("lab", HOUR)) == 0
    assert view.prune(2 * HOUR) == 2
    assert_same(view.merged(), c)
    assert_same(view.merged(groups=["nobody"]), ref.layout.zeros())


def test_per_device_sums(ref: Ref) -> None:
    view = FleetView(ref.layout, per_device=True, window_seconds=HOUR)
    a, b = (ref.layout.flatten(ref.snapshot(i, 100)) for i in range(2))
    view.add(a, group="g", time=0.0, device="d1")
    view.add(b, group="g", time=HOUR, device="d1")
    view.add(b, group="g", time=HOUR, device="d2")
    devices = view.devices()
    assert sorted(devices) == ["d1", "d2"]
    assert_same(devices["d1"], a + b)
    assert_same(view.devices(since=HOUR)["d1"], b)
    view.prune(HOUR)
    assert_same(view.devices()["d1"], b)
    with pytest.raises(InvalidConfig):
        FleetView(ref.layout).devices()


def test_a_bad_report_changes_nothing(ref: Ref) -> None:
    view = FleetView(ref.layout)
    good = wire.encode(ref.layout, ref.snapshot(1, 100))
    view.add(good, group="g", time=0.0)
    before = view.merged()
    with pytest.raises(wire.WireFormatError):
        view.add(good[:-3], group="g", time=0.0)
    with pytest.raises(wire.WireFormatError):
        view.add(wire.FlatSnapshot(np.zeros(3, np.int64), np.zeros(2)), group="g", time=0.0)
    assert_same(view.merged(), before)
    assert view.reports(WindowKey("g", 0.0)) == 1


def test_bad_window_and_empty_merge(ref: Ref) -> None:
    with pytest.raises(InvalidConfig, match="window_seconds"):
        FleetView(ref.layout, window_seconds=0)
    assert_same(merge_flat(ref.layout, []), ref.layout.zeros())
