"""`edgectl rollout start|status|list|pause|resume|abort|promote`."""

from __future__ import annotations

import re
from typing import Any

import click

from edge_runtime.errors import ConfigError
from edge_runtime.textable import render
from fleet.cli_fleet import fleet_opts, json_opt, open_fleet, out
from fleet.inventory import Target
from fleet.rollout.machine import Command, RolloutConfig

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise ConfigError(f"duration {text!r} must look like 30s, 10m, 1h or 0")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def parse_steps(text: str) -> tuple[float, ...]:
    if text.startswith("exp"):  # exponential ramp: exp or exp:N (1, 2, 4, ... 100)
        first = float(text.partition(":")[2] or 1)
        ramp, p = [], first
        while p < 100:
            ramp.append(p)
            p *= 2
        return (*ramp, 100.0)
    try:
        steps = tuple(float(s) for s in text.split(","))
    except ValueError as exc:
        raise ConfigError(f"--steps {text!r} must be percentages like 5,25,50,100") from exc
    if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(steps):
        raise ConfigError("--steps must be increasing percentages in (0, 100]")
    return steps if steps[-1] == 100 else (*steps, 100.0)


@click.group("rollout")
def rollout() -> None:
    """Canary rollouts with health gates and automatic rollback."""


@rollout.command("start")
@click.argument("name")
@click.argument("version")
@click.option("--to", "target", default="all", show_default=True)
@click.option("--steps", default="5,25,50,100", show_default=True,
              help="Percentages, or exp[:FIRST] for an exponential ramp.")
@click.option("--bake", default="10m", show_default=True, help="Bake time per step.")
@click.option("--device-timeout", default="10m", show_default=True)
@click.option("--on-timeout", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True, help="A device that never reports counts as failed, or skip.")
@click.option("--on-failure", type=click.Choice(["rollback", "pause"]), default="rollback",
              show_default=True)
@click.option("--max-failures", type=int, default=0, show_default=True)
@click.option("--min-requests", type=int, default=20, show_default=True,
              help="Canary requests needed before metric gates judge (0: no metric gates).")
@click.option("--max-wait", default="30m", show_default=True,
              help="After the bake, how long to wait for data before pausing.")
@click.option("--max-error-rate", type=float, default=0.05, show_default=True)
@click.option("--max-error-increase", type=float, default=0.02, show_default=True)
@click.option("--max-p95-ratio", type=float, default=1.5, show_default=True)
@click.option("--probation", default="30s", show_default=True,
              help="Device-side probation after activation.")
@fleet_opts
@json_opt
def start(name: str, version: str, target: str, as_json: bool, **kw: Any) -> None:
    config = RolloutConfig(
        steps=parse_steps(kw.pop("steps")), bake_s=parse_duration(kw.pop("bake")),
        device_timeout_s=parse_duration(kw.pop("device_timeout")),
        on_timeout=kw.pop("on_timeout"), on_failure=kw.pop("on_failure"),
        max_failures=kw.pop("max_failures"), min_requests=kw.pop("min_requests"),
        max_wait_s=parse_duration(kw.pop("max_wait")), max_error_rate=kw.pop("max_error_rate"),
        max_error_increase=kw.pop("max_error_increase"), max_p95_ratio=kw.pop("max_p95_ratio"),
        probation={"seconds": parse_duration(kw.pop("probation"))})
    r = open_fleet(kw).rollouts.start(name, version, Target.parse(target), config)
    out({"id": r.id, "name": r.name, "version": r.version, "from_version": r.from_version},
         as_json, f"rollout {r.id}: {name} {r.from_version} -> {r.version} on {target}, "
                  f"steps {list(config.steps)}")


def _status_text(doc: dict[str, Any]) -> str:
    """The header line, the device states and a table of the two arms' metrics."""
    states = ", ".join(f"{k} {v}" for k, v in sorted(doc["device_states"].items())) or "none"
    arms = render(["arm", "requests", "errors", "error rate", "p95 (ms)"],
                  [_arm_row(arm, doc[arm]) for arm in ("canary", "control")])
    return (f"{doc['id']}  {doc['name']} {doc['from_version'] or '(none)'} -> {doc['version']}  "
            f"{doc['state']}  step {doc['step'] + 1}/{len(doc['steps'])} ({doc['percent']:g}%)"
            f"\ndevices: {doc['assigned']}/{doc['targeted']} on the new version ({states})"
            + (f"\nreason: {doc['reason']}" if doc["reason"] else "") + f"\n\n{arms}")


def _arm_row(arm: str, m: dict[str, Any]) -> list[str]:
    if not m["requests"]:
        return [arm, "no data", "-", "-", "-"]
    p95 = "no data" if m["p95_s"] is None else f"{1000 * m['p95_s']:.3g}"
    return [arm, str(m["requests"]), str(m["errors"]), f"{m['errors'] / m['requests']:.3g}", p95]


@rollout.command("status")
@click.argument("rollout_id", required=False)
@fleet_opts
@json_opt
def status(rollout_id: str | None, as_json: bool, **kw: Any) -> None:
    fleet = open_fleet(kw)
    ids = [rollout_id] if rollout_id else [r.id for r in fleet.rollouts.all()][-1:]
    docs = [fleet.rollouts.status(i) for i in ids]
    out(docs[0] if rollout_id and docs else docs, as_json,
         "\n\n".join(_status_text(d) for d in docs) or "no rollouts")


@rollout.command("list")
@fleet_opts
@json_opt
def list_cmd(as_json: bool, **kw: Any) -> None:
    rows = open_fleet(kw).rollouts.all()
    docs = [{"id": r.id, "name": r.name, "version": r.version, "from": r.from_version,
             "target": r.target, "state": r.state.value, "step": r.step + 1,
             "reason": r.reason} for r in rows]
    out(docs, as_json, render(["id", "model", "from", "to", "target", "state", "step", "reason"],
                               [[d["id"], d["name"], d["from"], d["version"], d["target"],
                                 d["state"], d["step"], d["reason"]] for d in docs]))


def _command(cmd: Command) -> click.Command:
    @click.command(cmd.value)
    @click.argument("rollout_id")
    @fleet_opts
    def run(rollout_id: str, **kw: Any) -> None:
        open_fleet(kw).rollouts.command(rollout_id, cmd)
        click.echo(f"{cmd.value} requested for {rollout_id} (applied on the manager's next tick)")

    run.__doc__ = {Command.PAUSE: "Hold the rollout where it is.",
                   Command.RESUME: "Continue a paused rollout.",
                   Command.ABORT: "Stop and give every device the old version back (also "
                                  "stops downloads).",
                   Command.PROMOTE: "Skip the remaining steps: every targeted device now."}[cmd]
    return run


for _cmd in Command:
    rollout.add_command(_command(_cmd))
