"""`edgectl manager status`: what the running (or last) manager saved in the database: whether
it is alive, its enrollment, messages handled, drops by topic kind and reason, and the health of
its supervised tasks."""

from __future__ import annotations

import time
from typing import Any

import click

from edge_runtime.textable import render
from fleet import health
from fleet.cli_fleet import fleet_opts, json_opt, open_fleet, out

# Saved every health_interval_s (1 s by default): older than this, the manager is not running.
STALE_S = 10.0


@click.group("manager")
def manager() -> None:
    """The fleet manager service."""


@manager.command("status")
@fleet_opts
@json_opt
def manager_status(as_json: bool, **kw: Any) -> None:
    """Liveness, drop counters and task health of the manager on this database."""
    doc = health.load(open_fleet(kw).db)
    if doc is None:
        out(None, as_json, "no manager has run on this database yet")
        return
    doc["running"] = time.time() - float(doc.get("updated_at", 0)) < STALE_S
    out(doc, as_json, _text(doc))


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _text(doc: dict[str, Any]) -> str:
    c = doc["counts"]
    state = "running" if doc["running"] else f"not running (last update {_when(doc['updated_at'])})"
    lines = [f"manager pid {doc['pid']} on {doc['host']}: {state}, started "
             f"{_when(doc['started_at'])}, enrollment {doc['enrollment']}, broker "
             f"{'connected' if doc.get('connected') else 'not connected'}",
             f"since {_when(c['since'])}: {c['messages']} messages in {c['batches']} batches, "
             f"{c['duplicates']} duplicates, {c['dropped']} dropped"]
    if doc.get("inbound_dropped"):
        lines.append(f"{doc['inbound_dropped']} messages dropped at the full inbound queue")
    drops = [[kind, reason, n] for kind, reasons in c["drops"].items()
             for reason, n in reasons.items()]
    if drops:
        lines += ["", render(["topic", "reason", "dropped"], drops)]
    tasks = [[name, "yes" if t["running"] else "no", t["restarts"], t["last_error"] or "-"]
             for name, t in doc["tasks"].items()]
    lines += ["", render(["task", "running", "restarts", "last error"], tasks)]
    return "\n".join(lines)
