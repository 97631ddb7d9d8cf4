"""A/B experiments between two versions of a model.

``unit=device``: each targeted device runs A or B, by SHA-256 of (experiment id, device id).
``unit=request``: every targeted device runs A and loads B beside it; each request goes to an arm
by SHA-256 of (experiment id, request id) on the device.

Every metric (error rate, latency, accuracy from label feedback) gets an always-valid sequential
test (``fleet.stats.sequential``), looked at on the manager's timer; its state is persisted so
every look extends the one before. A winner is declared only when a test says so.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import asdict, replace
from typing import Any

from edge_runtime.monitor.histogram import LogHistogram
from edge_runtime.protocol import messages as m
from edge_runtime.protocol.assignment import assign
from edge_runtime.store.db import Database
from fleet.desired import DesiredStates
from fleet.errors import FleetError, PromoteWorseArm
from fleet.inventory import Inventory, Target
from fleet.registry import ModelRegistry
from fleet.stats import sequential as seq

UNITS = ("device", "request")
# Per metric: the effect that matters (tau), whether higher is better, the equivalence margin,
# and the units per arm before any answer (requests for request-level rates, devices otherwise).
TESTS = {
    "error_rate": seq.SequentialTest(tau=0.01, higher_is_better=False, margin=0.005, min_n=100),
    "latency_ms": seq.SequentialTest(tau=0.5, higher_is_better=False, margin=0.2, min_n=5),
    "accuracy": seq.SequentialTest(tau=0.02, higher_is_better=True, margin=0.01, min_n=100),
}
DEVICE_MIN_N = 5
# The experiment judges the arms: devices must not roll an arm back on their own limits.
EXPERIMENT_PROBATION = {"seconds": 0.0, "max_error_rate": 1.0, "max_error_increase": 1.0,
                        "max_p95_ratio": 1e9}


def _test(unit: str, metric: str) -> seq.SequentialTest:
    test = TESTS[metric]
    if unit == "device" or metric == "latency_ms":
        return replace(test, min_n=DEVICE_MIN_N)
    return test


class Experiments:
    def __init__(self, db: Database, registry: ModelRegistry, inventory: Inventory,
                 desired: DesiredStates) -> None:
        self.db = db
        self.registry = registry
        self.inventory = inventory
        self.desired = desired
        desired.extras = self.desired_extra

    # -- commands ----------------------------------------------------------------------------
    def start(self, name: str, a: str, b: str, *, split: float, unit: str,
              target: Target, experiment_id: str | None = None) -> dict[str, Any]:
        va, vb = self.registry.resolve(name, a), self.registry.resolve(name, b)
        if unit not in UNITS or not 0 < split < 100 or va.version == vb.version:
            raise FleetError(f"an experiment needs two versions, --unit {'|'.join(UNITS)} and "
                             "0 < --split < 100")
        if self._running(name):
            raise FleetError(f"an experiment on {name} is already running; stop it first")
        eid = experiment_id or f"ex-{uuid.uuid4().hex[:10]}"
        now = time.time()
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO experiments (id, name, a, b, split, unit, target, state, "
                        "config, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, "
                        "'running', '{}', ?, ?)",
                        (eid, name, va.version, vb.version, split, unit, str(target), now, now))
            cur.execute("INSERT INTO deployments VALUES (?, 'experiment', ?, ?, ?, ?, ?)",
                        (eid, name, va.version, str(target), now,
                         json.dumps({"probation": EXPERIMENT_PROBATION})))
        return self.get(eid)

    def stop(self, eid: str, *, promote: str | None = None, force: bool = False
             ) -> dict[str, Any]:
        """End the experiment: every targeted device runs A, or the promoted arm. Promoting the
        arm the experiment's own test calls worse raises ``PromoteWorseArm`` unless ``force``."""
        exp = self.get(eid)
        if promote is not None and not force:
            status = self.status(eid)
            worse = {"b worse": "b", "b better": "a"}.get(status["decision"])
            if worse == promote:
                raise PromoteWorseArm(eid, promote, verdict_text(status))
        version = exp["b"] if promote == "b" else exp["a"]
        devices = [d.id for d in self.inventory.devices(Target.parse(exp["target"]))]
        with self.db.transaction() as cur:
            cur.execute("UPDATE experiments SET state = 'stopped', updated_at = ? WHERE id = ?",
                        (time.time(), eid))
            self.desired.assign(cur, devices, exp["name"], version, f"{eid}.stop")
        return self.get(eid)

    def get(self, eid: str) -> dict[str, Any]:
        rows = self.db.query("SELECT * FROM experiments WHERE id = ?", (eid,))
        if not rows:
            raise FleetError(f"no experiment {eid!r}")
        doc = dict(rows[0])
        doc["looks"] = json.loads(doc["looks"])
        return doc

    def all(self) -> list[dict[str, Any]]:
        return [self.get(r[0]) for r in self.db.query(
            "SELECT id FROM experiments ORDER BY created_at")]

    def _running(self, name: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.all() if e["state"] == "running"
                and (name is None or e["name"] == name)]

    # -- the manager's tick: arms -> assignments and desired-state blocks ----------------------
    def tick(self) -> set[str]:
        touched: set[str] = set()
        for exp in self._running():
            have = self.desired.assigned_devices(exp["name"])
            wanted = {d.id: self._arm_version(exp, d.id)
                      for d in self.inventory.devices(Target.parse(exp["target"]))}
            change = [d for d, v in wanted.items() if have.get(d) != v]
            with self.db.transaction() as cur:
                for version in {wanted[d] for d in change}:
                    self.desired.assign(cur, [d for d in change if wanted[d] == version],
                                        exp["name"], version, exp["id"])
            touched |= set(change)
        return touched

    def _arm_version(self, exp: dict[str, Any], device: str) -> str:
        if exp["unit"] == "request":
            return str(exp["a"])
        return str(exp["b"] if assign(exp["id"], device, split=exp["split"]) == "b"
                   else exp["a"])

    def desired_extra(self, device: str, name: str) -> dict[str, Any] | None:
        """The experiment block of a device's desired state (request-level experiments)."""
        for exp in self._running(name):
            if exp["unit"] != "request":
                continue
            if not Target.parse(exp["target"]).matches(self.inventory.get(device)):
                continue
            mv = self.registry.get(name, exp["b"])
            block = m.Experiment(exp["id"], mv.version, mv.artifact(), float(exp["split"]))
            doc = asdict(block)
            doc["artifact"]["chunks"] = list(doc["artifact"]["chunks"])
            return doc
        return None

    # -- looks ---------------------------------------------------------------------------------
    def look(self) -> None:
        for exp in self._running():
            arms = self.arm_data(exp)
            looks = dict(exp["looks"])
            for metric in TESTS:
                test = _test(exp["unit"], metric)
                est = _estimate(exp["unit"], metric, arms)
                prev = looks.get(metric, {}).get("state")
                state = seq.SequentialState(**prev) if prev else seq.SequentialState()
                state, result = seq.step(test, state, est)
                looks[metric] = {"state": asdict(state), "result": _clean(asdict(result)),
                                 "mean_a": _f(est.mean_a), "mean_b": _f(est.mean_b)}
            with self.db.transaction() as cur:
                cur.execute("UPDATE experiments SET looks = ?, updated_at = ? WHERE id = ?",
                            (json.dumps(looks), time.time(), exp["id"]))

    def arm_data(self, exp: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
        """Per arm, per device: requests, errors, latency histogram, labels and correct."""
        out: dict[str, dict[str, dict[str, Any]]] = {"a": {}, "b": {}}
        members = self.members(exp)
        for arm in ("a", "b"):
            version = exp[arm]
            for row in self.db.query("SELECT device, requests, errors, latency FROM metrics "
                                     "WHERE name = ? AND version = ? AND end >= ?",
                                     (exp["name"], version, exp["created_at"])):
                if row["device"] not in members[arm]:
                    continue
                d = out[arm].setdefault(row["device"], _empty())
                d["requests"] += row["requests"]
                d["errors"] += row["errors"]
                d["latency"].merge(LogHistogram.from_dict(json.loads(row["latency"])))
            for row in self.db.query("SELECT device, n, correct FROM feedback WHERE name = ? "
                                     "AND version = ? AND end >= ?",
                                     (exp["name"], version, exp["created_at"])):
                if row["device"] not in members[arm]:
                    continue
                d = out[arm].setdefault(row["device"], _empty())
                d["labels"] += row["n"]
                d["correct"] += row["correct"]
        return out

    def members(self, exp: dict[str, Any]) -> dict[str, set[str]]:
        """The targeted devices of each arm. By device the arms partition them (a device's
        windows from before its swap, under A's version, are not A's data); by request every
        device serves both arms."""
        devices = {d.id for d in self.inventory.devices(Target.parse(exp["target"]))}
        if exp["unit"] == "request":
            return {"a": devices, "b": set(devices)}
        b = {d for d in devices if assign(exp["id"], d, split=exp["split"]) == "b"}
        return {"a": devices - b, "b": b}

    def status(self, eid: str) -> dict[str, Any]:
        exp = self.get(eid)
        arms = self.arm_data(exp)
        members = self.members(exp)
        summary = {arm: {"assigned": len(members[arm]), "devices": len(d),
                         "requests": sum(v["requests"] for v in d.values()),
                         "errors": sum(v["errors"] for v in d.values()),
                         "labels": sum(v["labels"] for v in d.values())}
                   for arm, d in arms.items()}
        metrics = {k: {"decision": v["result"]["decision"], "effect": v["result"]["effect"],
                       "ci": [v["result"]["lower"], v["result"]["upper"]],
                       "p_value": v["result"]["p_value"], "a": v["mean_a"], "b": v["mean_b"]}
                   for k, v in exp["looks"].items()}
        return {**{k: exp[k] for k in ("id", "name", "a", "b", "split", "unit", "target",
                                       "state")},
                "arms": summary, "metrics": metrics, "decision": _overall(metrics)}


def verdict_text(status: dict[str, Any]) -> str:
    """The overall decision and the metrics behind it, e.g. "b worse: error_rate A 0 vs B
    0.203 (p=0.001)"."""
    behind = [f"{k} A {_num(v['a'])} vs B {_num(v['b'])} (p={_num(v['p_value'])})"
              for k, v in status["metrics"].items() if v["decision"] == status["decision"]]
    return str(status["decision"]) + (": " + "; ".join(behind) if behind else "")


def _num(x: float | None) -> str:
    return "no data" if x is None else f"{x:.3g}"


def _empty() -> dict[str, Any]:
    return {"requests": 0, "errors": 0, "latency": LogHistogram(), "labels": 0, "correct": 0}


def _estimate(unit: str, metric: str, arms: dict[str, dict[str, dict[str, Any]]]
              ) -> seq.Estimate:
    a, b = list(arms["a"].values()), list(arms["b"].values())
    if metric == "latency_ms":  # per-device mean latency: the device is the unit of variation
        def per_device(ds: list[dict[str, Any]]) -> list[float]:
            return [1000.0 * d["latency"].sum / d["latency"].count for d in ds
                    if d["latency"].count]
        return seq.means(per_device(a), per_device(b))
    events, trials = ("errors", "requests") if metric == "error_rate" else ("correct", "labels")
    if unit == "request":
        return seq.proportions(sum(d[events] for d in a), sum(d[trials] for d in a),
                               sum(d[events] for d in b), sum(d[trials] for d in b))
    a = [d for d in a if d[trials]]
    b = [d for d in b if d[trials]]
    return seq.ratio_per_unit([d[events] for d in a], [d[trials] for d in a],
                              [d[events] for d in b], [d[trials] for d in b])


def _overall(metrics: dict[str, Any]) -> str:
    """b worse if any metric says so; b better if one does and none says worse; no difference
    only when the error rate and every other metric with data show equivalence."""
    decisions = {k: v["decision"] for k, v in metrics.items()}
    if "b worse" in decisions.values():
        return "b worse"
    if "b better" in decisions.values():
        return "b better"
    judged = [d for d in decisions.values() if d != seq.Decision.NOT_ENOUGH_DATA.value]
    if decisions.get("error_rate") == "no difference" and all(
            d == "no difference" for d in judged):
        return "no difference"
    return "continue"


def _f(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: (_f(v) if isinstance(v, float) else v) for k, v in doc.items()}
