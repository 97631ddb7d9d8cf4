"""`edgectl drift report`, `edgectl alerts`, `edgectl experiment start|status|stop|list`."""

from __future__ import annotations

import shutil
import time
from typing import Any

import click

from edge_runtime.textable import render
from fleet.cli_fleet import fleet_opts, json_opt, open_fleet, out
from fleet.cli_rollout import parse_duration
from fleet.drift_text import render_report
from fleet.experiments import verdict_text
from fleet.inventory import Target


@click.group("drift")
def drift() -> None:
    """Input/output drift against the package's reference statistics."""


@drift.command("report")
@click.argument("name")
@click.option("--version", default=None,
              help="A version or an alias. Default: the version(s) the devices run now.")
@click.option("--group", default=None)
@click.option("--since", default="1h", show_default=True, help="Window, e.g. 30m, 1h, 24h.")
@click.option("--devices/--no-devices", default=True, help="Per-device levels too.")
@fleet_opts
@json_opt
def drift_report(name: str, version: str | None, group: str | None, since: str,
                 devices: bool, as_json: bool, **kw: Any) -> None:
    """Fleet and per-device drift of NAME. With several versions running and no --version,
    one report per version (--json: a list)."""
    fleet = open_fleet(kw)
    start = time.time() - parse_duration(since)
    versions = ([fleet.registry.resolve(name, version).version] if version
                else fleet.drift.versions_to_report(name, since=start, group=group))
    docs = [fleet.drift.report(name, v, since=start, group=group) for v in versions]
    text = "\n\n".join(render_report(d, window=since, devices=devices) for d in docs)
    if len(docs) > 1:
        text = (f"devices run {len(docs)} versions of {name} ({', '.join(versions)}): one "
                f"report each; --version picks one\n\n" + text)
    out(docs[0] if len(docs) == 1 else docs, as_json, text)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)


@click.command("alerts")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--width", type=click.IntRange(min=40), default=None,
              help="Wrap messages to this many columns (default: the terminal's).")
@fleet_opts
@json_opt
def alerts(limit: int, width: int | None, as_json: bool, **kw: Any) -> None:
    """Recent drift and degradation alerts (also published on edge/v1/FLEET/alerts/KIND)."""
    from fleet.alerts import render_alerts

    rows = [dict(r) for r in open_fleet(kw).db.query(
        "SELECT kind, model, version, level, message, ts FROM alerts ORDER BY id DESC LIMIT ?",
        (limit,))]
    cols = width or shutil.get_terminal_size((120, 24)).columns
    out(rows, as_json, render_alerts(rows, width=cols, now=time.time()) if rows
        else "no alerts")


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
    out(doc, as_json, experiment_text(doc))


def experiment_text(doc: dict[str, Any]) -> str:
    """The header line, a table of the arms and a table of the metrics."""
    head = (f"{doc['id']}  {doc['name']}: A={doc['a']} vs B={doc['b']} ({doc['unit']}s, "
            f"{doc['split']:g}% to B)  {doc['state']}  decision: {doc['decision']}")
    arms = render(["arm", "version", "devices assigned", "devices reporting", "requests",
                   "errors", "labels"],
                  [[arm.upper(), doc[arm], v["assigned"], v["devices"], v["requests"],
                    v["errors"], v["labels"]] for arm, v in doc["arms"].items()])
    metrics = render(["metric", "A", "B", "effect (B-A)", "95% CI", "p-value", "decision"],
                     [_metric_row(k, v) for k, v in doc["metrics"].items()])
    return f"{head}\n\n{arms}\n\n{metrics if doc['metrics'] else 'no looks yet'}"


def _metric_row(metric: str, v: dict[str, Any]) -> list[str]:
    if v["a"] is None and v["b"] is None:
        return [metric, "no data", "no data", "-", "-", "-", v["decision"]]
    if v["effect"] is None:  # one arm has data: no comparison yet
        return [metric, _or_no_data(v["a"]), _or_no_data(v["b"]), "-", "-", "-",
                v["decision"]]
    return [metric, _fmt(v["a"]), _fmt(v["b"]), _fmt(v["effect"]),
            f"[{_fmt(v['ci'][0])}, {_fmt(v['ci'][1])}]", _fmt(v["p_value"]), v["decision"]]


def _or_no_data(x: float | None) -> str:
    return "no data" if x is None else _fmt(x)


@experiment.command("stop")
@click.argument("experiment_id")
@click.option("--promote", type=click.Choice(["a", "b"]), default=None,
              help="Give every targeted device this arm's version (default: A).")
@click.option("--force", is_flag=True, help="Promote even an arm the test calls worse.")
@fleet_opts
def experiment_stop(experiment_id: str, promote: str | None, force: bool, **kw: Any) -> None:
    experiments = open_fleet(kw).experiments
    doc = experiments.stop(experiment_id, promote=promote, force=force)
    if promote is not None:
        click.echo(f"verdict: {verdict_text(experiments.status(experiment_id))}")
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
