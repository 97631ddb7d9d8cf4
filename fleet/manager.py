"""`edgectl serve`: the fleet manager service.

Ingests presence, reported state, events and telemetry in batches (`fleet.ingest`: every message
decoded and range-checked first, a bad one logged, counted and dropped), serves artifact chunks,
advances rollouts and publishes retained desired states on a tick, and checks alerts on a timer.
Each of these loops runs under a `Supervisor`: an unexpected exception is logged with its
traceback, counted and the loop restarted with backoff. Counters and task health are saved to
the database every ``health_interval_s`` for `edgectl manager status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.protocol import messages as m
from edge_runtime.protocol.link import Link, LinkTimeout, Message, NotConnected
from edge_runtime.protocol.schema import Defect, MessageInvalid
from edge_runtime.protocol.topics import TopicScheme
from edge_runtime.supervise import Supervisor
from fleet import health
from fleet.alerts import Alerter
from fleet.core import Fleet
from fleet.deploy import standing
from fleet.ingest import SUBSCRIBED, Ingestor
from fleet.registry import ModelVersion
from fleet.settings import Enrollment

log = logging.getLogger("fleet.manager")
# Chunk requests answered at once: each waits for the broker's acks in the background, so one
# slow round trip does not hold up every other download; bounded to cap buffered chunks
# (16 chunks of 64 KB per request: about 32 MB at most).
CHUNK_JOBS = 32
ENROLLMENT_HELP = {
    Enrollment.KNOWN: "only devices registered with `edgectl devices add` join the inventory",
    Enrollment.OPEN: "any client id that speaks the protocol joins the inventory",
}


class FleetManager:
    def __init__(self, fleet: Fleet, link_factory: Callable[..., Link]) -> None:
        s = fleet.settings
        self.fleet = fleet
        self.topics = TopicScheme(s.fleet)
        self.link = link_factory(client_id=s.client_id, on_connect=self._resync)
        self.supervisor = Supervisor(log)
        self.ingestor = Ingestor(fleet, on_artifact_request=self._queue_chunks,
                                 counts=health.load_counts(fleet.db))
        self.started_at = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._chunk_jobs: asyncio.Queue[tuple[str, ModelVersion, tuple[int, ...]]] = \
            asyncio.Queue(maxsize=s.chunk_queue)
        self._sending: set[asyncio.Task[None]] = set()
        self._artifacts: dict[str, ModelVersion] = {}  # by sha256; published content is immutable
        self.alerter = Alerter(fleet, fleet.drift, self._publish_alert, window_s=s.drift_window_s,
                               webhook=s.alert_webhook, command=s.alert_command)

    @property
    def stats(self) -> dict[str, int]:
        c = self.ingestor.counts
        return {"messages": c.messages, "dropped": c.dropped, "duplicates": c.duplicates,
                "batches": c.batches}

    async def start(self) -> None:
        await self.link.subscribe(*(self.topics.all_devices(k) for k in SUBSCRIBED))
        await self.link.start()
        for name, loop in (("ingest", self._pump), ("tick", self._tick_loop),
                           ("alerts", self._alert_loop), ("artifacts", self._chunk_loop),
                           ("health", self._health_loop)):
            self._tasks.append(self.supervisor.spawn(name, loop))
        enrollment = self.fleet.settings.enrollment
        log.info("enrollment %s: %s", enrollment.value, ENROLLMENT_HELP[enrollment])

    async def stop(self) -> None:
        await self.supervisor.stop()
        for task in self._sending:
            task.cancel()
        with contextlib.suppress(Exception):  # the database may be gone with the process
            self.save_health()
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
        self.ingestor.ingest(batch)

    # -- artifacts ---------------------------------------------------------------------------------
    def _queue_chunks(self, device: str, req: m.ArtifactRequest) -> None:
        kind = "artifact request"
        mv = self._artifact(req.sha256)
        if mv is None:
            raise MessageInvalid(kind, f"unknown artifact {req.sha256[:12]}",
                                 Defect.UNKNOWN_VERSION)
        if max(req.chunks) >= len(mv.chunks):
            raise MessageInvalid(kind, f"{mv.name} {mv.version} has {len(mv.chunks)} chunks",
                                 Defect.OUT_OF_RANGE)
        try:
            self._chunk_jobs.put_nowait((device, mv, req.chunks))
        except asyncio.QueueFull:
            raise MessageInvalid(kind, "too many requests waiting", Defect.BUSY) from None

    async def _chunk_loop(self) -> None:
        window = asyncio.Semaphore(CHUNK_JOBS)
        while True:
            device, mv, chunks = await self._chunk_jobs.get()
            await window.acquire()
            task = asyncio.ensure_future(self._send_chunks(device, mv, chunks))
            self._sending.add(task)

            def sent(t: asyncio.Task[None], sha: str = mv.sha256) -> None:
                self._sending.discard(t)
                window.release()
                if not t.cancelled() and (exc := t.exception()) is not None:
                    self.ingestor.counts.drop("artifact/req", Defect.ERROR)
                    log.error("sending chunks of %s failed", sha[:12], exc_info=exc)

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
            except EdgeRuntimeError as exc:  # expected trouble; anything else: the supervisor
                log.error("tick failed: %s", exc)
            await asyncio.sleep(self.fleet.settings.tick_s)

    async def tick(self) -> None:
        f = self.fleet
        touched = set(f.rollouts.tick())
        new, self.ingestor.new_devices = self.ingestor.new_devices, set()
        for device in new:
            if standing(f.db, f.desired, f.inventory.get(device)):
                touched.add(device)
        touched |= f.experiments.tick()
        f.desired.recompute(sorted(touched | self._pending_recompute()))
        await self.publish_desired()

    async def _alert_loop(self) -> None:
        """Drift/degradation alerts and experiment looks, now and every alert_interval_s."""
        while True:
            await self.alerter.check()
            self.fleet.experiments.look()
            await asyncio.sleep(self.fleet.settings.alert_interval_s)

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

    # -- health ----------------------------------------------------------------------------------
    async def _health_loop(self) -> None:
        while True:
            self.save_health()
            await asyncio.sleep(self.fleet.settings.health_interval_s)

    def save_health(self) -> None:
        health.save(self.fleet.db, counts=self.ingestor.counts,
                    tasks=self.supervisor.snapshot(), started_at=self.started_at,
                    enrollment=self.fleet.settings.enrollment.value,
                    extra={"connected": self.link.connected,
                           "inbound_dropped": self.link.inbound_dropped,
                           "chunk_requests_waiting": self._chunk_jobs.qsize(),
                           "alert_check_failures": self.alerter.failures})
