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
from edge_runtime.protocol import messages as m
from edge_runtime.protocol.link import Link, LinkTimeout, Message, NotConnected
from edge_runtime.protocol.topics import TopicScheme
from fleet.core import Fleet
from fleet.deploy import standing

log = logging.getLogger("fleet.manager")
SUBSCRIBED = ("status", "heartbeat", "reported", "events", "telemetry", "artifact/req")


class FleetManager:
    def __init__(self, fleet: Fleet, link_factory: Callable[..., Link]) -> None:
        self.fleet = fleet
        self.topics = TopicScheme(fleet.settings.fleet)
        self.link = link_factory(client_id=fleet.settings.client_id, on_connect=self._resync)
        self.stats = {"messages": 0, "dropped": 0, "duplicates": 0, "batches": 0}
        self._tasks: list[asyncio.Task[Any]] = []
        self._new_devices: set[str] = set()
        self._chunk_jobs: asyncio.Queue[tuple[str, m.ArtifactRequest]] = asyncio.Queue()

    async def start(self) -> None:
        await self.link.subscribe(*(self.topics.all_devices(k) for k in SUBSCRIBED))
        await self.link.start()
        for coro in (self._pump(), self._tick_loop(), self._chunk_loop()):
            self._tasks.append(asyncio.ensure_future(coro))

    async def stop(self) -> None:
        for task in self._tasks:
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
        elif kind == "artifact/req":
            self._chunk_jobs.put_nowait((device, m.ArtifactRequest.decode(msg.payload)))

    def _telemetry(self, cur: Any, device: str, t: m.Telemetry) -> None:
        if cur.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)",
                       (t.msg_id, time.time())).rowcount == 0:
            self.stats["duplicates"] += 1
            return
        if t.model is None or t.version is None:
            return
        p = t.payload
        if t.kind == "metrics":
            errors = p.get("errors", {})
            cur.execute("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (device, t.model, t.version, t.start, t.end, int(p["requests"]),
                         int(sum(errors.values())), json.dumps(errors),
                         json.dumps(p["latency"])))
        elif t.kind == "drift":
            cur.execute("INSERT INTO drift VALUES (?, ?, ?, ?, ?, ?)",
                        (device, t.model, t.version, t.start, t.end, json.dumps(p)))

    def _event(self, cur: Any, device: str, payload: bytes) -> None:
        e = m.Event.decode(payload)
        msg_id = orjson.loads(payload).get("msg_id") or f"{device}:{e.seq}:{e.ts}"
        if cur.execute("INSERT OR IGNORE INTO events (msg_id, device, deployment, name, version, "
                       "state, reason, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (msg_id, device, e.deployment, e.name, e.version, e.state, e.reason,
                        e.ts)).rowcount == 0:
            self.stats["duplicates"] += 1
            return
        cur.execute("INSERT INTO device_state VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(device, name) DO UPDATE SET version = excluded.version, "
                    "deployment = excluded.deployment, state = excluded.state, "
                    "reason = excluded.reason, ts = excluded.ts WHERE excluded.ts >= ts",
                    (device, e.name, e.version, e.deployment, e.state, e.reason, e.ts))

    # -- artifacts ---------------------------------------------------------------------------------
    async def _chunk_loop(self) -> None:
        while True:
            device, req = await self._chunk_jobs.get()
            mv = self.fleet.registry.by_sha(req.sha256)
            if mv is None:
                log.warning("%s asked for unknown artifact %s", device, req.sha256[:12])
                continue
            with contextlib.suppress(NotConnected, LinkTimeout), mv.path.open("rb") as fh:
                sends = []
                for index in req.chunks:
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
        f.desired.recompute(sorted(touched | self._pending_recompute()))
        await self.publish_desired()

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
