"""A fleet in one event loop for integration tests: real broker, real manager, simulated devices
(each a real MQTT client with the real agent), plus a spy that records every desired state.

The manager signs desired states with the private half of the package key (``trusted``), which
the devices trust for desired states too unless they are given fleet keys: so every fleet test
runs with signing on. ``signing_key`` picks another key (or none)."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from edge_runtime.protocol.link import MqttSettings
from edge_runtime.protocol.mqtt import MqttLink
from edge_runtime.protocol.topics import TopicScheme
from fleet.core import Fleet
from fleet.deploy import deploy
from fleet.inventory import Target
from fleet.manager import FleetManager
from fleet.rollout.machine import Rollout, RState
from fleet.settings import Enrollment, ManagerSettings
from fleet.sim import SimConfig, SimDevice, SimKnobs, Simulator
from tests.broker import Broker

FLEET = "default"


class DesiredSpy:
    """A full-access subscriber on every device's retained ``desired`` topic: what the broker
    delivered, in order, per device, as (generation, models)."""

    def __init__(self, mqtt: MqttSettings, fleet: str = FLEET) -> None:
        self.topics = TopicScheme(fleet)
        self.link = MqttLink(mqtt, client_id="test-desired-spy", clean_start=True)
        self.got: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.link.subscribe(self.topics.all_devices("desired"))
        await self.link.start()
        await self.link.wait_connected(10)
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            msg = await self.link.next_message()
            parsed = self.topics.parse(msg.topic)
            if parsed is None or not msg.payload:
                continue
            try:  # the envelope's document, unverified: the spy records what was sent
                doc = orjson.loads(base64.b64decode(orjson.loads(msg.payload)["payload"]))
            except (ValueError, KeyError, TypeError):
                continue
            self.got.setdefault(parsed.device, []).append((doc["generation"], doc["models"]))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.link.stop()

    def versions(self, device: str, name: str) -> list[str | None]:
        """The version of ``name`` in every desired message the device was sent, in order."""
        return [models.get(name, {}).get("version") for _g, models in self.got.get(device, [])]

    def ever_sent(self, name: str, version: str) -> set[str]:
        return {d for d in self.got if version in self.versions(d, name)}

    def check_generations(self) -> None:
        """Generations never go down; a generation always means the same content, and new
        content always comes with a new generation."""
        for device, msgs in self.got.items():
            seen: dict[int, dict[str, Any]] = {}
            last = 0
            for gen, models in msgs:
                assert gen >= last, f"{device}: generation went back {last} -> {gen}"
                assert seen.setdefault(gen, models) == models, (
                    f"{device}: generation {gen} sent with two different contents")
                last = gen


@dataclass
class FleetHarness:
    broker: Broker
    workdir: Path
    trusted: Path
    fleet: Fleet | None = None
    signing_key: Path | None = None  # default: the package key's private half
    sign: bool = True
    enrollment: Enrollment = Enrollment.OPEN  # a lab: simulated devices join by themselves
    manager: FleetManager | None = None
    sim: Simulator | None = None
    spy: DesiredSpy | None = None
    manager_mqtt: MqttSettings | None = None
    _fleets: list[Fleet] = field(default_factory=list)

    @property
    def mqtt(self) -> MqttSettings:
        return MqttSettings.from_url(self.broker.url)

    async def __aenter__(self) -> FleetHarness:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self.sim is not None:
            await self.sim.stop()
        if self.spy is not None:
            await self.spy.stop()
        await self.stop_manager()
        for fleet in self._fleets:
            fleet.db.close()

    def settings(self) -> ManagerSettings:
        key = (self.signing_key or self.trusted.with_suffix(".key")) if self.sign else None
        return ManagerSettings(db=self.workdir / "fleet.db", artifacts=self.workdir / "art",
                               mqtt=self.manager_mqtt or self.mqtt,
                               trusted_keys=(self.trusted,), signing_key=key, tick_s=0.1,
                               enrollment=self.enrollment)

    @property
    def f(self) -> Fleet:
        assert self.fleet is not None
        return self.fleet

    async def start_manager(self) -> FleetManager:
        settings = self.settings()
        self.fleet = Fleet(settings)
        self._fleets.append(self.fleet)
        self.manager = FleetManager(self.fleet, lambda **kw: MqttLink(settings.mqtt, **kw))
        await self.manager.start()
        await self.manager.link.wait_connected(10)
        return self.manager

    async def stop_manager(self) -> None:
        if self.manager is not None:
            await self.manager.stop()
            self.manager = None

    async def start_spy(self) -> DesiredSpy:
        self.spy = DesiredSpy(self.mqtt)
        await self.spy.start()
        return self.spy

    def sim_config(self, devices: int, **kw: Any) -> SimConfig:
        defaults: dict[str, Any] = {"trusted_keys": (self.trusted,),
                                    "workdir": self.workdir / "devices", "rps": 20.0,
                                    "telemetry_interval_s": 0.3, "knobs": SimKnobs()}
        return SimConfig(devices, self.mqtt, **{**defaults, **kw})

    async def start_sim(self, devices: int, **kw: Any) -> Simulator:
        self.sim = Simulator(self.sim_config(devices, **kw))
        await self.sim.start()
        return self.sim

    async def add_devices(self, n: int, *,
                          mqtt_for: Callable[[str], MqttSettings] | None = None,
                          **changes: Any) -> list[SimDevice]:
        """Start n more simulated devices (new ids) in the running simulator; ``mqtt_for``
        gives each its own broker login (by device id)."""
        assert self.sim is not None
        cfg = replace(self.sim.cfg, **changes)
        first = len(self.sim.devices)
        assert cfg.workdir is not None
        new = [SimDevice(i, replace(cfg, mqtt=mqtt_for(f"sim-{i:05d}")) if mqtt_for else cfg,
                         cfg.workdir, random.Random(i)) for i in range(first, first + n)]
        self.sim.devices.extend(new)
        await asyncio.gather(*(d.start() for d in new))
        return new

    def device(self, device_id: str) -> SimDevice:
        assert self.sim is not None
        return next(d for d in self.sim.devices if d.id == device_id)

    async def drop_device(self, device_id: str) -> None:
        """A pulled cable: the connection dies without DISCONNECT (the will fires) and the
        device stops; its store stays on disk for ``revive_device``."""
        d = self.device(device_id)
        for task in (*d._tasks, *d.agent._tasks):
            task.cancel()
        d.agent.link.drop()
        await asyncio.sleep(0.05)
        d.offline = True  # Simulator.stop must not stop its agent again
        d.runtime.close()

    async def revive_device(self, device_id: str) -> SimDevice:
        """The device boots again over the same store (a new runtime and agent)."""
        assert self.sim is not None
        old = self.device(device_id)
        index = self.sim.devices.index(old)
        cfg = replace(self.sim.cfg, offline_fraction=0.0)
        assert cfg.workdir is not None
        new = SimDevice(index, cfg, cfg.workdir, random.Random(index))
        self.sim.devices[index] = new
        await new.start()
        return new

    def with_knobs(self, knobs: SimKnobs) -> None:
        assert self.sim is not None
        for d in self.sim.devices:
            d.runtime.registry._backends["onnx"].knobs = knobs  # type: ignore[index,union-attr]
            d.cfg = replace(d.cfg, knobs=knobs)

    async def until(self, cond: Callable[[], bool], timeout: float = 30.0,
                    what: str | Callable[[], str] = "condition") -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not cond():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"timed out waiting for {what() if callable(what) else what}")
            await asyncio.sleep(0.05)

    # -- fleet shortcuts -------------------------------------------------------------------------
    def publish(self, *packages: Path) -> None:
        for pkg in packages:
            self.f.registry.publish(pkg)

    async def wait_inventory(self, n: int, timeout: float = 30.0) -> None:
        await self.until(lambda: len([d for d in self.f.inventory.devices()
                                      if d.reported is not None]) >= n,
                         timeout, f"{n} devices in the inventory")

    async def seed(self, name: str, version: str, *, target: str = "all",
                   timeout: float = 30.0) -> None:
        """Every device of the target on ``version`` (blue-green), and it is production."""
        did, devices = deploy(self.f, name, version, Target.parse(target),
                              probation={"seconds": 0.2})
        self.f.registry.set_alias(name, "production", version)
        await self.until(lambda: self.committed(did) >= set(devices), timeout,
                         f"{name} {version} committed on {len(devices)} devices ({did})")

    def committed(self, deployment: str) -> set[str]:
        """Devices whose latest reported swap is this deployment, committed."""
        return {r[0] for r in self.f.db.query(
            "SELECT device FROM device_state WHERE deployment = ? AND state = 'committed'",
            (deployment,))}

    def rollout(self, rid: str) -> Rollout:
        return self.f.rollouts.get(rid)

    async def wait_rollout(self, rid: str, *states: RState, timeout: float = 30.0) -> Rollout:
        await self.until(lambda: self.rollout(rid).state in states, timeout,
                         lambda: f"rollout {rid} in {'/'.join(states)} "
                                 f"(now {self.f.rollouts.status(rid)})")
        return self.rollout(rid)

    def active(self, name: str) -> dict[str, str | None]:
        assert self.sim is not None
        out = {}
        for d in self.sim.devices:
            if d.offline:
                continue
            ref = d.runtime.store.active(name)
            out[d.id] = ref.version if ref else None
        return out

    def count(self, name: str, version: str) -> int:
        return sum(1 for v in self.active(name).values() if v == version)

    def installed(self, device_id: str, name: str) -> set[str]:
        return {m.version for m in self.device(device_id).runtime.store.installed(name)}

    def events(self, deployment: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.f.db.query(
            "SELECT device, name, version, state, reason FROM events WHERE deployment = ? "
            "ORDER BY id", (deployment,))]
