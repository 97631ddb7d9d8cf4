"""Inbound device messages: decoded and range-checked before anything is stored, then applied in
batches (one transaction per batch, one savepoint per message, deduplicated by message id).

A message that fails its checks is dropped with one warning line (topic, device, reason) and
counted by topic kind and `Defect`; an unexpected exception while applying one is logged once
with its traceback, counted as ``error``, and rolls back only that message. Neither stops the
batch nor the loop that feeds it.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from edge_runtime.monitor.wire import WireFormatError, decode_flat
from edge_runtime.protocol import messages as m
from edge_runtime.protocol.link import Message
from edge_runtime.protocol.schema import Defect, MessageInvalid
from edge_runtime.protocol.topics import TopicScheme
from fleet.core import Fleet
from fleet.errors import UnknownModel
from fleet.health import IngestCounts
from fleet.settings import Enrollment

log = logging.getLogger("fleet.manager")
SUBSCRIBED = ("status", "heartbeat", "reported", "events", "telemetry", "artifact/req")
# Latest swap state per device and model; older news (by the device's clock) never wins.
_STATE_UPSERT = ("INSERT INTO device_state VALUES (?, ?, ?, ?, ?, ?, ?) "
                 "ON CONFLICT(device, name) DO UPDATE SET "
                 "version = COALESCE(excluded.version, version), "
                 "deployment = excluded.deployment, state = excluded.state, "
                 "reason = excluded.reason, ts = excluded.ts WHERE excluded.ts >= ts")
_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "status": m.Status.decode, "heartbeat": m.Heartbeat.decode, "reported": m.Reported.decode,
    "events": m.Event.decode_with_id, "telemetry": m.Telemetry.decode,
    "artifact/req": m.ArtifactRequest.decode}
ArtifactRequests = Callable[[str, m.ArtifactRequest], None]


class Ingestor:
    """Applies device messages to the fleet database; ``on_artifact_request`` takes the valid
    chunk requests (and raises `MessageInvalid` for one it cannot take)."""

    def __init__(self, fleet: Fleet, *, on_artifact_request: ArtifactRequests,
                 counts: IngestCounts | None = None) -> None:
        self.fleet = fleet
        self.topics = TopicScheme(fleet.settings.fleet)
        self.counts = counts or IngestCounts()
        self.new_devices: set[str] = set()  # first reports since the tick last looked
        self._on_artifact_request = on_artifact_request
        self._versions: set[tuple[str, str]] = set()  # published versions are never removed

    def ingest(self, batch: list[Message]) -> None:
        """Handle a batch of messages in one transaction (idempotent per message id)."""
        with self.fleet.db.transaction() as cur:
            for msg in batch:
                self._one(cur, msg)
        self.counts.messages += len(batch)
        self.counts.batches += 1

    def _one(self, cur: Any, msg: Message) -> None:
        parsed = self.topics.parse(msg.topic)
        if parsed is None or parsed.kind not in _DECODERS:
            self.drop(msg.topic, None, MessageInvalid("topic", "not a device topic of this "
                                                      "fleet", Defect.BAD_TOPIC), "topic")
            return
        device, kind = parsed.device, parsed.kind
        try:
            decoded = _DECODERS[kind](msg.payload)  # pure: nothing is written before it passes
        except MessageInvalid as exc:
            self.drop(msg.topic, device, exc, kind)
            return
        cur.execute("SAVEPOINT msg")
        try:
            self._admit(cur, device, kind)
            self._apply(cur, device, kind, decoded)
        except MessageInvalid as exc:
            cur.execute("ROLLBACK TO msg")
            self.drop(msg.topic, device, exc, kind)
        except Exception:
            cur.execute("ROLLBACK TO msg")
            self.counts.drop(kind, Defect.ERROR)
            log.exception("dropped %.200r from %s: error while handling it", msg.topic, device)
        cur.execute("RELEASE msg")

    def drop(self, topic: str, device: str | None, exc: MessageInvalid, kind: str) -> None:
        self.counts.drop(kind, exc.defect)
        log.warning("dropped %.200r from %s: %s [%s]", topic, device or "?", exc.reason,
                    exc.defect.value)

    def _admit(self, cur: Any, device: str, kind: str) -> None:
        if self.fleet.settings.enrollment is Enrollment.OPEN:
            return
        if not self.fleet.inventory.known(cur, device):
            raise MessageInvalid(kind, f"device {device!r} is not enrolled (enrollment known: "
                                 f"`edgectl devices add {device}`)", Defect.UNKNOWN_DEVICE)

    def _apply(self, cur: Any, device: str, kind: str, msg: Any) -> None:
        inventory = self.fleet.inventory
        if kind == "telemetry":
            self._telemetry(cur, device, msg)
        elif kind == "events":
            self._event(cur, device, *msg)
        elif kind == "status":
            inventory.on_status(cur, device, msg)
        elif kind == "heartbeat":
            inventory.on_heartbeat(cur, device, msg)
        elif kind == "reported":
            if inventory.on_reported(cur, device, msg):
                self.new_devices.add(device)
            self._reported_states(cur, device, msg)
        else:
            self._on_artifact_request(device, msg)

    # -- telemetry -------------------------------------------------------------------------------
    def _telemetry(self, cur: Any, device: str, t: m.Telemetry) -> None:
        if t.model is not None and t.version is not None:
            self._check_version(t.model, t.version)
            if t.kind == "drift":
                self._check_drift(t)
        if cur.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)",
                       (t.msg_id, time.time())).rowcount == 0:
            self.counts.duplicates += 1
            return
        if t.model is None or t.version is None:
            return
        p = t.payload
        if t.kind == "metrics":
            cur.execute("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (device, t.model, t.version, t.start, t.end, p["requests"],
                         sum(p["errors"].values()), orjson.dumps(p["errors"]).decode(),
                         orjson.dumps(p["latency"]).decode()))
        elif t.kind == "drift":
            cur.execute("INSERT INTO drift VALUES (?, ?, ?, ?, ?, ?)",
                        (device, t.model, t.version, t.start, t.end, orjson.dumps(p).decode()))
        else:
            cur.execute("INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?)",
                        (device, t.model, t.version, t.end, p["n"], p["correct"]))

    def _check_version(self, name: str, version: str) -> None:
        if (name, version) in self._versions:
            return
        try:
            self.fleet.registry.get(name, version)
        except UnknownModel:
            raise MessageInvalid("telemetry", f"{name} {version} is not in the registry",
                                 Defect.UNKNOWN_VERSION) from None
        self._versions.add((name, version))

    def _check_drift(self, t: m.Telemetry) -> None:
        assert t.model is not None and t.version is not None
        layout, _ = self.fleet.drift.layout(t.model, t.version)
        try:
            decode_flat(layout, base64.b64decode(t.payload["data"]))
        except WireFormatError as exc:
            raise MessageInvalid("telemetry", f"drift counts do not fit {t.model} "
                                 f"{t.version}: {exc}", Defect.UNDECODABLE) from exc

    # -- swap state ------------------------------------------------------------------------------
    def _event(self, cur: Any, device: str, e: m.Event, msg_id: str | None) -> None:
        msg_id = msg_id or f"{device}:{e.seq}:{e.ts}"
        if cur.execute("INSERT OR IGNORE INTO events (msg_id, device, deployment, name, version, "
                       "state, reason, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (msg_id, device, e.deployment, e.name, e.version, e.state, e.reason,
                        e.ts)).rowcount == 0:
            self.counts.duplicates += 1
            return
        cur.execute(_STATE_UPSERT, (device, e.name, e.version, e.deployment, e.state, e.reason,
                                    e.ts))

    def _reported_states(self, cur: Any, device: str, rep: m.Reported) -> None:
        """The retained report carries each model's latest swap state: it stands in for events
        lost on the way (a broker restarted without persistence drops the manager's session, so
        events a device sends before the manager is back are gone; the device re-reports)."""
        for name, model in rep.models.items():
            if model.deployment is None:
                continue
            version = model.active if model.state in ("probation", "committed") else None
            cur.execute(_STATE_UPSERT + " AND (state != excluded.state OR deployment IS NOT "
                        "excluded.deployment)", (device, name, version, model.deployment,
                                                 model.state, model.reason, rep.ts))
