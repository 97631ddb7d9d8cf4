"""Canary rollouts: a transition table and a pure planner.

    deploying --all canary devices done--> baking --bake over, gates pass--> deploying (next step)
    baking --gates pass on the last step--> completed
    deploying/baking --gate fails--> rolled_back (on_failure=rollback) | paused (on_failure=pause)
    baking --not enough data after max_wait--> paused
    any live state --pause--> paused --resume--> the state it was paused in
    any live state --abort--> aborted; --promote--> completed

``plan(rollout, observation)`` returns the next rollout and the actions to apply once it is
saved. Devices are picked by a hash of rollout id and device id, so a restart (or a device that
joins later) lands on the same side of every step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class RState(StrEnum):
    DEPLOYING = "deploying"
    BAKING = "baking"
    PAUSED = "paused"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


class Command(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    PROMOTE = "promote"


LIVE = frozenset({RState.DEPLOYING, RState.BAKING, RState.PAUSED})
TRANSITIONS: dict[tuple[RState, str], RState] = {
    (RState.DEPLOYING, "devices_done"): RState.BAKING,
    (RState.BAKING, "gates_pass"): RState.DEPLOYING,
    (RState.BAKING, "gates_pass_last"): RState.COMPLETED,
    (RState.DEPLOYING, "gate_fail_rollback"): RState.ROLLED_BACK,
    (RState.BAKING, "gate_fail_rollback"): RState.ROLLED_BACK,
    (RState.DEPLOYING, "gate_fail_pause"): RState.PAUSED,
    (RState.BAKING, "gate_fail_pause"): RState.PAUSED,
    (RState.BAKING, "no_data"): RState.PAUSED,
}
for _s in LIVE:
    TRANSITIONS[(_s, Command.ABORT)] = RState.ABORTED
    TRANSITIONS[(_s, Command.PROMOTE)] = RState.COMPLETED
TRANSITIONS[(RState.DEPLOYING, Command.PAUSE)] = RState.PAUSED
TRANSITIONS[(RState.BAKING, Command.PAUSE)] = RState.PAUSED

DONE_STATES = frozenset({"committed"})
FAILED_STATES = frozenset({"failed", "rolled_back"})


@dataclass(frozen=True)
class RolloutConfig:
    steps: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    bake_s: float = 600.0
    device_timeout_s: float = 600.0
    on_timeout: str = "fail"  # fail | skip
    max_failures: int = 0  # install failures + device rollbacks tolerated per step
    min_requests: int = 20  # canary requests before metric gates judge (0 = no metric gates)
    max_wait_s: float = 1800.0  # after the bake, how long to wait for data before pausing
    max_error_rate: float = 0.05
    max_error_increase: float = 0.02
    max_p95_ratio: float = 1.5
    on_failure: str = "rollback"  # rollback | pause
    max_drift: str = "alert"  # canary drift at this level fails the step: warn | alert | off
    probation: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RolloutConfig:
        d = dict(d)
        d["steps"] = tuple(float(s) for s in d.get("steps", cls.steps))
        return cls(**d)


@dataclass(frozen=True)
class Rollout:
    id: str
    name: str
    version: str
    from_version: str | None
    target: str
    config: RolloutConfig
    state: RState
    step: int
    step_started: float
    paused_from: RState | None = None
    reason: str = ""
    history: tuple[str, ...] = ()

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def percent(self) -> float:
        return self.config.steps[min(self.step, len(self.config.steps) - 1)]


@dataclass(frozen=True)
class DeviceObs:
    id: str
    assigned: bool  # holds this rollout's version in its desired state
    state: str | None  # latest swap state reported for this rollout's deployment
    since: float | None  # when it was assigned


@dataclass(frozen=True)
class ArmMetrics:
    requests: int = 0
    errors: int = 0
    p95_s: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Observation:
    now: float
    devices: tuple[DeviceObs, ...]  # every device the target selects, right now
    canary: ArmMetrics = ArmMetrics()
    control: ArmMetrics = ArmMetrics()
    command: Command | None = None
    objection: str = ""  # the statistics engine's reason to fail this step (fleet.rollout.judge)


@dataclass(frozen=True)
class Assign:
    devices: tuple[str, ...]


@dataclass(frozen=True)
class Revert:
    devices: tuple[str, ...]


@dataclass(frozen=True)
class Promote:
    """Set the production alias to the rollout's version."""


Action = Assign | Revert | Promote


def fraction(rollout_id: str, device: str) -> float:
    digest = hashlib.sha256(f"{rollout_id}:{device}".encode()).hexdigest()
    return int(digest[:15], 16) / float(16 ** 15)


def canary_set(r: Rollout, devices: tuple[DeviceObs, ...]) -> set[str]:
    """Devices whose hash falls under this step's percentage (at least one)."""
    if not devices:
        return set()
    share = r.percent / 100.0
    fracs = {d.id: fraction(r.id, d.id) for d in devices}
    chosen = {d for d, f in fracs.items() if f < share}
    if share >= 1.0:
        return set(fracs)
    return chosen or {min(fracs, key=fracs.__getitem__)}


def _move(r: Rollout, event: str, **changes: Any) -> Rollout:
    nxt = TRANSITIONS[(r.state, event)]
    return replace(r, state=nxt, history=(*r.history, f"{event}->{nxt.value}"), **changes)


def plan(r: Rollout, obs: Observation) -> tuple[Rollout, list[Action]]:
    if not r.live:
        return r, []
    if obs.command is not None:
        return _command(r, obs)
    if r.state is RState.PAUSED:
        return r, []
    failed, waiting, actions = _devices(r, obs)
    if len(failed) > r.config.max_failures:
        return _gate_failed(r, obs, f"{len(failed)} device(s) failed or rolled back: "
                                    f"{', '.join(sorted(failed)[:5])}")
    if r.state is RState.DEPLOYING:
        if not waiting and not actions:
            return _move(r, "devices_done", step_started=obs.now), []
        return r, actions
    return _bake(r, obs, actions)


def _devices(r: Rollout, obs: Observation) -> tuple[set[str], set[str], list[Action]]:
    canary = canary_set(r, obs.devices)
    by_id = {d.id: d for d in obs.devices}
    new = tuple(sorted(d for d in canary if not by_id[d].assigned))
    failed, waiting = set(), set()
    for d in obs.devices:
        if not d.assigned:
            continue
        if d.state in FAILED_STATES:
            failed.add(d.id)
        elif d.state not in DONE_STATES:
            late = d.since is not None and obs.now - d.since > r.config.device_timeout_s
            if late and r.config.on_timeout == "fail":
                failed.add(d.id)
            elif not late:
                waiting.add(d.id)
    return failed, waiting, [Assign(new)] if new else []


def _bake(r: Rollout, obs: Observation, actions: list[Action]) -> tuple[Rollout, list[Action]]:
    cfg = r.config
    if actions or obs.now < r.step_started + cfg.bake_s:
        return r, actions
    if cfg.min_requests > 0:
        if obs.canary.requests < cfg.min_requests:
            if obs.now > r.step_started + cfg.bake_s + cfg.max_wait_s:
                return _move(r, "no_data", paused_from=RState.BAKING,
                             reason=f"not enough data: {obs.canary.requests} canary requests "
                                    f"< {cfg.min_requests}"), []
            return r, []
        verdict = obs.objection or metric_gates(cfg, obs.canary, obs.control)
        if verdict:
            return _gate_failed(r, obs, verdict)
    if r.step + 1 >= len(cfg.steps):
        return _move(r, "gates_pass_last", reason="all steps passed"), [Promote()]
    return _move(r, "gates_pass", step=r.step + 1, step_started=obs.now), []


def metric_gates(cfg: RolloutConfig, canary: ArmMetrics, control: ArmMetrics) -> str:
    """The first broken gate, or '' when all pass."""
    if canary.error_rate > cfg.max_error_rate:
        return f"canary error rate {canary.error_rate:.3f} > {cfg.max_error_rate:.3f}"
    if control.requests >= cfg.min_requests > 0 and (
            canary.error_rate > control.error_rate + cfg.max_error_increase):
        return (f"canary error rate {canary.error_rate:.3f} > control "
                f"{control.error_rate:.3f} + {cfg.max_error_increase:.3f}")
    if control.p95_s and canary.p95_s and canary.p95_s > cfg.max_p95_ratio * control.p95_s:
        return (f"canary p95 {1000 * canary.p95_s:.2f} ms > {cfg.max_p95_ratio:g}x control "
                f"{1000 * control.p95_s:.2f} ms")
    return ""


def _assigned(obs: Observation) -> tuple[str, ...]:
    return tuple(sorted(d.id for d in obs.devices if d.assigned))


def _gate_failed(r: Rollout, obs: Observation, reason: str) -> tuple[Rollout, list[Action]]:
    if r.config.on_failure == "pause":
        return _move(r, "gate_fail_pause", paused_from=r.state, reason=reason), []
    return _move(r, "gate_fail_rollback", reason=reason), [Revert(_assigned(obs))]


def _command(r: Rollout, obs: Observation) -> tuple[Rollout, list[Action]]:
    cmd = obs.command
    if cmd is Command.RESUME:
        if r.state is not RState.PAUSED or r.paused_from is None:
            return r, []
        return replace(r, state=r.paused_from, paused_from=None, step_started=obs.now,
                       reason="resumed", history=(*r.history, f"resume->{r.paused_from}")), []
    assert cmd is not None
    if (r.state, cmd) not in TRANSITIONS:
        return r, []
    if cmd is Command.ABORT:
        return _move(r, cmd, reason="aborted"), [Revert(_assigned(obs))]
    if cmd is Command.PROMOTE:
        everyone = tuple(sorted(d.id for d in obs.devices if not d.assigned))
        return _move(r, cmd, reason="promoted"), [Assign(everyone), Promote()]
    return _move(r, cmd, paused_from=r.state, reason="paused"), []
