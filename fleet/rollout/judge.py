"""Statistical objections to a canary step: the issue-6 engine (``fleet.stats.canary``) on
per-device data, and drift of the canary devices' inputs and outputs against the package.

The planner stays pure: the runner computes a judgement here and hands it over in the
observation. The engine can fail a step (canary significantly worse than control beyond the
tolerance, a hard limit, or drift at the configured level); when it cannot tell yet, the
threshold gates of the planner decide, so small fleets and short bakes still progress.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge_runtime.monitor.histogram import LogHistogram
from edge_runtime.store.db import Database
from fleet.drift import DriftService
from fleet.rollout.machine import Rollout
from fleet.stats import sequential as seq
from fleet.stats.canary import (
    CanaryConfig,
    CanaryMetric,
    Method,
    Outcome,
    RateData,
    ValueData,
    judge_canary,
)
from fleet.stats.decisions import Level

MIN_DEVICES = 5  # per arm, before the per-device statistics are trusted
_DRIFT_RANK = {"warn": 1, "alert": 2}


@dataclass(frozen=True)
class Judgement:
    objection: str  # '' when the engine has nothing against the step
    details: dict[str, Any]


def _per_device(db: Database, name: str, version: str | None, devices: set[str],
                since: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if version is None or not devices:
        return out
    for row in db.query("SELECT device, requests, errors, latency FROM metrics WHERE name = ? "
                        "AND version = ? AND end >= ?", (name, version, since)):
        if row["device"] not in devices:
            continue
        d = out.setdefault(row["device"], {"requests": 0, "errors": 0, "h": LogHistogram()})
        d["requests"] += row["requests"]
        d["errors"] += row["errors"]
        d["h"].merge(LogHistogram.from_dict(json.loads(row["latency"])))
    return out


def judge_step(db: Database, drift: DriftService | None, r: Rollout, *, canary: set[str],
               control: set[str], states: dict[str, Any]) -> tuple[Judgement, dict[str, Any]]:
    """The objection (if any) and the sequential states to persist for this step."""
    cfg = r.config
    details: dict[str, Any] = {}
    if drift is not None and cfg.max_drift in _DRIFT_RANK and canary:
        level, reasons = drift.fleet_level(r.name, r.version, since=r.step_started,
                                           devices=canary)
        details["drift"] = {"level": level.value, "reasons": reasons[:5]}
        if level in (Level.WARN, Level.ALERT) and _DRIFT_RANK[level.value] >= _DRIFT_RANK[
                cfg.max_drift]:
            return Judgement(f"canary drift {level.value}: {'; '.join(reasons[:3])}",
                             details), states
    c = _per_device(db, r.name, r.version, canary, r.step_started)
    k = _per_device(db, r.name, r.from_version, control, r.step_started)
    c = {d: v for d, v in c.items() if v["requests"]}
    k = {d: v for d, v in k.items() if v["requests"]}
    if min(len(c), len(k)) < MIN_DEVICES:
        details["engine"] = f"not enough devices per arm ({len(c)}/{len(k)} < {MIN_DEVICES})"
        return Judgement("", details), states
    config = CanaryConfig((
        CanaryMetric("error_rate", Method.RATE, tolerance=cfg.max_error_increase,
                     critical=True, hard_limit=cfg.max_error_rate, min_units=MIN_DEVICES),
        CanaryMetric("p95_latency", Method.VALUE, tolerance=max(cfg.max_p95_ratio - 1, 0.0),
                     critical=True, min_units=MIN_DEVICES)))
    data: dict[str, RateData | ValueData] = {
        "error_rate": RateData([v["errors"] for v in c.values()],
                               [v["requests"] for v in c.values()],
                               [v["errors"] for v in k.values()],
                               [v["requests"] for v in k.values()]),
        "p95_latency": ValueData([v["h"].quantile(0.95) for v in c.values() if v["h"].count],
                                 [v["h"].quantile(0.95) for v in k.values() if v["h"].count]),
    }
    old = {n: seq.SequentialState(**s) for n, s in states.items()}
    verdict, new = judge_canary(config, data, old)
    details["engine"] = {"outcome": verdict.outcome.value, "score": verdict.score,
                         "reason": verdict.reason}
    saved = {n: s.__dict__ for n, s in new.items()}
    if verdict.outcome is Outcome.FAIL:
        return Judgement(f"canary judge: {verdict.reason}", details), saved
    return Judgement("", details), saved
