"""`edgectl drift report`, `edgectl alerts`, `edgectl experiment start|status|stop|list`."""

from __future__ import annotations

import time
from typing import Any

import click

from edge_runtime.textable import render
from fleet.cli_fleet import fleet_opts, json_opt, open_fleet, out
from fleet.cli_rollout import parse_duration
from fleet.inventory import Target


@click.group("drift")
def drift() -> None:
    """Input/output drift against the package's reference statistics."""


@drift.command("report")
@click.argument("name")
@click.option("--version", default=None, help="Default: the production alias.")
@click.option("--group", default=None)
@click.option("--since", default="1h", show_default=True, help="Window, e.g. 30m, 1h, 24h.")
@click.option("--devices/--no-devices", default=True, help="Per-device levels too.")
@fleet_opts
@json_opt
def drift_report(name: str, version: str | None, group: str | None, since: str,
                 devices: bool, as_json: bool, **kw: Any) -> None:
    fleet = open_fleet(kw)
    mv = fleet.registry.resolve(name, version or "production")
    doc = fleet.drift.report(name, mv.version, since=time.time() - parse_duration(since),
                             group=group)
    rows = [[f["feature"] + (" (output)" if f["output"] else ""), f["level"], f.get("n"),
             _fmt(f.get("psi")), _fmt(f.get("ks")), _fmt(f.get("wasserstein")),
             _fmt(f.get("mean_shift")), _fmt(f.get("tv")), _fmt(f["q_value"])]
            for f in doc["features"]]
    text = (f"{name} {mv.version} drift over the last {since} ({doc['scope']}): {doc['level']}\n"
            + render(["feature", "level", "n", "psi", "ks", "wasserstein", "mean shift", "tv",
                      "q"], rows))
    if devices and doc["devices"]:
        text += "\n\n" + render(["device", "level", "drifted features"],
                                [[d, v["level"], ", ".join(v["drifted"][:6])]
                                 for d, v in doc["devices"].items()])
    out(doc, as_json, text)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)


@click.command("alerts")
@click.option("--limit", type=int, default=20, show_default=True)
@fleet_opts
@json_opt
def alerts(limit: int, as_json: bool, **kw: Any) -> None:
    """Recent drift and degradation alerts (also published on edge/v1/FLEET/alerts/KIND)."""
    rows = [dict(r) for r in open_fleet(kw).db.query(
        "SELECT kind, model, version, level, message, ts FROM alerts ORDER BY id DESC LIMIT ?",
        (limit,))]
    out(rows, as_json, render(["kind", "model", "version", "level", "message"],
                              [[r["kind"], r["model"], r["version"], r["level"], r["message"]]
                               for r in rows]) if rows else "no alerts")


@click.group("experiment")
def experiment() -> None:
    """A/B experiments with always-valid sequential tests."""


@experiment.command("start")
@click.argument("name")
@click.option("--a", "a", required=True, help="Version (or alias) of arm A.")
@click.option("--b", "b", required=True, help="Version (or alias) of arm B.")
@click.option("--split", type=float, default=50.0, show_default=True, help="Percent to B.")
@click.option("--unit", type=click.Choice(["device", "request"]), default="device",
              show_default=True)
@click.option("--to", "target", default="all", show_default=True)
@fleet_opts
@json_opt
def experiment_start(name: str, a: str, b: str, split: float, unit: str, target: str,
                     as_json: bool, **kw: Any) -> None:
    doc = open_fleet(kw).experiments.start(name, a, b, split=split, unit=unit,
                                           target=Target.parse(target))
    out(doc, as_json, f"experiment {doc['id']}: {name} {doc['a']} (A) vs {doc['b']} (B), "
                      f"{split:g}% of {unit}s to B, on {target}")


@experiment.command("status")
@click.argument("experiment_id")
@fleet_opts
@json_opt
def experiment_status(experiment_id: str, as_json: bool, **kw: Any) -> None:
    doc = open_fleet(kw).experiments.status(experiment_id)
    arms = doc["arms"]
    text = (f"{doc['id']}  {doc['name']}: A={doc['a']} vs B={doc['b']} ({doc['unit']}s, "
            f"{doc['split']:g}% to B)  {doc['state']}  decision: {doc['decision']}\n"
            f"  A: {arms['a']}\n  B: {arms['b']}\n" + render(
                ["metric", "A", "B", "effect (B-A)", "95% CI", "p-value", "decision"],
                [[k, _fmt(v["a"]), _fmt(v["b"]), _fmt(v["effect"]),
                  f"[{_fmt(v['ci'][0])}, {_fmt(v['ci'][1])}]", _fmt(v["p_value"]),
                  v["decision"]] for k, v in doc["metrics"].items()]))
    out(doc, as_json, text)


@experiment.command("stop")
@click.argument("experiment_id")
@click.option("--promote", type=click.Choice(["a", "b"]), default=None,
              help="Give every targeted device this arm's version (default: A).")
@fleet_opts
def experiment_stop(experiment_id: str, promote: str | None, **kw: Any) -> None:
    doc = open_fleet(kw).experiments.stop(experiment_id, promote=promote)
    click.echo(f"stopped {doc['id']}; targeted devices go to "
               f"{doc['b'] if promote == 'b' else doc['a']}")


@experiment.command("list")
@fleet_opts
@json_opt
def experiment_list(as_json: bool, **kw: Any) -> None:
    rows = open_fleet(kw).experiments.all()
    out(rows, as_json, render(["id", "model", "A", "B", "split", "unit", "state"],
                              [[r["id"], r["name"], r["a"], r["b"], r["split"], r["unit"],
                                r["state"]] for r in rows]) if rows else "no experiments")
