"""Canary judgement (Kayenta-like): canary devices against concurrent control devices.

A device is the unit: requests of one device are correlated, so rates are pooled per device
with a delta-method variance and latencies compared as per-device values. Per metric:

* ``rate`` (errors, crashes): always-valid sequential test of canary - control, so the gate may
  look after every report. FAIL when the canary is significantly worse and the estimate exceeds
  ``tolerance`` (absolute); PASS when the whole confidence sequence is within ``tolerance``.
* ``value`` (p95 latency per device, ...): the same on log values, so ``tolerance`` is relative
  (0.1: at most 10% slower): a non-inferiority margin. Optional CUPED on pre-period values.
* ``mann-whitney``: Kayenta's fixed-horizon test on per-device values, decided once, at the end
  of the bake (``final=True``): FAIL when the two-sided p < alpha and the Hodges-Lehmann shift is
  worse than ``tolerance`` relative to the control median.

Guard rails: a metric with ``hard_limit`` fails the canary as soon as the canary's pooled value
crosses it, whatever the statistics say. The verdict: any guard rail or failing *critical*
metric fails; otherwise the weighted share of passing metrics is the score (0-100) and the
canary passes at ``pass_score``. "Not enough data yet" is its own verdict; at the final look a
metric that is still undecided counts as not passing (a canary must show it is not worse).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from fleet.stats import sequential as seq
from fleet.stats.errors import InvalidConfig


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    CONTINUE = "continue"
    NOT_ENOUGH_DATA = "not enough data yet"


class Method(StrEnum):
    RATE = "rate"
    VALUE = "value"
    MANN_WHITNEY = "mann-whitney"


_DEFAULT_TAU = {Method.RATE: 0.01, Method.VALUE: 0.1}


@dataclass(frozen=True)
class CanaryMetric:
    name: str
    method: Method
    tolerance: float  # rate: absolute increase; value / mann-whitney: relative (0.1 = 10%)
    weight: float = 1.0
    critical: bool = False
    hard_limit: float | None = None  # guard rail on the canary's pooled value
    higher_is_worse: bool = True
    min_units: int = 10  # devices per arm
    tau: float | None = None  # mixture scale (sequential methods); None: a default per method
    guard_min_trials: int = 100  # rate guard rails wait for this many canary trials

    def __post_init__(self) -> None:
        if self.tolerance < 0 or self.weight <= 0 or self.min_units < 2:
            raise InvalidConfig(self.name, "need tolerance >= 0, weight > 0, min_units >= 2")


@dataclass(frozen=True)
class RateData:
    """Per-device counts of each arm (errors and requests, crashes and hours, ...), cumulative
    since the canary started."""

    canary_events: Any
    canary_trials: Any
    control_events: Any
    control_trials: Any


@dataclass(frozen=True)
class ValueData:
    """Per-device values of each arm; ``pre`` values enable CUPED; ``pooled`` is the canary
    arm's pooled value for guard rails (e.g. p95 of its merged latency histogram).

    Values cover the whole canary so far (each device's p95 from its histograms merged since
    the start), not the last interval: the sequential test is valid when every look extends
    the data of the previous one; fresh values per look would be a new test each time.
    """

    canary: Any
    control: Any
    canary_pre: Any = None
    control_pre: Any = None
    pooled: float | None = None


@dataclass(frozen=True)
class CanaryConfig:
    metrics: tuple[CanaryMetric, ...]
    alpha: float = 0.05
    pass_score: float = 75.0

    def __post_init__(self) -> None:
        if not self.metrics or len({m.name for m in self.metrics}) != len(self.metrics):
            raise InvalidConfig("metrics", "need at least one metric, names unique")


@dataclass(frozen=True)
class MetricResult:
    name: str
    outcome: Outcome
    effect: float = math.nan  # canary - control (rate) or log ratio / relative shift (values)
    lower: float = -math.inf
    upper: float = math.inf
    p_value: float = 1.0
    guard_breached: bool = False
    reason: str = ""


@dataclass(frozen=True)
class CanaryVerdict:
    outcome: Outcome
    score: float
    reason: str
    metrics: tuple[MetricResult, ...] = field(default=())


def judge_canary(config: CanaryConfig, data: Mapping[str, RateData | ValueData],
                 states: Mapping[str, seq.SequentialState], *, final: bool = False
                 ) -> tuple[CanaryVerdict, dict[str, seq.SequentialState]]:
    """One look at the canary. Persist the returned states and pass them in next time."""
    results, new_states = [], dict(states)
    for m in config.metrics:
        if m.name not in data:
            raise InvalidConfig(m.name, "no data for this metric")
        state = states.get(m.name, seq.SequentialState())
        result, new_states[m.name] = _judge_metric(m, data[m.name], state, config.alpha, final)
        results.append(result)
    return _verdict(config, tuple(results), final), new_states


def _judge_metric(m: CanaryMetric, d: RateData | ValueData, state: seq.SequentialState,
                  alpha: float, final: bool) -> tuple[MetricResult, seq.SequentialState]:
    guard = _guard(m, d)
    if m.method is Method.MANN_WHITNEY:
        if not isinstance(d, ValueData):
            raise InvalidConfig(m.name, "mann-whitney needs per-device values")
        return _with_guard(_mann_whitney(m, d, alpha, final), guard), state
    est, tolerance = _estimate(m, d)
    test = seq.SequentialTest(tau=m.tau or _DEFAULT_TAU[m.method], alpha=alpha,
                              higher_is_better=not m.higher_is_worse, min_n=m.min_units)
    new = seq.update(test, state, est)
    if seq.decide(test, new, est) is seq.Decision.NOT_ENOUGH_DATA:
        result = MetricResult(m.name, Outcome.NOT_ENOUGH_DATA, est.effect, reason="too few units")
        return _with_guard(result, guard), new
    sign = 1.0 if m.higher_is_worse else -1.0
    worse_lo, worse_hi = sorted((sign * new.lower, sign * new.upper))
    worse = sign * new.effect
    if new.p_value <= alpha and worse_lo > 0 and worse > tolerance:
        outcome, why = Outcome.FAIL, f"worse by {worse:.3g} > tolerance {tolerance:.3g}"
    elif worse_hi <= tolerance:
        outcome, why = Outcome.PASS, f"at most {worse_hi:.3g} worse (tolerance {tolerance:.3g})"
    else:
        outcome, why = Outcome.CONTINUE, "confidence sequence still spans the tolerance"
    result = MetricResult(m.name, outcome, new.effect, new.lower, new.upper, new.p_value,
                          reason=why)
    return _with_guard(result, guard), new


def _estimate(m: CanaryMetric, d: RateData | ValueData) -> tuple[seq.Estimate, float]:
    """Control is arm a, canary arm b; values on the log scale (relative tolerance)."""
    if m.method is Method.RATE:
        if not isinstance(d, RateData):
            raise InvalidConfig(m.name, "a rate metric needs per-device events and trials")
        return seq.ratio_per_unit(d.control_events, d.control_trials, d.canary_events,
                                  d.canary_trials), m.tolerance
    if not isinstance(d, ValueData):
        raise InvalidConfig(m.name, "a value metric needs per-device values")
    canary, control = _log(m, d.canary), _log(m, d.control)
    if d.canary_pre is not None and d.control_pre is not None:
        adj = seq.cuped(control, _log(m, d.control_pre), canary, _log(m, d.canary_pre))
        control, canary = adj.adjusted_a, adj.adjusted_b
    return seq.means(control, canary), math.log1p(m.tolerance)


def _log(m: CanaryMetric, values: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
    v = np.asarray(values, np.float64)
    if (v <= 0).any():
        raise InvalidConfig(m.name, "value metrics are compared on the log scale: need > 0")
    return np.log(v)


def _mann_whitney(m: CanaryMetric, d: ValueData, alpha: float, final: bool) -> MetricResult:
    canary, control = np.asarray(d.canary, np.float64), np.asarray(d.control, np.float64)
    if min(canary.size, control.size) < m.min_units:
        return MetricResult(m.name, Outcome.NOT_ENOUGH_DATA, reason="too few units")
    if not final:
        return MetricResult(m.name, Outcome.CONTINUE, reason="decided at the end of the bake")
    from scipy import stats  # heavy (~0.3 s); only final judgements need it

    p = float(stats.mannwhitneyu(canary, control, alternative="two-sided").pvalue)
    # Hodges-Lehmann: the median of all canary - control differences, relative to control.
    shift = float(np.median(np.subtract.outer(canary, control)))
    base = abs(float(np.median(control))) or 1.0
    worse = (shift if m.higher_is_worse else -shift) / base
    if p < alpha and worse > m.tolerance:
        outcome, why = Outcome.FAIL, f"{worse:+.1%} vs control (tolerance {m.tolerance:.0%})"
    else:
        outcome, why = Outcome.PASS, f"{worse:+.1%} vs control, p={p:.3g}"
    return MetricResult(m.name, outcome, shift / base, p_value=p, reason=why)


def _guard(m: CanaryMetric, d: RateData | ValueData) -> float | None:
    """The canary's pooled value if it crosses the hard limit, else None."""
    if m.hard_limit is None:
        return None
    if isinstance(d, RateData):
        trials = float(np.sum(d.canary_trials))
        if trials < m.guard_min_trials:
            return None
        value = float(np.sum(d.canary_events)) / trials
    else:
        canary = np.asarray(d.canary, np.float64)
        if d.pooled is None and canary.size == 0:
            return None
        value = d.pooled if d.pooled is not None else float(np.median(canary))
    crossed = value > m.hard_limit if m.higher_is_worse else value < m.hard_limit
    return value if crossed else None


def _with_guard(result: MetricResult, guard: float | None) -> MetricResult:
    if guard is None:
        return result
    return MetricResult(result.name, Outcome.FAIL, result.effect, result.lower, result.upper,
                        result.p_value, True, f"hard limit crossed: {guard:.4g}")


def _verdict(config: CanaryConfig, results: tuple[MetricResult, ...], final: bool
             ) -> CanaryVerdict:
    by = {r.name: r for r in results}
    total = sum(m.weight for m in config.metrics)
    passed = sum(m.weight for m in config.metrics if by[m.name].outcome is Outcome.PASS)
    failed = sum(m.weight for m in config.metrics if by[m.name].outcome is Outcome.FAIL)
    score, best = 100.0 * passed / total, 100.0 * (total - failed) / total

    def verdict(outcome: Outcome, reason: str) -> CanaryVerdict:
        return CanaryVerdict(outcome, score, reason, results)

    if guards := [r.name for r in results if r.guard_breached]:
        return verdict(Outcome.FAIL, f"guard rail: {', '.join(guards)}")
    critical = [m for m in config.metrics if m.critical]
    if bad := [m.name for m in critical if by[m.name].outcome is Outcome.FAIL]:
        return verdict(Outcome.FAIL, f"critical metric failed: {', '.join(bad)}")
    if best < config.pass_score:
        return verdict(Outcome.FAIL, f"score can reach at most {best:.0f} < {config.pass_score}")
    if any(r.outcome is Outcome.NOT_ENOUGH_DATA for r in results):
        return verdict(Outcome.NOT_ENOUGH_DATA, "some metrics have too few devices")
    undecided = [m for m in config.metrics if by[m.name].outcome is Outcome.CONTINUE]
    if undecided and not final:
        return verdict(Outcome.CONTINUE, f"undecided: {', '.join(m.name for m in undecided)}")
    if open_critical := [m.name for m in undecided if m.critical]:
        return verdict(Outcome.FAIL, f"critical metric not shown non-inferior: "
                                     f"{', '.join(open_critical)}")
    if score >= config.pass_score:
        return verdict(Outcome.PASS, f"score {score:.0f} >= {config.pass_score}")
    return verdict(Outcome.FAIL, f"score {score:.0f} < {config.pass_score}")
