"""Fleet statistics benchmark (issue 6): a seeded simulation, ours vs baselines, one table.

    .venv/bin/python bench/stats.py [--quick] [--seed N] [--json PATH]

Sections: KS from histograms vs exact ``ks_2samp``; fleet false alerts with no drift (1,000
devices x 20 features); detection of a 0.1 sd shift on 10% of devices; A/B false winners at 20
looks (mSPRT vs a repeated z-test); wire bytes per device interval; merging 10,000 reports;
CUPED's variance reduction (information only). Single process: the machine has 2 shared cores.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_runtime.manifest import TensorSpec  # noqa: E402
from edge_runtime.monitor import wire  # noqa: E402
from edge_runtime.monitor.drift import DriftAccumulator, merge_snapshots  # noqa: E402
from edge_runtime.refstats import compute_reference_stats  # noqa: E402
from edge_runtime.textable import render  # noqa: E402
from fleet import stats  # noqa: E402

N_REF = 20_000
Gen = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]
# Feature shapes of a realistic input: symmetric, skewed, bounded, heavy-ish tails.
GENERATORS: dict[str, Gen] = {
    "normal": lambda r, s: r.standard_normal(s),
    "lognormal": lambda r, s: r.lognormal(0.0, 0.5, s),
    "uniform": lambda r, s: r.uniform(0.0, 1.0, s),
    "exponential": lambda r, s: r.exponential(1.0, s),
    "laplace": lambda r, s: r.laplace(0.0, 1.0, s),
}
DEFAULT = stats.DriftThresholds()
SD = {"normal": 1.0, "lognormal": 0.6039, "uniform": 0.2887, "exponential": 1.0,
      "laplace": 1.4142}


@dataclass
class Row:
    target: str
    ours: str
    baseline: str
    ok: bool | None  # None: information, no target


def spec(name: str, a: np.ndarray) -> TensorSpec:
    return TensorSpec(name, str(a.dtype), ("batch", *a.shape[1:]))


def kinds(n_features: int) -> list[str]:
    names = list(GENERATORS)
    return [names[j % len(names)] for j in range(n_features)]


def sample(rng: np.random.Generator, kind: list[str], shape: tuple[int, ...],
           shift: Any = 0.0) -> np.ndarray:
    """[..., feature] samples; ``shift`` in standard deviations (broadcasts over devices)."""
    cols = [GENERATORS[k](rng, shape) + np.asarray(shift) * SD[k] for k in kind]
    return np.stack(cols, axis=-1)


def numeric_reference(rng: np.random.Generator, kind: list[str]) -> tuple[dict[str, Any],
                                                                         np.ndarray]:
    x = sample(rng, kind, (N_REF,))
    return json.loads(json.dumps(compute_reference_stats({"x": x}, {}, (spec("x", x),), ()))), x


# --- KS accuracy -----------------------------------------------------------------------------

def ks_accuracy(rng: np.random.Generator, quick: bool) -> list[Row]:
    """Device histograms counted by the real device code (DriftAccumulator) vs raw samples,
    devices with no shift and shifts of 0.05, 0.1 and 0.3 sd. Ours: the report's KS estimate
    (``ks_estimate``); baseline: the statistic at the edges only (``ks_statistic``)."""
    kind = kinds(10)
    ref, raw_ref = numeric_reference(rng, kind)
    layout = wire.SnapshotLayout(ref)
    reference = layout.flatten_reference(ref)
    rows = []
    for n, devices in ((1000, 40 if quick else 160), (10_000, 10 if quick else 40)):
        est_err, bound_err = [], []
        for i in range(devices):
            x = sample(rng, kind, (n,), [0.0, 0.05, 0.1, 0.3][i % 4])
            acc = DriftAccumulator(ref)
            acc.update({"x": x}, {})
            snapshot = acc.snapshot()
            report = stats.compare_snapshot(snapshot, ref)
            device = layout.flatten(snapshot)
            for j, entry in enumerate(report.features):
                assert isinstance(entry, stats.NumericDrift)
                exact = sps.ks_2samp(x[:, j], raw_ref[:, j]).statistic
                est_err.append(exact - entry.ks)
                cells = layout.entries[j].counts
                bound = stats.ks_statistic(device.counts[cells][:-1], reference.counts[cells][:-1])
                bound_err.append(exact - float(bound))
        est, edge = np.asarray(est_err), np.asarray(bound_err)
        p95 = float(np.quantile(np.abs(est), 0.95))
        rows.append(Row(
            f"KS from 50 bins vs exact ks_2samp: p95 error <= 0.005 ({est.size} device x "
            f"feature, {n:,} device samples vs 20k reference)",
            f"estimate: p95 {p95:.4f}, mean {np.abs(est).mean():.4f}, bias {-est.mean():+.4f}, "
            f"max {np.abs(est).max():.4f}",
            f"edges only (the p-values' bound): p95 {np.quantile(np.abs(edge), 0.95):.4f}, "
            f"bias {-edge.mean():+.4f}, above exact {int((edge < -1e-12).sum())}",
            p95 <= 0.005))
    return rows


# --- fleet drift: no drift, and a 0.1 sd shift on 10% of devices ------------------------------

def bin_column(edges: np.ndarray, col: np.ndarray) -> np.ndarray:
    """[device, cell] counts of [device, sample] values, binned as refstats/DriftAccumulator do
    (cells: underflow, bins [e_i, e_i+1) with the last one closed, overflow). Sorting each
    device's values and locating the edges in them is ~5x faster than locating every value."""
    rows = np.sort(col, axis=1)
    below = np.array([np.searchsorted(r, edges, side="left") for r in rows])  # values < e_i
    upto_last = np.array([np.searchsorted(r, edges[-1], side="right") for r in rows])
    cuts = np.concatenate([below[:, :-1], upto_last[:, None]], axis=1)
    n = np.full((rows.shape[0], 1), rows.shape[1])
    return np.diff(np.concatenate([np.zeros_like(n), cuts, n], axis=1), axis=1)


def simulate_devices(rng: np.random.Generator, layout: wire.SnapshotLayout, kind: list[str],
                     shift: np.ndarray, n: int) -> dict[str, wire.FlatSnapshot]:
    """Flat reports of ``shift.size`` devices with ``n`` samples each, one feature at a time
    (a [device, sample, feature] array would be 160 MB)."""
    devices = shift.size
    counts = np.zeros((devices, layout.n_counts), np.int64)
    sums = np.zeros((devices, layout.n_sums))
    for j, (entry, k) in enumerate(zip(layout.entries, kind, strict=True)):
        col = GENERATORS[k](rng, (devices, n))
        if shift.any():
            col += (shift * SD[k])[:, None]
        counts[:, entry.counts.start:entry.counts.stop - 1] = bin_column(
            np.asarray(entry.edges), col)
        sums[:, 2 * j], sums[:, 2 * j + 1] = col.sum(axis=1), np.square(col).sum(axis=1)
    return {f"d{i}": wire.FlatSnapshot(counts[i], sums[i]) for i in range(devices)}


LOOSE = stats.DriftThresholds(fdr=0.05)


@dataclass(frozen=True)
class Sim:
    ref: dict[str, Any]
    layout: wire.SnapshotLayout
    kind: list[str]


def fleet_run(rng: np.random.Generator, sim: Sim, shift: np.ndarray) -> dict[str, Any]:
    """One fleet check, as the manager runs it: each device against the rest of the fleet
    (per-device view) and the merged fleet against the package reference (fleet view), all
    in one BH family. ``shift`` per device, in sd. ``first`` is the smallest BH q-value among
    entries whose effect size crosses a warn threshold: the check alerts at fdr q exactly when
    first <= q, so one run answers for every q."""
    devices = simulate_devices(rng, sim.layout, sim.kind, shift, 1000)
    reports = stats.compare_to_rest(sim.layout, devices)
    fleet_view = stats.merge_flat(sim.layout, list(devices.values()))
    reports |= stats.compare_devices(sim.layout, {"fleet": fleet_view},
                                     sim.layout.flatten_reference(sim.ref))
    flagged = np.zeros((shift.size, len(sim.kind)), bool)
    first = 1.0
    for v in stats.judge_drift(reports, LOOSE):
        if v.level in (stats.Level.WARN, stats.Level.ALERT):
            first = min(first, v.q_value)
            if v.unit != "fleet":
                flagged[int(v.unit[1:]), int(v.name[2:-1])] = v.q_value <= DEFAULT.fdr
    ks_p = np.array([[e.ks_p for e in reports[f"d{i}"].entries] for i in range(shift.size)])
    ks_only = stats.benjamini_hochberg(ks_p.ravel(), DEFAULT.fdr).reshape(ks_p.shape)
    pvals = np.array([e.p_value for r in reports.values() for e in r.entries])
    return {"flagged": flagged, "ks_only": ks_only, "pvals": pvals, "first": first}


def check_binning(rng: np.random.Generator, sim: Sim) -> None:
    """The bench's vectorised binning must equal the device code's."""
    x, layout = sample(rng, sim.kind, (500,)), sim.layout
    acc = DriftAccumulator(sim.ref)
    acc.update({"x": x}, {})
    got = [bin_column(np.asarray(e.edges), x[None, :, j]) for j, e in enumerate(layout.entries)]
    want = layout.flatten(acc.snapshot()).counts
    assert np.concatenate([np.append(g[0], 0) for g in got]).tolist() == want.tolist()


def fleet_drift(rng: np.random.Generator, quick: bool) -> list[Row]:
    kind = kinds(20)
    ref, _ = numeric_reference(rng, kind)
    sim = Sim(ref, wire.SnapshotLayout(ref), kind)
    check_binning(rng, sim)
    runs = 30 if quick else 300
    firsts, pvals, t0 = [], [], time.perf_counter()
    none = np.zeros(1000)
    for _ in range(runs):
        out = fleet_run(rng, sim, none)
        firsts.append(out["first"])
        pvals.append(out["pvals"])
    per_run = (time.perf_counter() - t0) / runs
    p, first = np.concatenate(pvals), np.array(firsts)
    false_runs = int((first <= DEFAULT.fdr).sum())
    upper = sps.beta.ppf(0.95, false_runs + 1, runs - false_runs)  # one-sided 95% bound
    calib = ", ".join(f"P(p<{a:g})={(p < a).mean():.1e}" for a in (1e-3, 1e-4))
    others = ", ".join(f"fdr {q:g}: {(first <= q).mean():.1%}" for q in (0.005, 0.02, 0.05))
    rows = [Row("no drift, 1,000 devices x 20 features: fleet false alerts <= 1% of runs",
                f"{false_runs}/{runs} runs = {false_runs / runs:.1%} at fdr {DEFAULT.fdr:g} "
                f"(95% upper bound {upper:.1%}); {others}; null p-values {calib}",
                f"{per_run:.2f} s per simulated fleet check", false_runs / runs <= 0.01)]
    return rows + shift_detection(rng, sim, quick)


def shift_detection(rng: np.random.Generator, sim: Sim, quick: bool) -> list[Row]:
    """Every feature of 10% of the devices moves by 0.1 sd (a device-wide change: sensor,
    placement, lighting). A device is detected when any of its features is flagged."""
    tally = dict.fromkeys(("dev", "dev_ks", "feat", "feat_ks", "false", "flagged"), 0)
    runs = 2 if quick else 5
    for _ in range(runs):
        shifted = np.zeros(1000, bool)
        shifted[rng.choice(1000, 100, replace=False)] = True
        out = fleet_run(rng, sim, np.where(shifted, 0.1, 0.0))
        ours, ks = out["flagged"], out["ks_only"]
        tally["dev"] += int(ours[shifted].any(axis=1).sum())
        tally["dev_ks"] += int(ks[shifted].any(axis=1).sum())
        tally["feat"] += int(ours[shifted].sum())
        tally["feat_ks"] += int(ks[shifted].sum())
        tally["false"] += int(ours[~shifted].sum())
        tally["flagged"] += int(ours.sum())
    devices, features = 100 * runs, 100 * runs * len(sim.kind)
    rate = tally["dev"] / devices
    return [
        Row("0.1 sd shift on 10% of devices, 1k samples each: detected >= 95% of them",
            f"{rate:.1%} of shifted devices (rank-sum + KS vs rest of fleet, BH q="
            f"{DEFAULT.fdr:g} over devices x features); per shifted feature "
            f"{tally['feat'] / features:.1%}; false discoveries "
            f"{tally['false']}/{tally['flagged']} flagged",
            f"KS alone + BH: devices {tally['dev_ks'] / devices:.1%}, per feature "
            f"{tally['feat_ks'] / features:.1%}", rate >= 0.95),
    ]


# --- A/B at 20 looks ---------------------------------------------------------------------------

def ab_test(rng: np.random.Generator, quick: bool) -> list[Row]:
    runs, looks, per = (500 if quick else 2000), 20, 500
    test = stats.SequentialTest(tau=0.01, higher_is_better=False)

    def simulate(pa: float, pb: float) -> tuple[float, float, float]:
        xa = rng.binomial(per, pa, (runs, looks)).cumsum(axis=1)
        xb = rng.binomial(per, pb, (runs, looks)).cumsum(axis=1)
        n = np.arange(1, looks + 1) * per
        pooled = (xa + xb) / (2 * n)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (xb - xa) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
        z_rate = float((np.abs(z) > 1.96).any(axis=1).mean())
        winners, first = 0, []
        for r in range(runs):
            state = stats.SequentialState()
            for k in range(looks):
                est = stats.proportions(int(xa[r, k]), int(n[k]), int(xb[r, k]), int(n[k]))
                state, res = stats.step(test, state, est)
                if res.decision in (stats.Decision.B_BETTER, stats.Decision.B_WORSE):
                    winners += 1
                    first.append(n[k])
                    break
        return winners / runs, z_rate, float(np.median(first)) if first else float("nan")

    null, z_null, _ = simulate(0.02, 0.02)
    power, _, median_n = simulate(0.02, 0.03)
    return [
        Row("A/B, 20 interim looks, no true difference: false winner rate <= 5% (alpha 0.05)",
            f"mSPRT {null:.1%} ({runs} runs, error rate 2%, 500 requests/arm per look)",
            f"z-test at every look: {z_null:.1%}", null <= 0.05),
        Row("A/B power: error rate 2% -> 3% within 10k requests per arm",
            f"detected in {power:.1%} of runs, median {median_n:.0f} requests per arm", "",
            None),
    ]


# --- bytes on the wire -------------------------------------------------------------------------

def wire_bytes(rng: np.random.Generator) -> list[Row]:
    def inputs(n: int) -> dict[str, np.ndarray]:
        x = sample(rng, kinds(30), (n,))
        sizes = [3, 5, 8, 12, 20, 30, 4, 6, 10, 16]
        c = np.stack([rng.zipf(1.5, n) % v for v in sizes], axis=1).astype(np.int64)
        return {"x": x, "c": c}

    def outputs(n: int) -> dict[str, np.ndarray]:
        logits = rng.standard_normal((n, 10)) * 2
        return {"y": (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
                .astype(np.float32)}

    ri, ro = inputs(N_REF), outputs(N_REF)
    ref = json.loads(json.dumps(compute_reference_stats(
        ri, ro, tuple(spec(k, v) for k, v in ri.items()), (spec("y", ro["y"]),))))
    layout = wire.SnapshotLayout(ref)
    rows = []
    for n in (1000, 100_000):
        acc = DriftAccumulator(ref)
        acc.update(inputs(n), outputs(n))
        snap = acc.snapshot()
        data = wire.encode(layout, snap)
        assert wire.decode(layout, data) == snap
        js = json.dumps(snap, separators=(",", ":")).encode()
        rows.append(Row(
            f"bytes per device interval, 30 numeric + 10 categorical + 10-class output, "
            f"{n:,} samples: <= 4 KB",
            f"{len(data):,} B (EDW1: counts byte-shuffled + zlib)",
            f"JSON {len(js):,} B, JSON+zlib {len(zlib.compress(js, 9)):,} B",
            len(data) <= 4096))
    return rows


# --- merging 10,000 reports --------------------------------------------------------------------

def merging(rng: np.random.Generator) -> list[Row]:
    kind = kinds(30)
    ref, _ = numeric_reference(rng, kind)
    layout = wire.SnapshotLayout(ref)
    flats = list(simulate_devices(rng, layout, kind, np.zeros(200), 1000).values())
    blobs = [wire.encode(layout, flats[i % 200]) for i in range(10_000)]
    t0 = time.perf_counter()
    view = stats.FleetView(layout, window_seconds=3600.0)
    for i, blob in enumerate(blobs):
        view.add(blob, group=f"g{i % 4}", time=1_700_000_000.0 + i * 0.3)
    fleet = layout.expand(view.merged())
    ours = time.perf_counter() - t0
    dicts = [layout.expand(flats[i % 200]) for i in range(10_000)]
    t0 = time.perf_counter()
    base = functools.reduce(merge_snapshots, dicts)
    baseline = time.perf_counter() - t0
    assert base["features"][0]["counts"] == fleet["features"][0]["counts"]
    return [Row("merge 10,000 device reports (30 features) into the fleet view <= 1 s",
                f"{ours:.2f} s from wire bytes (decode + add per group/window + expand)",
                f"merge_snapshots fold over decoded dicts: {baseline:.2f} s", ours <= 1.0)]


def cuped_info(rng: np.random.Generator) -> list[Row]:
    level = rng.lognormal(np.log(0.05), 0.4, 2000)  # per-device p95 latency, s
    pre = np.log(level) + rng.normal(0, 0.08, 2000)
    post = np.log(level) + rng.normal(0, 0.08, 2000)
    c = stats.cuped(post[:1000], pre[:1000], post[1000:], pre[1000:])
    return [Row("CUPED with each device's pre-period p95 (information)",
                f"variance -{c.variance_reduction:.0%} (devices sd 0.4 log, "
                "period noise 0.08)", "no covariate", None)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer simulated runs")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows: list[Row] = []
    for section in (ks_accuracy, fleet_drift, ab_test):
        t0 = time.perf_counter()
        rows += section(rng, args.quick)
        print(f"[{section.__name__}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr)
    rows += wire_bytes(rng) + merging(rng) + cuped_info(rng)
    print(render(["target", "ours", "baseline", ""],
                 [[r.target, r.ours, r.baseline,
                   "info" if r.ok is None else "PASS" if r.ok else "FAIL"] for r in rows]))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
