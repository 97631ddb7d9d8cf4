"""The device agent: applies the manager's desired state through the swap state machine.

It keeps serving and buffering while offline, converges when the broker comes back, downloads
artifacts in verified chunks, watches each new version through probation and rolls itself back
when the version breaks the limits. Swap events and telemetry go through the store's outbox, so
they survive restarts and are sent at least once (the manager deduplicates by message id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import orjson

from edge_runtime.agent.download import PartialDownload, http_download
from edge_runtime.agent.probation import Observed, judge
from edge_runtime.agent.reported import build_reported
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.protocol import messages as m
from edge_runtime.protocol.link import Link, LinkTimeout, NotConnected
from edge_runtime.protocol.topics import TopicScheme
from edge_runtime.registry import Split
from edge_runtime.runtime import Runtime
from edge_runtime.swap import records
from edge_runtime.swap.machine import Event, State, SwapRecord

log = logging.getLogger("edge_runtime.agent")
T = TypeVar("T")
DESIRED_KEY = "agent_desired"
SESSION_KEY = "agent_session"


@dataclass(frozen=True)
class AgentSettings:
    device_id: str
    fleet: str = "default"
    tags: tuple[str, ...] = ()
    group: str | None = None
    profile: str | None = None
    heartbeat_s: float = 30.0
    telemetry_batch: int = 100
    chunk_window: int = 16
    chunk_timeout_s: float = 5.0
    probation_poll_s: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)


class DeviceAgent:
    def __init__(self, runtime: Runtime, link_factory: Callable[..., Link],
                 settings: AgentSettings) -> None:
        self.rt = runtime
        self.s = settings
        self.topics = TopicScheme(settings.fleet)
        self.device = settings.device_id
        self._downloads_dir = runtime.store.root / "downloads"
        self._session = int(self._meta(SESSION_KEY) or 0)
        self._desired: m.Desired | None = self._load_desired()
        self._applied = 0
        self._seq = 0
        self._wake = asyncio.Event()
        self._outbox_wake = asyncio.Event()
        self._chunks: asyncio.Queue[m.ArtifactChunk] = asyncio.Queue()
        self._started = time.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []
        self.link = link_factory(client_id=f"{settings.fleet}.{settings.device_id}",
                                 will=self._will, on_connect=self._on_connect)
        runtime.swaps.probation = self._probation_hook
        runtime.swaps.add_listener(self._on_swap)

    # -- persistence in the store's meta table ------------------------------------------------
    def _meta(self, key: str) -> str | None:
        rows = self.rt.store.db.query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def _set_meta(self, key: str, value: str) -> None:
        with self.rt.store.db.transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _load_desired(self) -> m.Desired | None:
        raw = self._meta(DESIRED_KEY)
        try:
            return m.Desired.decode(raw.encode()) if raw else None
        except m.MessageInvalid:
            return None

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.link.subscribe(self.topics.desired(self.device),
                                  self.topics.artifact_chunk(self.device))
        await self.link.start()
        for coro in (self._pump(), self._converge_loop(), self._outbox_loop(),
                     self._heartbeat_loop()):
            self._tasks.append(asyncio.ensure_future(coro))
        if self._desired is not None:
            self._wake.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(EdgeRuntimeError):
            await self._publish_status("offline", retain=True)
        await self.link.stop()

    def wake_outbox(self) -> None:
        """Send what the outbox holds now (after a telemetry flush) instead of within 1 s."""
        self._outbox_wake.set()

    def _will(self) -> tuple[str, bytes, bool]:
        """Called before every (re)connect: a new session number, and its offline will."""
        self._session += 1
        self._set_meta(SESSION_KEY, str(self._session))
        return (self.topics.status(self.device),
                m.encode(m.Status("offline", self._session)), True)

    async def _on_connect(self) -> None:
        try:
            await self._publish_status("online", retain=True)
            await self.publish_reported()
        except EdgeRuntimeError as exc:
            log.info("%s: connect hook failed (%s)", self.device, exc)
        self._outbox_wake.set()

    async def _publish_status(self, state: str, *, retain: bool) -> None:
        await self.link.publish(self.topics.status(self.device),
                                m.encode(m.Status(state, self._session)), retain=retain)

    async def publish_reported(self) -> None:
        doc = build_reported(self.rt, self._applied, self._session, self.s)
        await self.link.publish(self.topics.reported(self.device), m.encode(doc), retain=True)

    # -- inbound ------------------------------------------------------------------------------
    async def _pump(self) -> None:
        while True:
            msg = await self.link.next_message()
            try:
                self._handle(msg.topic, msg.payload)
            except m.MessageInvalid as exc:
                log.warning("%s: dropped %s (%s)", self.device, msg.topic, exc)

    def _handle(self, topic: str, payload: bytes) -> None:
        parsed = self.topics.parse(topic)
        if parsed is None or parsed.device != self.device:
            return
        if parsed.kind == "desired":
            desired = m.Desired.decode(payload)
            if self._desired is None or desired.generation >= self._desired.generation:
                self._desired = desired
                self._set_meta(DESIRED_KEY, payload.decode())
                self._wake.set()
        elif parsed.kind == "artifact/chunk":
            self._chunks.put_nowait(m.ArtifactChunk.decode(payload))

    # -- converge -----------------------------------------------------------------------------
    async def _converge_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            desired = self._desired
            if desired is None:
                continue
            try:
                for name, target in desired.models.items():
                    await self._apply(name, target, desired.generation)
                self._applied = desired.generation
            except _Superseded:
                continue
            except Exception:  # the loop must survive anything one model throws at it
                log.exception("%s: applying the desired state failed; retrying on the next "
                              "change", self.device)
            with contextlib.suppress(EdgeRuntimeError):
                await self.publish_reported()

    def _superseded(self, name: str, target: m.ModelTarget) -> bool:
        now = self._desired.models.get(name) if self._desired else None
        return now is None or (now.version, now.deployment) != (target.version,
                                                                target.deployment)

    async def _apply(self, name: str, target: m.ModelTarget, generation: int) -> None:
        await self._apply_version(name, target)
        await self._apply_split(name, target)

    async def _apply_version(self, name: str, target: m.ModelTarget) -> None:
        ref = self.rt.store.active(name)
        if ref is not None and ref.version == target.version:
            return
        last = records.recent(self.rt.store.db, name, limit=1)
        if last and last[0].deployment == target.deployment and last[0].version == (
                target.version) and last[0].state in (State.FAILED, State.ROLLED_BACK):
            return  # this deployment already failed here: reported, not retried
        installed = {i.version for i in self.rt.store.installed(name)}
        if target.version in installed:
            rec = await self._in_thread(self.rt.swaps.activate, name, target.version,
                                        deployment=target.deployment)
        else:
            rec = await self._deploy(name, target)
        if rec.state is State.PROBATION:
            await self._watch_probation(rec, target)

    async def _apply_split(self, name: str, target: m.ModelTarget) -> None:
        """Load arm B of a request-level experiment beside the active version, or drop it."""
        exp, reg = target.experiment, self.rt.registry
        current = reg.split(name)
        if exp is None:
            if current is not None and reg.clear_split(name) is not None:
                await self._in_thread(current.b.unload)
            return
        if current is not None and (current.experiment, current.b.version) == (exp.id,
                                                                                 exp.version):
            if current.percent != exp.split:
                reg.set_split(name, Split(exp.id, current.b, exp.split))
            return
        if exp.version not in {i.version for i in self.rt.store.installed(name)}:
            b_target = m.ModelTarget(exp.version, exp.id, exp.artifact)
            path = await self._download(name, target, artifact=b_target.artifact)
            rec = await self._in_thread(self.rt.swaps.install, path, deployment=exp.id)
            if rec.state is not State.INSTALLED:
                log.warning("%s: experiment %s arm B not installed: %s", self.device, exp.id,
                            rec.reason)
                return
        served = await self._in_thread(self._load_b, name, exp.version)
        old = reg.set_split(name, Split(exp.id, served, exp.split))
        if old is not None:
            await self._in_thread(old.b.unload)

    def _load_b(self, name: str, version: str) -> Any:
        installed = self.rt.store.get(name, version)
        self.rt.store.check_files(installed)
        return self.rt.registry.load(installed)

    async def _deploy(self, name: str, target: m.ModelTarget) -> SwapRecord:
        rec = self._resumable(name, target) or self.rt.swaps.begin_deploy(
            name, target.version, self._downloads_dir / f"{target.artifact.sha256}.edgepkg",
            deployment=target.deployment)
        try:
            await self._download(name, target)
        except _Superseded:
            await self._in_thread(self.rt.swaps.abort, rec, "superseded by a newer desired state")
            raise
        except (EdgeRuntimeError, OSError) as exc:  # OSError: disk full, URL unreachable, ...
            return await self._in_thread(self.rt.swaps.fail, rec, f"download failed: {exc}")
        return await self._in_thread(self.rt.swaps.downloaded, rec)

    def _resumable(self, name: str, target: m.ModelTarget) -> SwapRecord | None:
        for rec in records.unfinished(self.rt.store.db):
            if (rec.name, rec.version, rec.state) == (name, target.version, State.DOWNLOADING):
                return rec
        return None

    async def _download(self, name: str, target: m.ModelTarget,
                        artifact: m.Artifact | None = None) -> Path:
        artifact = artifact or target.artifact
        dl = PartialDownload(self._downloads_dir, artifact)
        if artifact.url:
            return await self._in_thread(http_download, artifact.url, dl)
        while not dl.complete:
            if self._superseded(name, target):
                raise _Superseded()
            await self._fetch_window(dl)
        dl.save()
        return await self._in_thread(dl.finalize)

    async def _fetch_window(self, dl: PartialDownload) -> None:
        wanted = dl.missing()[: self.s.chunk_window]
        try:
            await self.link.publish(self.topics.artifact_req(self.device), m.encode(
                m.ArtifactRequest(dl.artifact.sha256, tuple(wanted))))
        except (NotConnected, LinkTimeout):
            await asyncio.sleep(0.5)
            return
        pending = set(wanted)
        deadline = self._loop.time() + self.s.chunk_timeout_s
        while pending and (left := deadline - self._loop.time()) > 0:
            try:
                chunk = await asyncio.wait_for(self._chunks.get(), left)
            except TimeoutError:
                break
            if chunk.sha256 == dl.artifact.sha256:
                dl.write(chunk.index, chunk.data)  # a bad copy is dropped (and counted): ask again
                pending.discard(chunk.index)

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await self._loop.run_in_executor(None, lambda: fn(*args, **kw))

    # -- probation ----------------------------------------------------------------------------
    def _probation_hook(self, rec: SwapRecord) -> Event | None:
        """Fleet deployments are watched by the agent; local activations pass at once."""
        return None if rec.deployment is not None else Event.OK

    def _observed(self, name: str, version: str | None) -> Observed | None:
        if version is None:
            return None
        snap = self.rt.telemetry.metrics.snapshot_all(900.0).get((name, version))
        if snap is None:
            return None
        errors = sum(snap.errors.values())
        return Observed(snap.requests, errors, snap.p95)

    async def _watch_probation(self, rec: SwapRecord, target: m.ModelTarget) -> None:
        old = self._observed(rec.name, rec.previous)
        start = self._loop.time()
        while True:
            new = self._observed(rec.name, rec.version) or Observed(0, 0, None)
            verdict = judge(target.probation, new, old, elapsed_s=self._loop.time() - start)
            if verdict is None and self._superseded(rec.name, target):
                verdict = True, "probation cut short: a newer desired state arrived"
            if verdict is not None:
                ok, reason = verdict
                await self._in_thread(self.rt.swaps.finish_probation, rec, ok, reason)
                return
            await asyncio.sleep(self.s.probation_poll_s)

    # -- outbound: swap events and telemetry through the outbox --------------------------------
    def _on_swap(self, rec: SwapRecord) -> None:
        """On the swapping thread: persist the event in the outbox, then wake the sender."""
        self._seq += 1
        event = m.Event(self._seq, rec.name, rec.version, rec.state.value, rec.deployment,
                        rec.reason)
        self.rt.telemetry.store.enqueue("event", orjson.loads(m.encode(event)))  # type: ignore[union-attr]
        self._loop.call_soon_threadsafe(self._outbox_wake.set)
        if rec.terminal or rec.state is State.PROBATION:
            self._loop.call_soon_threadsafe(self._report_soon)

    def _report_soon(self) -> None:
        self._tasks.append(asyncio.ensure_future(self._safe_report()))

    async def _safe_report(self) -> None:
        with contextlib.suppress(EdgeRuntimeError):
            await self.publish_reported()

    async def _outbox_loop(self) -> None:
        store = self.rt.telemetry.store
        assert store is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox_wake.wait(), 1.0)
            self._outbox_wake.clear()
            while self.link.connected and (batch := store.pending(self.s.telemetry_batch)):
                try:
                    await asyncio.gather(*(self._send(msg.kind, msg.payload) for msg in batch))
                except (NotConnected, LinkTimeout):
                    break
                store.mark_sent([msg.id for msg in batch])

    async def _send(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "event":
            topic = self.topics.events(self.device)
            body = orjson.dumps(payload)
        else:
            topic = self.topics.telemetry(self.device)
            body = _encode_flat(m.Telemetry(
                payload["msg_id"], kind, payload.get("model"), payload.get("version"),
                payload.get("start", 0.0), payload.get("end", 0.0), payload.get("payload", {})))
        await self.link.publish(topic, body)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.heartbeat_s)
            with contextlib.suppress(EdgeRuntimeError):
                hb = m.Heartbeat(self._session, time.monotonic() - self._started)
                await self.link.publish(self.topics.heartbeat(self.device), m.encode(hb), qos=0)


def _encode_flat(msg: Any) -> bytes:
    """The bytes of ``m.encode(msg)`` without dataclasses.asdict's deep copy of every nested
    dict (telemetry payloads carry histograms: the copy was most of a send's cost)."""
    return orjson.dumps({"schema_version": m.SCHEMA_VERSION,
                         **{f.name: getattr(msg, f.name) for f in fields(msg)}})


class _Superseded(Exception):
    """The desired state moved on while this deployment was under way."""
