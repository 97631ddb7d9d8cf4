"""Compare drift snapshots with a package's reference (or any baseline in the same bins).

Inputs are the device format (``edge_runtime.monitor.drift`` snapshots, or their flat vectors
from ``edge_runtime.monitor.wire``) and the package's ``reference_stats``; the bins are the
reference's quantile edges, so a device snapshot, a merged fleet view and the reference itself
are all comparable. A baseline other than the reference (last week's fleet view, the control
arm of a canary) must have been counted in the same bins: same package, same layout.

Per numeric entry: KS from the binned CDFs, PSI, Wasserstein-1 and the mean shift (from the
sums) in baseline standard deviations (floored: ``reference_scale``), TV over the cells, and
a rank-sum test on the cells. Per categorical entry and class output: chi-square and total
variation over vocabulary + "other" (classes for outputs), and for class outputs the mean top
score. The statistics live in ``binned`` (vectorised); this module slices the flat vectors per
entry and returns typed results.

Two views, as the fleet manager uses them: a group or fleet view (``FleetView.merged``) against
the package reference answers "has the traffic moved away from what the model was built
for", and each device against the rest of its fleet (``compare_to_rest``) answers "which
devices are unlike their peers". Both work on a whole fleet in one pass per entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.monitor.wire import Entry, FlatSnapshot, SnapshotLayout, WireFormatError
from fleet.stats import binned
from fleet.stats.errors import LayoutMismatch


@dataclass(frozen=True)
class NumericDrift:
    """One numeric feature or output against its baseline. NaN statistics: a side is empty."""

    name: str
    output: bool
    n: int  # finite values in the current histogram
    n_baseline: int
    ks: float  # raw-sample KS estimated from the cells (binned.ks_estimate)
    ks_p: float  # from the edges' KS, a lower bound of the raw-sample one: conservative
    psi: float
    wasserstein: float  # in reference_scale units (the baseline sd, floored)
    mean_shift: float  # (mean - baseline mean) / reference_scale, signed
    rank_p: float  # rank-sum (Mann-Whitney) test on the cells: the location evidence
    missing_rate: float
    missing_rate_baseline: float
    kind: str = "numeric"
    tv: float = float("nan")  # total variation over the cells: the share of values that moved

    @property
    def p_value(self) -> float:
        """Two tests ran on this entry (KS: any change of shape; rank-sum: a shift, with more
        power); Bonferroni makes them one valid p-value."""
        return min(1.0, 2.0 * min(self.ks_p, self.rank_p))


@dataclass(frozen=True)
class CategoricalDrift:
    """One categorical feature or output, or a class output (argmax counts) against its baseline."""

    name: str
    output: bool
    n: int
    n_baseline: int
    tv: float
    psi: float
    chi2: float
    chi2_p: float
    other_rate: float  # share outside the reference vocabulary (0 for class outputs)
    kind: str = "categorical"  # or "class"
    mean_top: float = float("nan")  # class outputs: mean top score, current and baseline
    mean_top_baseline: float = float("nan")

    @property
    def p_value(self) -> float:
        return self.chi2_p


EntryDrift = NumericDrift | CategoricalDrift


@dataclass(frozen=True)
class DriftReport:
    """Every entry of a reference, in reference order (features, then outputs)."""

    entries: tuple[EntryDrift, ...]

    @property
    def features(self) -> tuple[EntryDrift, ...]:
        return tuple(e for e in self.entries if not e.output)

    @property
    def outputs(self) -> tuple[EntryDrift, ...]:
        return tuple(e for e in self.entries if e.output)

    def get(self, name: str, *, output: bool = False) -> EntryDrift:
        return next(e for e in self.entries if e.name == name and e.output == output)


def compare_snapshot(snapshot: Mapping[str, Any], reference_stats: Mapping[str, Any], *,
                     baseline: Mapping[str, Any] | None = None) -> DriftReport:
    """A snapshot dict against the package reference, or against ``baseline`` (a snapshot dict
    counted in the same reference's bins)."""
    layout = _layout(reference_stats)
    try:
        current = layout.flatten(snapshot)
        base = (layout.flatten_reference(reference_stats) if baseline is None
                else layout.flatten(baseline))
    except WireFormatError as exc:
        raise LayoutMismatch(str(exc)) from exc
    return compare_devices(layout, {"": current}, base)[""]


def compare_devices(layout: SnapshotLayout, devices: Mapping[str, FlatSnapshot],
                    baseline: FlatSnapshot) -> dict[str, DriftReport]:
    """Every device (or group) against one baseline, vectorised over devices."""
    for flat in (*devices.values(), baseline):
        _check(layout, flat)
    if not devices:
        return {}
    counts, sums = _stack(devices)
    return _compare(layout, list(devices), (counts, sums),
                    (np.broadcast_to(baseline.counts, counts.shape),
                     np.broadcast_to(baseline.sums, sums.shape)))


def compare_to_rest(layout: SnapshotLayout, devices: Mapping[str, FlatSnapshot]
                    ) -> dict[str, DriftReport]:
    """Every device against the sum of all the others (leave-one-out): the per-device view.

    Why not against the package reference: the reference is one sample, and its error is
    shared by every device and every check. At 20k reference samples a feature's reference
    mean is off by ~0.007 sd (one sd of its error), which moves every device's z by ~0.2 the
    same way and, at the z ~ 5 where BH over 20,000 tests decides, makes that feature's false
    alerts ~1.7x as likely for as long as the package is deployed. The rest of the fleet has
    ~1,000x the data, so the bias vanishes; the question becomes "is this device unlike its
    peers", and fleet-wide drift is left to the group views against the reference
    (``compare_devices`` with the reference as baseline), judged in the same BH family.
    """
    for flat in devices.values():
        _check(layout, flat)
    if len(devices) < 2:
        return {}
    counts, sums = _stack(devices)
    return _compare(layout, list(devices), (counts, sums),
                    (counts.sum(axis=0) - counts, sums.sum(axis=0) - sums))


def _stack(devices: Mapping[str, FlatSnapshot]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    return (np.stack([f.counts for f in devices.values()]),
            np.stack([f.sums for f in devices.values()]))


Matrices = tuple[NDArray[np.int64], NDArray[np.float64]]


def _compare(layout: SnapshotLayout, names: list[str], current: Matrices, baseline: Matrices
             ) -> dict[str, DriftReport]:
    """Rows of ``current`` against the same rows of ``baseline`` (counts, sums)."""
    columns = []
    for e in layout.entries:
        cur = (current[0][:, e.counts], current[1][:, e.sums])
        base = (baseline[0][:, e.counts], baseline[1][:, e.sums])
        kind = {"numeric": _numeric, "categorical": _categorical}.get(e.kind, _classes)
        columns.append(kind(e, cur, base))
    return {d: DriftReport(tuple(col[i] for col in columns)) for i, d in enumerate(names)}


def _layout(reference_stats: Mapping[str, Any]) -> SnapshotLayout:
    try:
        return SnapshotLayout(reference_stats)
    except (WireFormatError, KeyError, TypeError) as exc:
        raise LayoutMismatch(f"unusable reference stats: {exc}") from exc


def _check(layout: SnapshotLayout, flat: FlatSnapshot) -> None:
    try:
        layout.check(flat)
    except WireFormatError as exc:
        raise LayoutMismatch(str(exc)) from exc


def _numeric(e: Entry, cur: Matrices, base: Matrices) -> list[EntryDrift]:
    cells, missing, sums = cur[0][:, :-1], cur[0][:, -1], cur[1]
    bcells, bmissing, bsums = base[0][:, :-1], base[0][:, -1], base[1]
    n, nb = cells.sum(axis=1), bcells.sum(axis=1)
    ks_bound = binned.ks_statistic(cells, bcells)
    mean, _ = binned.moments(sums[:, 0], sums[:, 1], n)
    bmean, bvar = binned.moments(bsums[:, 0], bsums[:, 1], nb)
    scale = reference_scale(bvar, bmean, e.edges)
    _, rank_p = binned.rank_sum(cells, bcells)
    columns = zip(n.tolist(), nb.tolist(), binned.ks_estimate(cells, bcells).tolist(),
                  binned.ks_pvalue(ks_bound, n, nb).tolist(),
                  binned.psi(cells, bcells).tolist(),
                  binned.wasserstein(cells, bcells, e.edges, scale).tolist(),
                  ((mean - bmean) / scale).tolist(), rank_p.tolist(),
                  _rate(missing, n + missing).tolist(),
                  _rate(bmissing, nb + bmissing).tolist(),
                  binned.total_variation(cells, bcells).tolist(), strict=True)
    return [NumericDrift(e.name, e.output, n_, nb_, ks, ks_p, ps, w, ms, rp, mr, mrb, tv=tv)
            for n_, nb_, ks, ks_p, ps, w, ms, rp, mr, mrb, tv in columns]


#: The scale floor of a numeric entry, as shares of the reference's range and of its mean.
RANGE_FLOOR = 0.01
MEAN_FLOOR = 1e-3


def reference_scale(variance: Any, mean: Any, edges: tuple[float, ...]) -> NDArray[np.float64]:
    """The unit of the mean shift and Wasserstein: the reference standard deviation, but never
    below 1% of the reference range (first to last edge) nor 0.001 x max(1, |reference mean|).

    A feature that is constant in the reference (an image's border pixel) has sd 0, and any
    change over it would read as an infinite shift; against the floor it reads as large and
    finite, and no change still reads 0. The range is that of the inner edges (the 2nd to
    98th percentile with 50 bins) when there are any, so one outlier cannot raise the floor.
    """
    sd = np.sqrt(np.nan_to_num(np.asarray(variance, np.float64), nan=0.0))
    inner = edges[1:-1] if len(edges) > 3 else edges
    spread = (inner[-1] - inner[0]) * RANGE_FLOOR if inner else 0.0
    level = MEAN_FLOOR * np.maximum(1.0, np.abs(np.nan_to_num(np.asarray(mean, np.float64))))
    return np.asarray(np.maximum(sd, np.maximum(spread, level)), np.float64)


def _categorical(e: Entry, cur: Matrices, base: Matrices) -> list[EntryDrift]:
    c, b = cur[0], base[0]
    chi2, _, p = binned.chi_square(c, b)
    columns = zip(c.sum(axis=1).tolist(), b.sum(axis=1).tolist(),
                  binned.total_variation(c, b).tolist(), binned.psi(c, b).tolist(),
                  chi2.tolist(), p.tolist(), _rate(c[:, -1], c.sum(axis=1)).tolist(),
                  strict=True)
    return [CategoricalDrift(e.name, e.output, *values) for values in columns]


def _classes(e: Entry, cur: Matrices, base: Matrices) -> list[EntryDrift]:
    """Argmax counts (rows with non-finite scores excluded) and the mean top score."""
    c, b = cur[0][:, :-1], base[0][:, :-1]
    n, nb = c.sum(axis=1), b.sum(axis=1)
    chi2, _, p = binned.chi_square(c, b)
    columns = zip(n.tolist(), nb.tolist(), binned.total_variation(c, b).tolist(),
                  binned.psi(c, b).tolist(), chi2.tolist(), p.tolist(),
                  _rate(cur[1][:, 0], n).tolist(), _rate(base[1][:, 0], nb).tolist(),
                  strict=True)
    return [CategoricalDrift(e.name, e.output, ni, nbi, tv, ps, x2, xp, 0.0, "class", t, bt)
            for ni, nbi, tv, ps, x2, xp, t, bt in columns]


def _rate(part: Any, whole: Any) -> NDArray[np.float64]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.asarray(part, np.float64) / np.asarray(whole, np.float64))
