"""`edgectl serve | devices | models | deploy | rollout`: the fleet admin commands.

Every command works on the manager's database (``--db``); the running manager picks up what they
write on its next tick. ``--json`` everywhere, readable tables by default.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import click

from edge_runtime.errors import ConfigError
from edge_runtime.protocol.link import MqttSettings
from edge_runtime.textable import render
from fleet.inventory import Target
from fleet.settings import ManagerSettings


def fleet_opts(fn: Any) -> Any:
    for opt in reversed([
        click.option("--db", type=click.Path(path_type=Path), default=Path("fleet.db"),
                     show_default=True, help="Fleet manager database."),
        click.option("--artifacts", type=click.Path(path_type=Path),
                     default=Path("fleet-artifacts"), show_default=True),
        click.option("--fleet", "fleet_name", default="default", show_default=True),
        click.option("--trusted-keys", multiple=True, type=click.Path(path_type=Path)),
        click.option("--allow-unsigned", is_flag=True),
    ]):
        fn = opt(fn)
    return fn


def _settings(kw: dict[str, Any], broker: str | None = None) -> ManagerSettings:
    return ManagerSettings(
        db=kw.pop("db"), artifacts=kw.pop("artifacts"), fleet=kw.pop("fleet_name"),
        trusted_keys=tuple(kw.pop("trusted_keys")), allow_unsigned=kw.pop("allow_unsigned"),
        mqtt=MqttSettings.from_url(broker) if broker else MqttSettings())


def open_fleet(kw: dict[str, Any]) -> Any:
    from fleet.core import Fleet

    return Fleet(_settings(kw))


def out(doc: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(doc, indent=1, default=str) if as_json else text)


json_opt = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    s = time.time() - ts
    if s < 120:
        return f"{s:.0f}s ago"
    return f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.0f}h ago"


@click.command("serve")
@fleet_opts
@click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True,
              help="mqtt://[user@]host:port or mqtts://.")
@click.option("--broker-password-file", type=click.Path(path_type=Path), default=None,
              help="File holding the broker password (or EDGECTL_BROKER_PASSWORD).")
@click.option("--broker-ca-file", type=click.Path(path_type=Path), default=None,
              help="CA bundle that signed the broker's certificate (mqtts://).")
@click.option("--tick", "tick_s", type=float, default=0.5, show_default=True)
@click.option("--alert-interval", "alert_interval_s", type=click.FloatRange(min=0.1),
              default=30.0, show_default=True, help="Seconds between drift/degradation checks.")
@click.option("--log-level", default="info")
@click.option("--signing-key", type=click.Path(path_type=Path), default=None,
              help="The fleet's private key (edgectl keys generate): desired states are signed "
                   "with it; devices refuse unsigned ones.")
@click.option("--enrollment", type=click.Choice(["known", "open"]), default="known",
              show_default=True,
              help="known: only devices added with `edgectl devices add` join the inventory; "
                   "open: any client id that speaks the protocol (labs).")
def serve_cmd(broker: str, broker_password_file: Path | None, broker_ca_file: Path | None,
              tick_s: float, alert_interval_s: float, log_level: str, **kw: Any) -> None:
    """Run the fleet manager against BROKER."""
    import asyncio
    import signal
    from dataclasses import replace

    from edge_runtime.cliopts import warn_password_in_argv
    from edge_runtime.protocol.mqtt import MqttLink
    from fleet.core import Fleet
    from fleet.manager import ENROLLMENT_HELP, FleetManager
    from fleet.settings import BROKER_PASSWORD_ENV, Enrollment, broker_password

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mqtt = MqttSettings.from_url(broker, password=broker_password(broker_password_file),
                                 ca_file=broker_ca_file)
    warn_password_in_argv("--broker", broker, f"--broker-password-file or {BROKER_PASSWORD_ENV}")
    settings = replace(_settings(kw), mqtt=mqtt, tick_s=tick_s,
                       alert_interval_s=alert_interval_s, signing_key=kw.pop("signing_key"))
    settings = replace(settings, enrollment=Enrollment(kw.pop("enrollment")))

    async def main() -> None:
        manager = FleetManager(Fleet(settings), lambda **k: MqttLink(settings.mqtt, **k))
        await manager.start()
        click.echo(f"fleet manager for {settings.fleet!r} on {mqtt.url}", err=True)
        click.echo(f"enrollment {settings.enrollment.value}: "
                   f"{ENROLLMENT_HELP[settings.enrollment]}", err=True)
        # SIGTERM (systemd, docker stop) and SIGINT stop the manager cleanly: its counters are
        # saved and its broker session closed, instead of the last second being lost.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        click.echo("fleet manager stopping", err=True)
        await manager.stop()

    asyncio.run(main())


@click.group("devices")
def devices() -> None:
    """Device inventory."""


@devices.command("list")
@fleet_opts
@click.option("--to", "target", default="all", help="Filter: all, group:G, tag:T, device:D.")
@json_opt
def devices_list(target: str, as_json: bool, **kw: Any) -> None:
    fleet = open_fleet(kw)
    rows = fleet.inventory.devices(Target.parse(target))
    docs = [{"id": d.id, "status": d.status, "group": d.group, "tags": list(d.tags),
             "profile": d.profile, "last_seen": d.last_seen,
             "models": {n: {"active": v.get("active"), "state": v.get("state")}
                        for n, v in (d.reported or {}).get("models", {}).items()}} for d in rows]
    table = render(["device", "status", "group", "tags", "last seen", "models"],
                   [[d["id"], d["status"], d["group"], ",".join(d["tags"]), _ago(d["last_seen"]),
                     " ".join(f"{n}={v['active']}({v['state']})" for n, v in d["models"].items())]
                    for d in docs])
    out(docs, as_json, table if docs else "no devices")


@devices.command("add")
@click.argument("device_ids", metavar="DEVICE...", nargs=-1, required=True)
@fleet_opts
@click.option("--group", default=None, help="Group to target before the device reports its own.")
@click.option("--tags", default="", help="Comma-separated tags, likewise.")
@json_opt
def devices_add(device_ids: tuple[str, ...], group: str | None, tags: str, as_json: bool,
                **kw: Any) -> None:
    """Enroll devices (a manager with enrollment known takes messages only from these)."""
    from edge_runtime.protocol.topics import check_id

    for device in device_ids:  # all or none
        check_id("device", device)
    fleet = open_fleet(kw)
    tag_list = tuple(filter(None, tags.split(",")))
    added = [d for d in device_ids if fleet.inventory.register(d, group=group, tags=tag_list)]
    known = [d for d in device_ids if d not in added]
    out({"added": added, "already": known}, as_json,
        f"added {len(added)} device(s)" + (f"; already enrolled: {', '.join(known)}"
                                           if known else ""))


@devices.command("show")
@click.argument("device")
@fleet_opts
@json_opt
def devices_show(device: str, as_json: bool, **kw: Any) -> None:
    fleet = open_fleet(kw)
    d = fleet.inventory.get(device)
    events = [dict(r) for r in fleet.db.query(
        "SELECT name, version, state, reason, deployment, ts FROM events WHERE device = ? "
        "ORDER BY id DESC LIMIT 10", (device,))]
    doc = {"id": d.id, "status": d.status, "session": d.session, "group": d.group,
           "tags": list(d.tags), "profile": d.profile, "first_seen": d.first_seen,
           "last_seen": d.last_seen, "reported": d.reported, "events": events}
    text = (f"{d.id}  {d.status} (session {d.session})  group={d.group} tags={','.join(d.tags)} "
            f"profile={d.profile}  last seen {_ago(d.last_seen)}\n" + render(
                ["model", "active", "previous", "installed", "state", "reason"],
                [[n, v.get("active"), v.get("previous"), ",".join(v.get("installed", [])),
                  v.get("state"), v.get("reason")]
                 for n, v in (d.reported or {}).get("models", {}).items()]) +
            "\n\nrecent events:\n" + render(["model", "version", "state", "reason"],
                                            [[e["name"], e["version"], e["state"], e["reason"]]
                                             for e in events]))
    out(doc, as_json, text)


@click.group("models")
def models() -> None:
    """Model registry: publish, list, show, alias."""


@models.command("publish")
@click.argument("package", type=click.Path(path_type=Path))
@fleet_opts
@json_opt
def models_publish(package: Path, as_json: bool, **kw: Any) -> None:
    mv = open_fleet(kw).registry.publish(package)
    out({"name": mv.name, "version": mv.version, "sha256": mv.sha256, "size": mv.size},
         as_json, f"published {mv.name} {mv.version} ({mv.size} bytes, sha256 "
                  f"{mv.sha256[:12]}, signed by {mv.signed_by or 'nobody'})")


@models.command("list")
@fleet_opts
@json_opt
def models_list(as_json: bool, **kw: Any) -> None:
    fleet = open_fleet(kw)
    rows = []
    for mv in fleet.registry.versions():
        aliases = [a for a, v in fleet.registry.aliases(mv.name).items() if v == mv.version]
        rows.append({"name": mv.name, "version": mv.version, "format": mv.manifest.format,
                     "precision": mv.manifest.precision, "size": mv.size, "aliases": aliases,
                     "published_at": mv.published_at})
    out(rows, as_json, render(["name", "version", "format", "precision", "size", "aliases"],
                               [[r["name"], r["version"], r["format"], r["precision"], r["size"],
                                 ",".join(r["aliases"])] for r in rows]) if rows else "no models")


@models.command("show")
@click.argument("name")
@click.argument("version", required=False)
@fleet_opts
@json_opt
def models_show(name: str, version: str | None, as_json: bool, **kw: Any) -> None:
    fleet = open_fleet(kw)
    versions = [fleet.registry.resolve(name, version)] if version else \
        fleet.registry.versions(name)
    if not versions:
        from fleet.errors import UnknownModel

        raise UnknownModel(name)
    docs = [{"name": mv.name, "version": mv.version, "sha256": mv.sha256, "size": mv.size,
             "signed_by": mv.signed_by, "lineage": mv.lineage(),
             "inputs": [t.to_dict() for t in mv.manifest.inputs],
             "outputs": [t.to_dict() for t in mv.manifest.outputs]} for mv in versions]
    doc = {"versions": docs, "aliases": fleet.registry.aliases(name)}
    text = "\n".join(
        f"{d['name']} {d['version']}  sha256 {d['sha256'][:12]}  "
        f"{d['lineage']['format']}/{d['lineage']['precision']}  source "
        f"{d['lineage']['source'].get('kind')}:{str(d['lineage']['source'].get('sha256'))[:12]}"
        for d in docs)
    out(doc, as_json, text + f"\naliases: {doc['aliases']}")


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version")
@fleet_opts
def models_alias(name: str, alias: str, version: str, **kw: Any) -> None:
    open_fleet(kw).registry.set_alias(name, alias, version)
    click.echo(f"{name}:{alias} -> {version}")


@click.command("deploy")
@click.argument("name")
@click.argument("version")
@click.option("--to", "target", required=True, help="all, group:G, tag:T or device:D")
@click.option("--probation-s", type=float, default=None,
              help="seconds each device watches the new version before committing (30)")
@click.option("--probation-min-requests", type=int, default=None,
              help="requests a device needs before it may commit (20; 0 for idle devices: "
                   "without them a device holds the version on probation)")
@fleet_opts
@json_opt
def deploy_cmd(name: str, version: str, target: str, as_json: bool,
               probation_s: float | None, probation_min_requests: int | None,
               **kw: Any) -> None:
    """Blue-green: every targeted device switches to VERSION (or an alias) at once."""
    from fleet.deploy import deploy

    if (probation_s is not None and not 0 <= probation_s < float("inf")) or (
            probation_min_requests is not None and probation_min_requests < 0):
        raise ConfigError("--probation-s and --probation-min-requests must not be negative")
    probation: dict[str, float] = {}
    if probation_s is not None:
        probation["seconds"] = probation_s
    if probation_min_requests is not None:
        probation["min_requests"] = probation_min_requests
    did, devices = deploy(open_fleet(kw), name, version, Target.parse(target),
                          probation=probation)
    out({"deployment": did, "devices": devices, "probation": probation}, as_json,
         f"deployment {did}: {name} {version} -> {len(devices)} device(s)")
