"""Runs the rollout planner: observe (DB), plan (pure), save the rollout, then apply the actions.

Actions are idempotent and terminal states are reconciled every tick, so a manager killed
between saving a state and applying its actions finishes the job after a restart.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict
from typing import Any

from edge_runtime.monitor.histogram import LogHistogram
from edge_runtime.store.db import Database
from fleet.desired import DesiredStates
from fleet.drift import DriftService
from fleet.errors import RolloutConflict, RolloutNotFound
from fleet.inventory import Inventory, Target
from fleet.registry import ModelRegistry
from fleet.rollout.judge import judge_step
from fleet.rollout.machine import (
    LIVE,
    ArmMetrics,
    Assign,
    Command,
    DeviceObs,
    Observation,
    Promote,
    Revert,
    Rollout,
    RolloutConfig,
    RState,
    plan,
)


def _judging(r: Rollout, now: float, command: Command | None) -> bool:
    """Whether plan() may read the arms' metrics now: only a bake that is over, with metric
    gates on, is judged on them (see machine._bake). Reading them means scanning every
    interval since the step started, so the other ticks skip it."""
    return (command is None and r.state is RState.BAKING and r.config.min_requests > 0
            and now >= r.step_started + r.config.bake_s)


def _row(r: Any) -> Rollout:
    return Rollout(r["id"], r["name"], r["version"], r["from_version"], r["target"],
                   RolloutConfig.from_dict(json.loads(r["config"])), RState(r["state"]),
                   r["step"], r["step_started"],
                   RState(r["paused_from"]) if r["paused_from"] else None, r["reason"],
                   tuple(json.loads(r["history"])))


class RolloutRunner:
    def __init__(self, db: Database, registry: ModelRegistry, inventory: Inventory,
                 desired: DesiredStates, *, drift: DriftService | None = None) -> None:
        self.drift = drift
        self.db = db
        self.registry = registry
        self.inventory = inventory
        self.desired = desired

    # -- commands from the CLI (rows in the DB; the manager's tick applies them) --------------
    def start(self, name: str, version: str, target: Target, config: RolloutConfig) -> Rollout:
        mv = self.registry.resolve(name, version)
        for r in self.all(live_only=True):
            if r.name == name:
                raise RolloutConflict(name, r.id)
        from_version = self.registry.aliases(name).get("production")
        rid = f"ro-{uuid.uuid4().hex[:10]}"
        now = time.time()
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO rollouts (id, name, version, from_version, target, config, "
                        "state, step, step_started, created_at, updated_at) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                        (rid, name, mv.version, from_version, str(target),
                         json.dumps(config.to_dict()), RState.DEPLOYING.value, now, now, now))
            cur.execute("INSERT INTO deployments VALUES (?, 'rollout', ?, ?, ?, ?, ?)",
                        (rid, name, mv.version, str(target), now,
                         json.dumps({"probation": config.probation})))
        return self.get(rid)

    def command(self, rid: str, command: Command) -> Rollout:
        self.get(rid)
        with self.db.transaction() as cur:
            cur.execute("UPDATE rollouts SET command = ? WHERE id = ?", (command.value, rid))
        return self.get(rid)

    def get(self, rid: str) -> Rollout:
        rows = self.db.query("SELECT * FROM rollouts WHERE id = ?", (rid,))
        if not rows:
            raise RolloutNotFound(rid)
        return _row(rows[0])

    def all(self, *, live_only: bool = False) -> list[Rollout]:
        rows = [_row(r) for r in self.db.query("SELECT * FROM rollouts ORDER BY created_at")]
        return [r for r in rows if r.state in LIVE] if live_only else rows

    # -- the tick --------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[str]:
        """Advance every live rollout; returns devices whose desired state may have changed."""
        now = time.time() if now is None else now
        touched: set[str] = set()
        for r in self.all():
            if r.state in LIVE:
                touched |= self._advance(r, now)
            touched |= self._reconcile(r)
        return sorted(touched)

    def _advance(self, r: Rollout, now: float) -> set[str]:
        cmd_row = self.db.query("SELECT command FROM rollouts WHERE id = ?", (r.id,))[0][0]
        command = Command(cmd_row) if cmd_row else None
        obs = self._observe(r, now, command, metrics=_judging(r, now, command))
        nxt, actions = plan(r, obs)
        if nxt != r or cmd_row:
            self._save(nxt, now)
        return self._apply(nxt, actions, now)

    def _save(self, r: Rollout, now: float) -> None:
        with self.db.transaction() as cur:
            cur.execute("UPDATE rollouts SET state = ?, step = ?, step_started = ?, "
                        "paused_from = ?, reason = ?, history = ?, command = NULL, "
                        "updated_at = ? WHERE id = ?",
                        (r.state.value, r.step, r.step_started,
                         r.paused_from.value if r.paused_from else None, r.reason,
                         json.dumps(list(r.history)), now, r.id))

    def _apply(self, r: Rollout, actions: list[Any], now: float) -> set[str]:
        touched: set[str] = set()
        for action in actions:
            if isinstance(action, Assign) and action.devices:
                with self.db.transaction() as cur:
                    self.desired.assign(cur, action.devices, r.name, r.version, r.id)
                    cur.executemany("INSERT OR IGNORE INTO rollout_devices VALUES (?, ?, ?, ?)",
                                    [(r.id, d, r.step, now) for d in action.devices])
                touched |= set(action.devices)
            elif isinstance(action, Revert):
                touched |= self._revert(r, action.devices)
            elif isinstance(action, Promote):
                self.registry.set_alias(r.name, "production", r.version)
        return touched

    def _revert(self, r: Rollout, devices: tuple[str, ...]) -> set[str]:
        with self.db.transaction() as cur:
            if r.from_version is not None:
                self.desired.assign(cur, devices, r.name, r.from_version, f"{r.id}.rollback")
            else:
                cur.executemany("DELETE FROM assignments WHERE device = ? AND name = ?",
                                [(d, r.name) for d in devices])
            cur.executemany("DELETE FROM rollout_devices WHERE rollout = ? AND device = ?",
                            [(r.id, d) for d in devices])
        return set(devices)

    def _reconcile(self, r: Rollout) -> set[str]:
        """Terminal states imply facts; make them true (after a crash between save and act)."""
        if r.state in (RState.ROLLED_BACK, RState.ABORTED):
            left = tuple(row[0] for row in self.db.query(
                "SELECT device FROM rollout_devices WHERE rollout = ?", (r.id,)))
            return self._revert(r, left) if left else set()
        if r.state is RState.COMPLETED and self.registry.aliases(r.name).get(
                "production") != r.version and not self._superseded(r):
            self.registry.set_alias(r.name, "production", r.version)
        return set()

    def _superseded(self, r: Rollout) -> bool:
        later = self.db.query("SELECT 1 FROM rollouts WHERE name = ? AND created_at > "
                              "(SELECT created_at FROM rollouts WHERE id = ?)", (r.name, r.id))
        return bool(later)

    # -- observation -----------------------------------------------------------------------------
    def _observe(self, r: Rollout, now: float, command: Command | None, *,
                 metrics: bool = True) -> Observation:
        targeted = self.inventory.ids(Target.parse(r.target))
        assigned = {row["device"]: row["since"] for row in self.db.query(
            "SELECT device, since FROM rollout_devices WHERE rollout = ?", (r.id,))}
        states = {row["device"]: row["state"] for row in self.db.query(
            "SELECT device, state FROM device_state WHERE deployment = ? AND name = ?",
            (r.id, r.name))}
        devices = tuple(DeviceObs(d, d in assigned, states.get(d), assigned.get(d))
                        for d in sorted(set(targeted) | set(assigned)))
        if not metrics:
            return Observation(now, devices, command=command)
        canary = [d for d in assigned if states.get(d) == "committed"]
        control = [d for d in targeted if d not in assigned]
        objection = ""
        if r.state is RState.BAKING and now >= r.step_started + r.config.bake_s:
            objection = self._judge(r, set(canary), set(control))
        return Observation(
            now, devices,
            canary=self.arm_metrics(r.name, r.version, canary, r.step_started),
            control=self.arm_metrics(r.name, r.from_version, control, r.step_started),
            command=command, objection=objection)

    def _judge(self, r: Rollout, canary: set[str], control: set[str]) -> str:
        """Run the statistics engine for this step; its sequential states persist per step."""
        row = self.db.query("SELECT judge FROM rollouts WHERE id = ?", (r.id,))
        saved = json.loads(row[0][0]) if row else {}
        key = f"step{r.step}"
        judgement, states = judge_step(self.db, self.drift, r, canary=canary, control=control,
                                       states=saved.get(key, {}))
        saved[key] = states
        saved[f"{key}_details"] = judgement.details
        with self.db.transaction() as cur:
            cur.execute("UPDATE rollouts SET judge = ? WHERE id = ?",
                        (json.dumps(saved, default=str), r.id))
        return judgement.objection

    def arm_metrics(self, name: str, version: str | None, devices: list[str],
                    since: float) -> ArmMetrics:
        if version is None or not devices:
            return ArmMetrics()
        wanted = set(devices)
        rows = self.db.query("SELECT device, requests, errors, latency FROM metrics WHERE "
                             "name = ? AND version = ? AND end >= ?", (name, version, since))
        hist: LogHistogram | None = None
        requests = errors = 0
        for row in rows:
            if row["device"] not in wanted:
                continue
            requests += row["requests"]
            errors += row["errors"]
            h = LogHistogram.from_dict(json.loads(row["latency"]))
            if hist is None:
                hist = h
            else:
                hist.merge(h)
        p95 = hist.quantile(0.95) if hist is not None and hist.count else None
        return ArmMetrics(requests, errors, p95)

    def status(self, rid: str) -> dict[str, Any]:
        r = self.get(rid)
        obs = self._observe(r, time.time(), None)
        assigned = [d for d in obs.devices if d.assigned]
        counts: dict[str, int] = {}
        for d in assigned:
            counts[d.state or "pending"] = counts.get(d.state or "pending", 0) + 1
        return {"id": r.id, "name": r.name, "version": r.version,
                "from_version": r.from_version, "target": r.target, "state": r.state.value,
                "paused_from": r.paused_from.value if r.paused_from else None,
                "reason": r.reason, "step": r.step, "percent": r.percent,
                "steps": list(r.config.steps), "history": list(r.history),
                "targeted": len(obs.devices), "assigned": len(assigned),
                "device_states": counts, "canary": asdict(obs.canary),
                "control": asdict(obs.control), "config": r.config.to_dict()}
