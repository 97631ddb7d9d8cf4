"""The device agent: applies the manager's desired state through the swap state machine.

It keeps serving and buffering while offline, converges when the broker comes back, downloads
artifacts in verified chunks, watches each new version through probation and rolls itself back
when the version breaks the limits. Swap events and telemetry go through the store's outbox, so
they survive restarts and are sent at least once (the manager deduplicates by message id).

Inbound messages are checked before they change anything: a desired state must be signed by a
trusted fleet key, name this device and be newer than the last one accepted (``DesiredGate``);
an artifact chunk must answer the outstanding request (``ChunkWindow``). Drops are counted
(``Drops``) and the background loops run under a ``Supervisor``; both show in ``status()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from edge_runtime.agent.chunks import ChunkWindow
from edge_runtime.agent.download import PartialDownload, http_download
from edge_runtime.agent.drops import Drops
from edge_runtime.agent.outbox import OutboxSender
from edge_runtime.agent.probation import NoDataPolicy, Observed, judge
from edge_runtime.agent.reported import build_reported
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.protocol import messages as m
from edge_runtime.protocol.link import Link, LinkTimeout, NotConnected
from edge_runtime.protocol.signed import DesiredGate
from edge_runtime.protocol.topics import TopicScheme
from edge_runtime.registry import Split
from edge_runtime.runtime import Runtime
from edge_runtime.signing import TrustStore
from edge_runtime.supervise import Supervisor
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
    # a probation that never sees min_requests waits this long, then applies probation_no_data
    probation_max_wait_s: float = 300.0
    probation_no_data: NoDataPolicy = NoDataPolicy.HOLD
    # public keys desired states must be signed with (files or directories of *.pub)
    fleet_keys: tuple[Path, ...] = ()
    # development only: also accept unsigned desired states (or signed by an unknown key)
    allow_unsigned_desired: bool = False
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
        self._gate = DesiredGate(TrustStore.load(settings.fleet_keys), device=self.device,
                                 fleet=settings.fleet,
                                 allow_unsigned=settings.allow_unsigned_desired)
        self._window = ChunkWindow()
        self.drops = Drops(self.device, log)
        self._sup = Supervisor(log)
        self._started = time.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []  # supervised loops and pending reports
        self.link = link_factory(client_id=f"{settings.fleet}.{settings.device_id}",
                                 will=self._will, on_connect=self._on_connect)
        if runtime.telemetry.store is None:
            raise ConfigError("the fleet agent needs the telemetry store (its outbox)")
        self._outbox = OutboxSender(self.link, runtime.telemetry.store, topics=self.topics,
                                    device=self.device, batch=settings.telemetry_batch)
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
        """The last accepted document (its checks were made when it arrived)."""
        raw = self._meta(DESIRED_KEY)
        try:
            return m.Desired.decode(raw.encode()) if raw else None
        except m.MessageInvalid:
            return None

    def status(self) -> dict[str, Any]:
        """Drop counters and the health of the background loops, for the daemon's status."""
        return {"device": self.device, "connected": self.link.connected,
                "inbound_dropped": self.link.inbound_dropped,
                "desired_generation": self._desired.generation if self._desired else None,
                "applied_generation": self._applied, "drops": self.drops.snapshot(),
                "tasks": self._sup.snapshot()}

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.link.subscribe(self.topics.desired(self.device),
                                  self.topics.artifact_chunk(self.device))
        await self.link.start()
        if not len(self._gate.trust) and not self._gate.allow_unsigned:
            log.warning("%s: no fleet key configured: every desired state will be refused "
                        "(set fleet_keys, or allow_unsigned_desired for development)",
                        self.device)
        for name, loop in (("pump", self._pump), ("converge", self._converge_loop),
                           ("outbox", self._outbox.run), ("heartbeat", self._heartbeat_loop)):
            self._keep(self._sup.spawn(f"agent.{name}", loop))
        if self._desired is not None:
            self._wake.set()

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """Track a task until it ends (so the list holds only live ones)."""
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def stop(self) -> None:
        self._sup.cancel()
        pending = set(self._tasks)
        for _ in range(3):  # a task whose await swallowed the cancellation is asked again
            for task in pending:
                task.cancel()
            if not pending:
                break
            _done, pending = await asyncio.wait(pending, timeout=1.0)
        if pending:
            log.warning("%s: %d task(s) did not stop", self.device, len(pending))
        with contextlib.suppress(EdgeRuntimeError):
            await self._publish_status("offline", retain=True)
        await self.link.stop()

    def wake_outbox(self) -> None:
        """Send what the outbox holds now (after a telemetry flush) instead of within 1 s."""
        self._outbox.wake.set()

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
        self._outbox.wake.set()

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
            parsed = self.topics.parse(msg.topic)
            if parsed is None or parsed.device != self.device:
                continue
            try:
                self._handle(parsed.kind, msg.payload)
            except m.MessageInvalid as exc:
                self.drops.invalid(msg.topic, parsed.kind, exc)

    def _handle(self, kind: str, payload: bytes) -> None:
        if kind == "desired":
            opened = self._gate.open(payload, self._desired)
            if opened is not None:
                self._set_meta(DESIRED_KEY, opened.payload.decode())  # persisted before use
                self._desired = opened.desired
                self._wake.set()
        elif kind == "artifact/chunk":
            chunk = m.ArtifactChunk.decode(payload)
            dropped = self._window.offer(chunk)
            if dropped is not None:
                self.drops.chunk(dropped, chunk.sha256, chunk.index)

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
            if self._needs_rejudging(name, target):
                rec = await self._in_thread(self.rt.swaps.rejudge, name,
                                            deployment=target.deployment)
                await self._watch_probation(rec, target)
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
        try:
            while not dl.complete:
                if self._superseded(name, target):
                    raise _Superseded()
                await self._fetch_window(dl)
        finally:
            self._window.close()
        dl.save()
        return await self._in_thread(dl.finalize)

    async def _fetch_window(self, dl: PartialDownload) -> None:
        """Ask for the next window of missing chunks; the pump writes them as they come."""
        wanted = dl.missing()[: self.s.chunk_window]
        self._window.open(dl, wanted)
        try:
            await self.link.publish(self.topics.artifact_req(self.device), m.encode(
                m.ArtifactRequest(dl.artifact.sha256, tuple(wanted))))
        except (NotConnected, LinkTimeout):
            await asyncio.sleep(0.5)
            return
        await self._window.wait(self.s.chunk_timeout_s)

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await self._loop.run_in_executor(None, lambda: fn(*args, **kw))

    # -- probation ----------------------------------------------------------------------------
    def _probation_hook(self, rec: SwapRecord) -> Event | None:
        """Fleet deployments are watched by the agent; local activations pass at once."""
        return None if rec.deployment is not None else Event.OK

    def _needs_rejudging(self, name: str, target: m.ModelTarget) -> bool:
        """A new fleet deployment of the version already active (an experiment arm promoted):
        that version passed only the earlier deployment's probation, so it is watched again
        under this one's limits, against the version it replaced."""
        ref = self.rt.store.active(name)
        last = records.recent(self.rt.store.db, name, limit=1)
        if ref is None or ref.previous is None or target.deployment is None or not last:
            return False
        installed = {i.version for i in self.rt.store.installed(name)}
        return (last[0].version == target.version and last[0].deployment != target.deployment
                and last[0].state is State.COMMITTED and ref.previous in installed)

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
            verdict = judge(target.probation, new, old, elapsed_s=self._loop.time() - start,
                            max_wait_s=self.s.probation_max_wait_s,
                            no_data=self.s.probation_no_data)
            if verdict is None and self._superseded(rec.name, target):
                # without the data to judge it, the new version is not committed
                enough = new.requests >= target.probation.min_requests
                verdict = enough, ("probation cut short: a newer desired state arrived"
                                   + ("" if enough else f" before {new.requests} requests "
                                      f"reached {target.probation.min_requests}"))
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
        self._outbox.store.enqueue("event", orjson.loads(m.encode(event)))
        self._loop.call_soon_threadsafe(self._outbox.wake.set)
        if rec.terminal or rec.state is State.PROBATION:
            self._loop.call_soon_threadsafe(self._report_soon)

    def _report_soon(self) -> None:
        self._keep(asyncio.ensure_future(self._safe_report()))

    async def _safe_report(self) -> None:
        with contextlib.suppress(EdgeRuntimeError):
            await self.publish_reported()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.heartbeat_s)
            with contextlib.suppress(EdgeRuntimeError):
                hb = m.Heartbeat(self._session, time.monotonic() - self._started)
                await self.link.publish(self.topics.heartbeat(self.device), m.encode(hb), qos=0)


class _Superseded(Exception):
    """The desired state moved on while this deployment was under way."""
