"""`edge-runtime install|activate|rollback|models|status`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edge_runtime.cliopts import (
    config_opt,
    echo,
    json_opt,
    keys_opt,
    load_settings,
    store_opt,
    unsigned_opt,
)
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.settings import ServeSettings
from edge_runtime.textable import render


def _swap(settings: ServeSettings, remote: Callable[[Any], Any],
          local: Callable[[Any], Any]) -> dict[str, Any]:
    """Through the running daemon when there is one, else on the store directly."""
    from edge_runtime.adminclient import AdminClient
    from edge_runtime.api.admin import record_doc
    from edge_runtime.daemon import RunInfo
    from edge_runtime.runtime import Runtime

    info = RunInfo.read(settings.store)
    if info is not None:
        doc: dict[str, Any] = remote(AdminClient(info))
        doc["via"] = "daemon"
        return doc
    rt = Runtime(settings=settings, restore=False)
    try:
        doc = record_doc(local(rt))
    finally:
        rt.close()
    doc["via"] = "store"
    return doc


def _report(doc: dict[str, Any], as_json: bool) -> None:
    text = f"{doc['kind']} {doc['name']} {doc.get('version') or ''}: {doc['state']}"
    if doc.get("reason"):
        text += f" ({doc['reason']})"
    echo(doc, as_json, text + f"  [via {doc['via']}]")


@click.command("install")
@click.argument("package", type=click.Path(path_type=Path))
@store_opt
@config_opt
@keys_opt
@unsigned_opt
@json_opt
def install_cmd(package: Path, store: Path | None, config: Path | None,
                trusted: tuple[Path, ...], allow_unsigned: bool | None, as_json: bool) -> None:
    """Verify PACKAGE and unpack it into the store (the serving model is not touched)."""
    settings = load_settings(config, store=store, trusted=trusted, allow_unsigned=allow_unsigned)
    path = str(package.resolve())
    doc = _swap(settings, lambda c: c.call("POST", "/admin/install", {"package": path}),
                lambda rt: rt.install(path))
    _report(doc, as_json)


@click.command("activate")
@click.argument("name")
@click.argument("version")
@store_opt
@config_opt
@json_opt
def activate_cmd(name: str, version: str, store: Path | None, config: Path | None,
                 as_json: bool) -> None:
    """Load VERSION, smoke-test it, switch to it, then unload the old version."""
    settings = load_settings(config, store=store)
    doc = _swap(settings, lambda c: c.call("POST", f"/admin/models/{name}/activate",
                                           {"version": version}),
                lambda rt: rt.activate(name, version))
    _report(doc, as_json)


@click.command("rollback")
@click.argument("name")
@store_opt
@config_opt
@json_opt
def rollback_cmd(name: str, store: Path | None, config: Path | None, as_json: bool) -> None:
    """Switch NAME back to the version that was active before."""
    settings = load_settings(config, store=store)
    doc = _swap(settings, lambda c: c.call("POST", f"/admin/models/{name}/rollback"),
                lambda rt: rt.rollback(name))
    _report(doc, as_json)


@click.command("models")
@store_opt
@config_opt
@json_opt
def models_cmd(store: Path | None, config: Path | None, as_json: bool) -> None:
    """Installed versions, which is active and which is the rollback target."""
    from edge_runtime.status import models_table
    from edge_runtime.store.models import ModelStore

    settings = load_settings(config, store=store)
    rows = models_table(ModelStore(settings.store))
    table = render(["name", "version", "format", "precision", "active", "rollback", "signed by"],
                   [[r["name"], r["version"], r["format"], r["precision"],
                     "*" if r["active"] else "", "*" if r["previous"] else "", r["signed_by"]]
                    for r in rows])
    echo(rows, as_json, table if rows else "no models installed")


@click.command("status")
@store_opt
@config_opt
@json_opt
def status_cmd(store: Path | None, config: Path | None, as_json: bool) -> None:
    """Requests, errors, throughput, latency and label feedback per model version."""
    from edge_runtime.adminclient import AdminClient
    from edge_runtime.daemon import RunInfo
    from edge_runtime.status import offline_status
    from edge_runtime.store.models import ModelStore

    settings = load_settings(config, store=store)
    info = RunInfo.read(settings.store)
    try:
        doc = AdminClient(info).call("GET", "/admin/status") if info is not None else None
    except EdgeRuntimeError:  # stopping or hung: fall back to what it persisted
        doc = None
    if doc is None:
        doc = offline_status(ModelStore(settings.store))
    echo(doc, as_json, _status_text(doc))


def _status_text(doc: dict[str, Any]) -> str:
    lines = [f"source: {doc['source']}"]
    if "settings" in doc:
        from edge_runtime.effective import settings_line

        lines.append(f"settings: {settings_line(doc['settings'])}")
    for window, rows in doc["windows"].items():
        lines.append(f"\nlast {window}:")
        lines.append(render(
            ["model", "version", "requests", "errors", "error rate", "rps", "p50 ms", "p95 ms",
             "p99 ms"],
            [[r["model"], r["version"], r["requests"], sum(r["errors"].values()),
              r.get("error_rate"), r.get("throughput_rps"), r.get("p50_ms"), r.get("p95_ms"),
              r.get("p99_ms")] for r in rows]) if rows else "  no traffic")
    lines.append(_feedback_text(doc.get("feedback", [])))
    st = doc["storage"]
    lines.append(f"\nstorage: {st['telemetry']} telemetry rows, {st['outbox_unsent']} unsent "
                 f"outbox messages, {st['dropped']} dropped")
    if "health" in doc:
        lines.append(_health_text(doc["health"]))
    return "\n".join(lines)


def _feedback_text(rows: list[dict[str, Any]]) -> str:
    """Label feedback (POST /v2/models/NAME/feedback) per version: since the daemon started,
    or over the stored window when it is not running."""
    if not rows:
        return "\nfeedback: none"
    return "\nfeedback:\n" + render(
        ["model", "version", "labels", "correct", "accuracy"],
        [[r["model"], r["version"], r["labels"], r["correct"], r["accuracy"]] for r in rows])


def _health_text(health: dict[str, Any]) -> str:
    """Supervised tasks (restarts, last error), faults survived and messages dropped."""
    tasks = [[name, "yes" if t["running"] else "no", t["restarts"], t["last_error"] or "-"]
             for name, t in health["tasks"].items()]
    lines = ["\ntasks:", render(["task", "running", "restarts", "last error"], tasks)
             if tasks else "  none"]
    faults = ", ".join(f"{k} {n}" for k, n in health["faults"].items())
    lines.append(f"faults survived: {faults or 'none'}")
    drops = ", ".join(f"{k} {n}" for k, n in health.get("agent", {}).get("drops", {}).items())
    if "agent" in health:
        lines.append(f"fleet messages dropped: {drops or 'none'}")
    return "\n".join(lines)


COMMANDS = (install_cmd, activate_cmd, rollback_cmd, models_cmd, status_cmd)
