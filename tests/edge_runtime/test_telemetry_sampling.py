"""Drift counting under load: every request within the budget, a uniform random sample above
it (the histograms stay unbiased and say how many rows they counted)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from edge_runtime.monitor.window import FOLD_EVERY
from edge_runtime.runtime import Runtime
from edge_runtime.store.models import InstalledModel
from edge_runtime.telemetry import Telemetry
from tests.conftest import Keys, build_package


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[InstalledModel]:
    pkg = build_package(tmp_path_factory.mktemp("pkg"), keys.signer)
    rt = Runtime(tmp_path_factory.mktemp("store") / "store", trusted_keys=(keys.public,))
    rt.install(pkg)
    rt.activate("gemm", "1")
    served = rt.registry.acquire("gemm", None)
    served.release()
    yield served.installed
    rt.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def feed(tel: Telemetry, model: InstalledModel, n: int, value: float = 0.5) -> None:
    x = {"x": np.full((1, 4), value, np.float32)}
    y = {"y": np.zeros((1, 3), np.float32)}
    for _ in range(n):
        tel.observe(model, 0.001, 1, x, y)


def drift_n(tel: Telemetry, model: InstalledModel) -> Any:
    with tel._lock:
        slot = tel._drift[(model.name, model.version)]
        slot.count()
        return slot.acc.snapshot(reset=False)["features"][0]["n"]


def test_without_a_budget_every_request_is_counted(model: InstalledModel) -> None:
    tel = Telemetry(None, drift_max_rows_per_s=0, clock=Clock())
    feed(tel, model, 300)
    assert tel.drift_sampling()[("gemm", "1")] == (300, 300)
    assert drift_n(tel, model) == 300


def test_above_the_budget_requests_are_sampled_at_budget_over_rate(model: InstalledModel
                                                                  ) -> None:
    clock = Clock()
    tel = Telemetry(None, drift_max_rows_per_s=100, clock=clock,
                    draw=random.Random(7).random)
    feed(tel, model, 1000)  # the first second: no rate known yet, all counted
    assert tel.drift_sampling()[("gemm", "1")] == (1000, 1000)
    clock.now += 1.0
    feed(tel, model, 1000)  # last second ran at 1,000 rows/s: keep 10%
    seen, counted = tel.drift_sampling()[("gemm", "1")]
    assert seen == 2000 and 1000 + 70 <= counted <= 1000 + 130
    clock.now += 1.0
    feed(tel, model, 50)  # 1,000 rows/s again in the last second: still 10%
    clock.now += 1.0
    before = tel.drift_sampling()[("gemm", "1")][1]
    feed(tel, model, 50)  # the last second ran at 50 rows/s, within budget: all counted
    assert tel.drift_sampling()[("gemm", "1")][1] - before == 50
    assert drift_n(tel, model) == tel.drift_sampling()[("gemm", "1")][1]


def test_the_sample_is_unbiased(model: InstalledModel) -> None:
    clock = Clock()
    tel = Telemetry(None, drift_max_rows_per_s=200, clock=clock,
                    draw=random.Random(3).random)
    feed(tel, model, 2000, value=-5.0)  # warms the rate up at 2,000 rows/s
    with tel._lock:
        tel._drift[("gemm", "1")].count()
        tel._drift[("gemm", "1")].acc.snapshot(reset=True)
    clock.now += 1.0
    for _ in range(1000):  # alternating values, sampled at 10%
        feed(tel, model, 1, value=-5.0)
        feed(tel, model, 1, value=5.0)
    with tel._lock:
        slot = tel._drift[("gemm", "1")]
        slot.count()
        feat = slot.acc.snapshot(reset=False)["features"][0]
    low, high = feat["underflow"], feat["overflow"]
    assert 150 <= low + high <= 250
    assert abs(low - high) <= 0.3 * (low + high)


def test_requests_are_counted_once_whichever_object_carries_the_version(
        model: InstalledModel) -> None:
    """observe finds a version by its model object; a reloaded copy of the same version (a
    swap back) shares the same pending columns, and reads count what is pending."""
    import dataclasses

    tel = Telemetry(None, drift_max_rows_per_s=0, clock=Clock())
    feed(tel, model, 10)
    copy = dataclasses.replace(model)
    assert copy is not model
    feed(tel, copy, 5)
    totals = tel.metrics.totals_all()[("gemm", "1")]
    assert (totals.requests, totals.items) == (15, 15)
    assert tel.drift_sampling()[("gemm", "1")] == (15, 15)
    feed(tel, model, FOLD_EVERY + 100)  # folded on the way, nothing lost or doubled
    assert tel.metrics.totals_all()[("gemm", "1")].requests == FOLD_EVERY + 115
    assert drift_n(tel, model) == FOLD_EVERY + 115


def test_the_cpu_budget_samples_rows_that_cost_more_than_it_buys(model: InstalledModel
                                                               ) -> None:
    """drift_max_cpu: the rows a second that the share of a core buys at the measured cost
    per row (large inputs, e.g. images, reach it long before the rows budget)."""
    clock = Clock()
    tel = Telemetry(None, drift_max_rows_per_s=10_000, drift_max_cpu=0.02, clock=clock,
                    draw=random.Random(5).random)
    feed(tel, model, 1000)  # the first second: all counted, and a count measures the cost
    slot = tel._drift[("gemm", "1")]
    with tel._lock:
        slot.count()
    assert slot.row_cost_s > 0
    slot.row_cost_s = 1e-3  # 1 ms a row: 2% of a core buys 20 rows a second
    clock.now += 1.0
    feed(tel, model, 1000)
    seen, counted = tel.drift_sampling()[("gemm", "1")]
    assert seen == 2000 and 1000 + 8 <= counted <= 1000 + 35
    no_cap = Telemetry(None, drift_max_rows_per_s=10_000, drift_max_cpu=0, clock=clock)
    feed(no_cap, model, 1000)
    clock.now += 1.0
    feed(no_cap, model, 1000)  # 1,000 rows/s is within the rows budget and nothing caps it
    assert no_cap.drift_sampling()[("gemm", "1")] == (2000, 2000)


def test_a_burst_after_an_idle_spell_is_sampled_within_a_tenth_of_a_second(
        model: InstalledModel) -> None:
    """The rate is measured over 0.1 s windows: a burst counts everything only until the first
    window closes, not for a whole second at the idle spell's low rate."""
    clock = Clock()
    tel = Telemetry(None, drift_max_rows_per_s=100, clock=clock, draw=random.Random(2).random)
    feed(tel, model, 50)
    clock.now += 60.0  # idle for a minute, then 10,000 rows/s for a second
    for _ in range(10_000):
        feed(tel, model, 1)
        clock.now += 1e-4
    seen, counted = tel.drift_sampling()[("gemm", "1")]
    assert seen == 10_050
    assert counted - 50 <= 1_000 + 0.9 * 100 * 1.5  # the first window, then about the budget


def test_a_large_batch_is_counted_as_a_sample_of_its_rows(model: InstalledModel) -> None:
    """A 40,000-row request costs the drift histograms what DRIFT_MAX_ROWS_PER_REQUEST rows do;
    the sample is uniform, so the histogram keeps the batch's distribution."""
    from edge_runtime.telemetry import DRIFT_MAX_ROWS_PER_REQUEST

    tel = Telemetry(None, drift_max_rows_per_s=0, clock=Clock(), draw=random.Random(3).random)
    rows = 40_000
    x = np.zeros((rows, 4), np.float32)
    x[: rows // 4] = 1.0  # a quarter of the rows stand out
    tel.observe(model, 0.01, rows, {"x": x}, {"y": np.zeros((rows, 3), np.float32)})
    assert tel.drift_sampling()[("gemm", "1")] == (rows, DRIFT_MAX_ROWS_PER_REQUEST)
    assert drift_n(tel, model) == DRIFT_MAX_ROWS_PER_REQUEST
    with tel._lock:
        snap = tel._drift[("gemm", "1")].acc.snapshot(reset=False)["features"][0]
    assert abs(snap["sum"] / snap["n"] - 0.25) < 0.05  # the mean of feature 0: 1 in 4 rows
