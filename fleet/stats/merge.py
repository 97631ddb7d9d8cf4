"""The fleet view: device drift reports summed per device group x time window, for one version.

Merging is a sum because devices count into the reference's fixed bins (``refstats``), so the
view of any set of groups and windows is exact, whatever order reports arrive in. A view holds
one pair of vectors per (group, window), each ~15 KB for 30 numeric + 10 categorical features;
per-device sums are kept only when asked for (``per_device=True``), per device x window, and
``prune`` drops old windows. One view per model version: versions have their own references.

Not thread-safe: the fleet manager feeds a view from one task.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from edge_runtime.monitor.wire import FlatSnapshot, SnapshotLayout, decode_flat
from fleet.stats.errors import InvalidConfig

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, order=True)
class WindowKey:
    group: str
    start: float  # window start, seconds since the epoch


@dataclass
class _Sum:
    counts: NDArray[np.int64]
    sums: NDArray[np.float64]
    skipped: int = 0
    reports: int = 0

    def add(self, flat: FlatSnapshot) -> None:
        np.add(self.counts, flat.counts, out=self.counts)
        np.add(self.sums, flat.sums, out=self.sums)
        self.skipped += flat.skipped
        self.reports += 1

    def flat(self) -> FlatSnapshot:
        return FlatSnapshot(self.counts.copy(), self.sums.copy(), self.skipped)


class FleetView:
    """Sums of one model version's device reports per (group, window)."""

    def __init__(self, layout: SnapshotLayout, *, window_seconds: float = 3600.0,
                 per_device: bool = False) -> None:
        if not window_seconds > 0:
            raise InvalidConfig("window_seconds", f"must be > 0, got {window_seconds}")
        self.layout = layout
        self.window_seconds = window_seconds
        self.per_device = per_device
        self._groups: dict[WindowKey, _Sum] = {}
        self._devices: dict[tuple[str, float], _Sum] = {}

    def window_start(self, time: float) -> float:
        return math.floor(time / self.window_seconds) * self.window_seconds

    def add(self, report: FlatSnapshot | bytes, *, group: str, time: float,
            device: str | None = None) -> WindowKey:
        """Add one report (wire bytes or vectors) counted at ``time`` by a device of ``group``.

        Raises ``WireFormatError`` for bytes of another reference or a damaged report, before
        anything is added.
        """
        flat = decode_flat(self.layout, report) if isinstance(report, bytes) else report
        self.layout.check(flat)
        key = WindowKey(group, self.window_start(time))
        self._sum(self._groups, key).add(flat)
        if self.per_device and device is not None:
            self._sum(self._devices, (device, key.start)).add(flat)
        return key

    def _sum(self, table: dict[K, _Sum], key: K) -> _Sum:
        acc = table.get(key)
        if acc is None:
            zero = self.layout.zeros()
            acc = table[key] = _Sum(zero.counts, zero.sums)
        return acc

    def keys(self) -> list[WindowKey]:
        return sorted(self._groups)

    def reports(self, key: WindowKey) -> int:
        acc = self._groups.get(key)
        return acc.reports if acc else 0

    def merged(self, *, groups: Collection[str] | None = None, since: float | None = None,
               until: float | None = None) -> FlatSnapshot:
        """Sum over the windows starting in [since, until) of the given groups (None: all)."""
        out = self._zero()
        for key, acc in self._groups.items():
            if _selected(key.group, key.start, groups, since, until):
                out.add(acc.flat())
        return out.flat()

    def by_group(self, *, since: float | None = None, until: float | None = None
                 ) -> dict[str, FlatSnapshot]:
        groups = sorted({k.group for k in self._groups})
        return {g: self.merged(groups=[g], since=since, until=until) for g in groups}

    def devices(self, *, since: float | None = None, until: float | None = None
                ) -> dict[str, FlatSnapshot]:
        """Per-device sums over the windows in [since, until) (needs ``per_device=True``)."""
        if not self.per_device:
            raise InvalidConfig("per_device", "this view does not keep per-device sums")
        out: dict[str, _Sum] = {}
        for (device, start), acc in self._devices.items():
            if _selected("", start, None, since, until):
                out.setdefault(device, self._zero()).add(acc.flat())
        return {d: out[d].flat() for d in sorted(out)}

    def prune(self, before: float) -> int:
        """Drop windows that start before ``before``; returns how many group windows went."""
        old = [k for k in self._groups if k.start < before]
        for k in old:
            del self._groups[k]
        for dk in [dk for dk in self._devices if dk[1] < before]:
            del self._devices[dk]
        return len(old)

    def _zero(self) -> _Sum:
        zero = self.layout.zeros()
        return _Sum(zero.counts, zero.sums)


def _selected(group: str, start: float, groups: Collection[str] | None,
              since: float | None, until: float | None) -> bool:
    return ((groups is None or group in groups) and (since is None or start >= since)
            and (until is None or start < until))


def merge_flat(layout: SnapshotLayout, reports: Collection[FlatSnapshot]) -> FlatSnapshot:
    """Sum of many reports of one layout, in one numpy reduction."""
    if not reports:
        return layout.zeros()
    for r in reports:
        layout.check(r)
    return FlatSnapshot(np.sum([r.counts for r in reports], axis=0, dtype=np.int64),
                        np.sum([r.sums for r in reports], axis=0),
                        sum(r.skipped for r in reports))
