"""`edgectl serve`: the fleet manager service.

Ingests presence, reported state, events and telemetry in batches (one transaction per batch,
deduplicated by message id), serves artifact chunks, advances rollouts and publishes retained
desired states on a tick. Malformed payloads are logged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.monitor.histogram import LogHistogram
from edge_runtime.protocol import messages as m
from edge_runtime.protocol.link import Link, LinkTimeout, Message, NotConnected
from edge_runtime.protocol.topics import TopicScheme
from fleet.alerts import Alerter
from fleet.core import Fleet
from fleet.deploy import standing
from fleet.registry import ModelVersion

log = logging.getLogger("fleet.manager")
SUBSCRIBED = ("status", "heartbeat", "reported", "events", "telemetry", "artifact/req")
# Chunk requests answered at once: each waits for the broker's acks in the background, so one
# slow round trip does not hold up every other download; bounded to cap buffered chunks
# (16 chunks of 64 KB per request: about 32 MB at most).
CHUNK_JOBS = 32
# Latest swap state per device and model; older news (by the device's clock) never wins.
_STATE_UPSERT = ("INSERT INTO device_state VALUES (?, ?, ?, ?, ?, ?, ?) "
                 "ON CONFLICT(device, name) DO UPDATE SET "
                 "version = COALESCE(excluded.version, version), "
                 "deployment = excluded.deployment, state = excluded.state, "
                 "reason = excluded.reason, ts = excluded.ts WHERE excluded.ts >= ts")


def _metrics_row(p: dict[str, Any]) -> tuple[int, int, str, str]:
    """(requests, errors, errors by kind, latency) of a metrics payload, checked here: the
    rollout gates merge these rows later, and one bad row there would stop every tick."""
    requests, errors = p.get("requests"), p.get("errors", {})
    if type(requests) is not int or requests < 0:
        raise m.MessageInvalid("telemetry", "metrics 'requests' must be a count")
    if not isinstance(errors, dict) or any(type(n) is not int or n < 0
                                           for n in errors.values()):
        raise m.MessageInvalid("telemetry", "metrics 'errors' must map kinds to counts")
    try:
        LogHistogram.from_dict(p.get("latency") or {})
    except ValueError as exc:
        raise m.MessageInvalid("telemetry", f"metrics 'latency': {exc}") from exc
    return (requests, sum(errors.values()), orjson.dumps(errors).decode(),
            orjson.dumps(p["latency"]).decode())


class FleetManager:
    def __init__(self, fleet: Fleet, link_factory: Callable[..., Link]) -> None:
        self.fleet = fleet
        self.topics = TopicScheme(fleet.settings.fleet)
        self.link = link_factory(client_id=fleet.settings.client_id, on_connect=self._resync)
        self.stats = {"messages": 0, "dropped": 0, "duplicates": 0, "batches": 0}
        self._tasks: list[asyncio.Task[Any]] = []
        self._new_devices: set[str] = set()
        self._chunk_jobs: asyncio.Queue[tuple[str, m.ArtifactRequest]] = asyncio.Queue()
        self._sending: set[asyncio.Task[None]] = set()
        self._artifacts: dict[str, ModelVersion] = {}  # by sha256; published content is immutable
        s = fleet.settings
        self.alerter = Alerter(fleet, fleet.drift, self._publish_alert, window_s=s.drift_window_s,
                               webhook=s.alert_webhook, command=s.alert_command)
        self._next_checks = 0.0

    async def start(self) -> None:
        await self.link.subscribe(*(self.topics.all_devices(k) for k in SUBSCRIBED))
        await self.link.start()
        for coro in (self._pump(), self._tick_loop(), self._chunk_loop()):
            self._tasks.append(asyncio.ensure_future(coro))

    async def stop(self) -> None:
        for task in (*self._tasks, *self._sending):
            task.cancel()
        await self.link.stop()

    async def _resync(self) -> None:
        """After (re)connecting, make sure every retained desired state is the latest."""
        with self.fleet.db.transaction() as cur:
            cur.execute("UPDATE desired SET published_generation = 0")

    # -- ingest ---------------------------------------------------------------------------------
    async def _pump(self) -> None:
        while True:
            batch = [await self.link.next_message()]
            while len(batch) < self.fleet.settings.ingest_batch:
                try:
                    batch.append(self.link.next_message_nowait())
                except asyncio.QueueEmpty:
                    break
            self.ingest(batch)

    def ingest(self, batch: list[Message]) -> None:
        """Handle a batch of messages in one transaction (idempotent per message id)."""
        with self.fleet.db.transaction() as cur:
            for msg in batch:
                try:
                    self._handle(cur, msg)
                except (m.MessageInvalid, ValueError, KeyError, TypeError) as exc:
                    self.stats["dropped"] += 1
                    log.warning("dropped %s: %s", msg.topic, exc)
        self.stats["messages"] += len(batch)
        self.stats["batches"] += 1

    def _handle(self, cur: Any, msg: Message) -> None:
        parsed = self.topics.parse(msg.topic)
        if parsed is None:
            raise ValueError("not a device topic of this fleet")
        device, kind = parsed.device, parsed.kind
        if kind == "telemetry":
            self._telemetry(cur, device, m.Telemetry.decode(msg.payload))
        elif kind == "events":
            self._event(cur, device, msg.payload)
        elif kind == "status":
            self.fleet.inventory.on_status(cur, device, m.Status.decode(msg.payload))
        elif kind == "heartbeat":
            self.fleet.inventory.on_heartbeat(cur, device, m.Heartbeat.decode(msg.payload))
        elif kind == "reported":
            rep = m.Reported.decode(msg.payload)
            if self.fleet.inventory.on_reported(cur, device, rep, orjson.loads(msg.payload)):
                self._new_devices.add(device)
            self._reported_states(cur, device, rep)
        elif kind == "artifact/req":
            self._chunk_jobs.put_nowait((device, m.ArtifactRequest.decode(msg.payload)))

    def _telemetry(self, cur: Any, device: str, t: m.Telemetry) -> None:
        row = _metrics_row(t.payload) if t.kind == "metrics" else None
        if cur.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)",
                       (t.msg_id, time.time())).rowcount == 0:
            self.stats["duplicates"] += 1
            return
        if t.model is None or t.version is None:
            return
        p = t.payload
        if row is not None:
            cur.execute("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (device, t.model, t.version, t.start, t.end, *row))
        elif t.kind == "drift":
            cur.execute("INSERT INTO drift VALUES (?, ?, ?, ?, ?, ?)",
                        (device, t.model, t.version, t.start, t.end, json.dumps(p)))
        elif t.kind == "feedback":
            cur.execute("INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?)",
                        (device, t.model, t.version, t.end, int(p["n"]), int(p["correct"])))

    def _event(self, cur: Any, device: str, payload: bytes) -> None:
        e = m.Event.decode(payload)
        msg_id = orjson.loads(payload).get("msg_id") or f"{device}:{e.seq}:{e.ts}"
        if cur.execute("INSERT OR IGNORE INTO events (msg_id, device, deployment, name, version, "
                       "state, reason, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (msg_id, device, e.deployment, e.name, e.version, e.state, e.reason,
                        e.ts)).rowcount == 0:
            self.stats["duplicates"] += 1
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

    # -- artifacts ---------------------------------------------------------------------------------
    async def _chunk_loop(self) -> None:
        window = asyncio.Semaphore(CHUNK_JOBS)
        while True:
            device, req = await self._chunk_jobs.get()
            mv = self._artifact(req.sha256)
            if mv is None:
                log.warning("%s asked for unknown artifact %s", device, req.sha256[:12])
                continue
            await window.acquire()
            task = asyncio.ensure_future(self._send_chunks(device, mv, req.chunks))
            self._sending.add(task)

            def sent(t: asyncio.Task[None]) -> None:
                self._sending.discard(t)
                window.release()

            task.add_done_callback(sent)

    def _artifact(self, sha256: str) -> ModelVersion | None:
        mv = self._artifacts.get(sha256)
        if mv is None:
            mv = self.fleet.registry.by_sha(sha256)
            if mv is not None:
                self._artifacts[sha256] = mv
        return mv

    async def _send_chunks(self, device: str, mv: ModelVersion, chunks: tuple[int, ...]) -> None:
        with contextlib.suppress(NotConnected, LinkTimeout), mv.path.open("rb") as fh:
            sends = []
            for index in chunks:
                if index >= len(mv.chunks):
                    continue
                fh.seek(index * mv.chunk_size)
                chunk = m.ArtifactChunk(mv.sha256, index, fh.read(mv.chunk_size))
                sends.append(self.link.publish(self.topics.artifact_chunk(device),
                                               chunk.encode()))
            await asyncio.gather(*sends)

    # -- tick ------------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        while True:
            try:
                await self.tick()
            except EdgeRuntimeError as exc:
                log.error("tick failed: %s", exc)
            await asyncio.sleep(self.fleet.settings.tick_s)

    async def tick(self) -> None:
        f = self.fleet
        touched = set(f.rollouts.tick())
        new, self._new_devices = self._new_devices, set()
        for device in new:
            if standing(f.db, f.desired, f.inventory.get(device)):
                touched.add(device)
        touched |= f.experiments.tick()
        f.desired.recompute(sorted(touched | self._pending_recompute()))
        await self.publish_desired()
        if time.time() >= self._next_checks:  # drift/degradation alerts, experiment looks
            self._next_checks = time.time() + f.settings.alert_interval_s
            await self.alerter.check()
            f.experiments.look()

    async def _publish_alert(self, topic: str, body: bytes) -> None:
        await self.link.publish(topic, body)

    def _pending_recompute(self) -> set[str]:
        """Devices whose assignments changed outside the manager (CLI deploys)."""
        started = time.time()  # before the query: a concurrent write is seen now or next tick
        rows = self.fleet.db.query(
            "SELECT DISTINCT a.device FROM assignments a LEFT JOIN desired d ON "
            "d.device = a.device WHERE d.device IS NULL OR a.updated_at > "
            "COALESCE((SELECT CAST(value AS REAL) FROM meta WHERE key = 'recomputed_at'), 0)")
        with self.fleet.db.transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO meta VALUES ('recomputed_at', ?)",
                        (repr(started - 1.0),))
        return {r["device"] for r in rows}

    async def publish_desired(self) -> int:
        if not self.link.connected:
            return 0
        todo = self.fleet.desired.unpublished()
        results = await asyncio.gather(
            *(self.link.publish(self.topics.desired(d), doc, retain=True) for d, _g, doc in todo),
            return_exceptions=True)
        done = [(d, g) for (d, g, _doc), res in zip(todo, results, strict=True)
                if not isinstance(res, BaseException)]
        self.fleet.desired.mark_published(done)
        return len(done)
