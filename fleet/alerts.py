"""Fleet alerts: drift and degradation checks on a timer, published on
``edge/v1/{fleet}/alerts/{kind}`` for dashboards, kept in the database, and optionally handed to a
webhook or a command (e.g. to trigger retraining). An alert fires when a level changes, not on
every check."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
import textwrap
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from edge_runtime.package import VALIDATION, open_package
from edge_runtime.protocol import messages as m
from edge_runtime.protocol.topics import TopicScheme
from edge_runtime.textable import render
from fleet.core import Fleet
from fleet.drift import DriftService
from fleet.stats.decisions import Level
from fleet.stats.degradation import check_degradation, validation_accuracy
from fleet.stats.drift import DriftReport

log = logging.getLogger("fleet.alerts")
Publish = Callable[[str, bytes], Awaitable[None]]


class Alerter:
    def __init__(self, fleet: Fleet, drift: DriftService, publish: Publish, *,
                 window_s: float = 3600.0, webhook: str | None = None,
                 command: str | None = None) -> None:
        self.fleet = fleet
        self.drift = drift
        self.publish = publish
        self.window_s = window_s
        self.topics = TopicScheme(fleet.settings.fleet)
        self.webhook = webhook
        self.command = command
        self.failures = 0  # checks of one version that raised (logged with the traceback)

    def _last(self, kind: str, name: str, version: str) -> str:
        rows = self.fleet.db.query("SELECT level FROM alerts WHERE kind = ? AND model = ? AND "
                                   "version = ? ORDER BY id DESC LIMIT 1", (kind, name, version))
        return str(rows[0][0]) if rows else Level.OK.value

    async def check(self, now: float | None = None) -> list[m.Alert]:
        """Evaluate off the event loop (it decodes the window's device reports), then publish
        what changed."""
        alerts = await asyncio.get_running_loop().run_in_executor(None, self.evaluate, now)
        for alert in alerts:
            await self.deliver(alert)
        return alerts

    def evaluate(self, now: float | None = None) -> list[m.Alert]:
        """Levels now; a level that changed becomes an alert, stored before it is sent."""
        now = time.time() if now is None else now
        since = now - self.window_s
        fired = []
        reports = {}  # decoded once per version, for drift and for the degradation proxy
        for name, version in self.drift.live_versions(since):
            with self._isolated("drift", name, version):
                reports[(name, version)] = report = self.drift.merged_report(name, version,
                                                                             since=since)
                level, reasons = self.drift.level_of(name, report)
                fired.append(self._transition("drift", name, version, level.value,
                                              (drift_message(reasons), {"reasons": reasons})))
        for name, version in self._feedback_versions(since):
            with self._isolated("degradation", name, version):
                report = reports.get((name, version))
                grade, message, details = self._degradation(name, version, since, report)
                fired.append(self._transition("degradation", name, version, grade,
                                              (message, details)))
        return [a for a in fired if a is not None]

    @contextlib.contextmanager
    def _isolated(self, kind: str, name: str, version: str) -> Iterator[None]:
        """One model version that cannot be judged (its package unreadable, say) is logged
        and counted, and the others are still checked."""
        try:
            yield
        except Exception:
            self.failures += 1
            log.exception("%s check of %s %s failed", kind, name, version)

    def _transition(self, kind: str, name: str, version: str, level: str,
                    what: tuple[str, dict[str, Any]]) -> m.Alert | None:
        message, details = what
        if level == Level.INSUFFICIENT.value or level == self._last(kind, name, version):
            return None
        if level == Level.OK.value:
            message = "back to normal"
        alert = m.Alert(kind, level, name, version, message or level, details)
        with self.fleet.db.transaction() as cur:
            cur.execute("INSERT INTO alerts (kind, model, version, level, message, details, ts) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", (kind, name, version, level,
                                                         alert.message, json.dumps(details),
                                                         alert.ts))
        return alert

    async def deliver(self, alert: m.Alert) -> None:
        body = m.encode(alert)
        try:
            await self.publish(self.topics.alert(alert.kind), body)
        except Exception as exc:  # the alert is stored; dashboards get the next one
            log.warning("alert not published: %s", exc)
        await self._hooks(body)

    async def _hooks(self, body: bytes) -> None:
        if self.webhook:
            req = urllib.request.Request(self.webhook, data=body,
                                         headers={"Content-Type": "application/json"})
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: urllib.request.urlopen(req, timeout=10).close())
            except OSError as exc:
                log.warning("alert webhook failed: %s", exc)
        if self.command:
            try:
                proc = await asyncio.create_subprocess_exec(*shlex.split(self.command),
                                                            stdin=asyncio.subprocess.PIPE)
                await proc.communicate(body)
            except OSError as exc:
                log.warning("alert command failed: %s", exc)
                return
            if proc.returncode:
                log.warning("alert command exited %s", proc.returncode)

    def _feedback_versions(self, since: float) -> list[tuple[str, str]]:
        rows = self.fleet.db.query(
            "SELECT DISTINCT name, version FROM feedback WHERE end >= ? UNION "
            "SELECT DISTINCT name, version FROM drift WHERE end >= ?", (since, since))
        return [(r["name"], r["version"]) for r in rows]

    def _degradation(self, name: str, version: str, since: float,
                     report: DriftReport | None) -> tuple[str, str, dict[str, Any]]:
        """With labels: accuracy against the package's validation accuracy. Without: the
        prediction distribution and the mean confidence against the reference (a proxy)."""
        row = self.fleet.db.query("SELECT SUM(n), SUM(correct) FROM feedback WHERE name = ? "
                                  "AND version = ? AND end >= ?", (name, version, since))[0]
        total, correct = int(row[0] or 0), int(row[1] or 0)
        pkg = open_package(self.fleet.registry.get(name, version).path, None,
                           allow_unsigned=True)
        baseline = validation_accuracy(pkg.read_json(VALIDATION))
        rep = check_degradation(version, labels=(correct, total) if total else None,
                                validation=baseline, report=report)
        if rep.accuracy is not None and rep.basis == "labels":
            a = rep.accuracy
            message = (f"accuracy {a.accuracy:.3f} over {a.total} labels vs validation "
                       f"{a.validation:.3f} (alert below {a.threshold:.3f})")
            details = {"basis": "labels", "accuracy": a.accuracy, "lower": a.lower,
                       "upper": a.upper, "validation": a.validation, "n": a.total}
        else:
            drops = [f"{c.output} mean confidence {c.mean_top:.3f} vs {c.baseline:.3f}"
                     for c in rep.confidence if c.level in (Level.WARN, Level.ALERT)]
            message = "; ".join(drops) or "prediction distribution drifted"
            details = {"basis": "proxy", "confidence": [c.__dict__ for c in rep.confidence]}
        return rep.level.value, message, details


def drift_message(reasons: list[str], *, shown: int = 3) -> str:
    """'N entries drifted: a: psi 0.3 >= 0.25, ...; b: ...; +M more' (all in the details)."""
    if not reasons:
        return ""
    more = len(reasons) - shown
    head = "; ".join(reasons[:shown]) + (f"; +{more} more" if more > 0 else "")
    return f"{len(reasons)} {'entry' if len(reasons) == 1 else 'entries'} drifted: {head}"


ALERT_COLUMNS = ["when", "kind", "model", "version", "level", "message"]
MIN_MESSAGE_WIDTH = 30


def render_alerts(rows: list[dict[str, Any]], *, width: int, now: float) -> str:
    """The alerts table, the message column wrapped to fit ``width`` (never cut)."""
    cells = [[time.strftime("%H:%M:%S", time.localtime(r["ts"])) if now - r["ts"] < 86400
              else time.strftime("%Y-%m-%d", time.localtime(r["ts"])),
              r["kind"], r["model"], r["version"], r["level"]] for r in rows]
    fixed = [max(len(h), *(len(str(c[i])) for c in cells))
             for i, h in enumerate(ALERT_COLUMNS[:-1])]
    room = max(MIN_MESSAGE_WIDTH, width - sum(fixed) - 2 * len(fixed))
    table: list[list[Any]] = []
    for head, r in zip(cells, rows, strict=True):
        lines = textwrap.wrap(str(r["message"]), room, break_on_hyphens=False) or [""]
        table.append([*head, lines[0]])
        table += [["", "", "", "", "", line] for line in lines[1:]]
    return render(ALERT_COLUMNS, table)
