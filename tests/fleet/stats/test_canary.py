from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from fleet.stats import (
    CanaryConfig,
    CanaryMetric,
    InvalidConfig,
    Method,
    Outcome,
    RateData,
    SequentialState,
    ValueData,
    judge_canary,
)

ERRORS = CanaryMetric("errors", Method.RATE, tolerance=0.01, critical=True, hard_limit=0.2)
P95 = CanaryMetric("p95", Method.VALUE, tolerance=0.1, weight=2.0)
MEMORY = CanaryMetric("memory", Method.MANN_WHITNEY, tolerance=0.1)
CONFIG = CanaryConfig((ERRORS, P95, MEMORY))


@dataclass
class Fleet:
    """Canary and control devices with their own levels; ``look`` adds one interval."""

    canary_error: float
    canary_slowdown: float = 1.0
    canary_memory: float = 1.0
    canary: int = 30
    control: int = 120
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        k = self.canary + self.control
        self.level = self.rng.lognormal(np.log(0.05), 0.3, k)  # per-device p95 (s)
        self.level[: self.canary] *= self.canary_slowdown
        self.rates = self.rng.beta(2, 98, k)
        self.rates[: self.canary] *= self.canary_error / 0.02
        self.events = np.zeros(k, np.int64)
        self.trials = np.zeros(k, np.int64)
        self.memory = self.rng.normal(100, 5, k)
        self.memory[: self.canary] *= self.canary_memory
        self.noise = np.zeros(k)
        self.looks = 0

    def look(self) -> dict[str, RateData | ValueData]:
        n = self.rng.integers(200, 600, self.level.size)
        self.trials += n
        self.events += self.rng.binomial(n, np.minimum(self.rates, 1.0))
        # Each device's p95 over the whole canary so far (its merged histogram), not the last
        # interval's: the sequential test needs every look to extend the previous one.
        self.looks += 1
        self.noise += self.rng.normal(0, 0.05, self.level.size)
        p95 = self.level * np.exp(self.noise / self.looks)
        c = self.canary
        return {
            "errors": RateData(self.events[:c], self.trials[:c], self.events[c:],
                               self.trials[c:]),
            "p95": ValueData(p95[:c], p95[c:]),
            "memory": ValueData(self.memory[:c], self.memory[c:]),
        }


def run(fleet: Fleet, config: CanaryConfig = CONFIG, looks: int = 12
        ) -> list[tuple[Outcome, str]]:
    states: dict[str, SequentialState] = {}
    seen = []
    for i in range(looks):
        verdict, states = judge_canary(config, fleet.look(), states, final=i == looks - 1)
        seen.append((verdict.outcome, verdict.reason))
        if verdict.outcome is Outcome.FAIL:
            break
    return seen


def test_an_equal_canary_passes_at_the_end_of_the_bake() -> None:
    seen = run(Fleet(canary_error=0.02))
    assert all(o is Outcome.CONTINUE for o, _ in seen[:-1])  # mann-whitney waits for the end
    assert seen[-1][0] is Outcome.PASS


def test_a_canary_with_more_errors_fails_early_on_its_critical_metric() -> None:
    seen = run(Fleet(canary_error=0.05, seed=1))
    assert seen[-1] == (Outcome.FAIL, "critical metric failed: errors")
    assert len(seen) < 12


def test_a_slower_canary_fails_its_latency_margin() -> None:
    seen = run(Fleet(canary_error=0.02, canary_slowdown=1.3, seed=2))
    outcome, reason = seen[-1]
    assert outcome is Outcome.FAIL and "score" in reason


def test_mann_whitney_judges_per_device_values_at_the_end() -> None:
    fleet = Fleet(canary_error=0.02, canary_memory=1.3, seed=3)
    states: dict[str, SequentialState] = {}
    verdict, states = judge_canary(CONFIG, fleet.look(), states)
    assert {m.name: m.outcome for m in verdict.metrics}["memory"] is Outcome.CONTINUE
    verdict, _ = judge_canary(CONFIG, fleet.look(), states, final=True)
    memory = {m.name: m for m in verdict.metrics}["memory"]
    assert memory.outcome is Outcome.FAIL and memory.p_value < 1e-6
    assert memory.effect == pytest.approx(0.3, abs=0.05)


def test_guard_rail_fails_before_any_statistics() -> None:
    fleet = Fleet(canary_error=0.5, canary=3, seed=4)  # too few devices for a test
    verdict, _ = judge_canary(CONFIG, fleet.look(), {})
    assert verdict.outcome is Outcome.FAIL
    assert verdict.reason == "guard rail: errors"
    errors = verdict.metrics[0]
    assert errors.guard_breached and errors.reason.startswith("hard limit crossed: 0.")


def test_not_enough_devices_is_its_own_answer() -> None:
    verdict, states = judge_canary(CONFIG, Fleet(canary_error=0.02, canary=4).look(), {})
    assert verdict.outcome is Outcome.NOT_ENOUGH_DATA
    assert states["errors"] == SequentialState()


def test_a_critical_metric_still_open_at_the_end_fails() -> None:
    fleet = Fleet(canary_error=0.02, seed=5)
    verdict, _ = judge_canary(CONFIG, fleet.look(), {}, final=True)  # one interval only
    assert verdict.outcome is Outcome.FAIL
    assert verdict.reason == "critical metric not shown non-inferior: errors"


def test_cuped_narrows_the_latency_interval() -> None:
    fleet = Fleet(canary_error=0.02, seed=6)
    pre = fleet.look()["p95"]
    post = fleet.look()["p95"]
    assert isinstance(pre, ValueData) and isinstance(post, ValueData)
    config = CanaryConfig((P95,))
    plain, _ = judge_canary(config, {"p95": post}, {})
    adjusted, _ = judge_canary(config, {"p95": ValueData(
        post.canary, post.control, canary_pre=pre.canary, control_pre=pre.control)}, {})
    width = [v.metrics[0].upper - v.metrics[0].lower for v in (plain, adjusted)]
    assert width[1] < 0.5 * width[0]
    assert adjusted.outcome is Outcome.PASS


def test_score_weights_metrics() -> None:
    light = CanaryMetric("p95", Method.VALUE, tolerance=0.1, weight=1.0)
    heavy = CanaryMetric("memory", Method.MANN_WHITNEY, tolerance=0.1, weight=3.0)
    fleet = Fleet(canary_error=0.02, canary_slowdown=1.5, seed=7)
    verdict, _ = judge_canary(CanaryConfig((light, heavy)), fleet.look(), {}, final=True)
    assert [m.outcome for m in verdict.metrics] == [Outcome.FAIL, Outcome.PASS]
    assert (verdict.outcome, verdict.score) == (Outcome.PASS, 75.0)


def test_configuration_errors() -> None:
    with pytest.raises(InvalidConfig):
        CanaryConfig(())
    with pytest.raises(InvalidConfig):
        CanaryConfig((ERRORS, ERRORS))
    with pytest.raises(InvalidConfig):
        CanaryMetric("x", Method.RATE, tolerance=-1.0)
    data = Fleet(canary_error=0.02).look()
    with pytest.raises(InvalidConfig, match="no data"):
        judge_canary(CONFIG, {"errors": data["errors"]}, {})
    with pytest.raises(InvalidConfig, match="per-device"):
        judge_canary(CanaryConfig((ERRORS,)), {"errors": data["p95"]}, {})
    with pytest.raises(InvalidConfig, match="log scale"):
        judge_canary(CanaryConfig((P95,)), {"p95": ValueData([0.0] * 20, [1.0] * 20)}, {})
