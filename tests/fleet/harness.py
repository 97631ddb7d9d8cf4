"""A fleet in one event loop for integration tests: real broker, real manager, simulated devices
(each a real MQTT client with the real agent)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edge_runtime.protocol.link import MqttSettings
from edge_runtime.protocol.mqtt import MqttLink
from fleet.core import Fleet
from fleet.manager import FleetManager
from fleet.settings import ManagerSettings
from fleet.sim import SimConfig, SimKnobs, Simulator
from tests.broker import Broker


@dataclass
class FleetHarness:
    broker: Broker
    workdir: Path
    trusted: Path
    fleet: Fleet | None = None
    manager: FleetManager | None = None
    sim: Simulator | None = None

    @property
    def mqtt(self) -> MqttSettings:
        return MqttSettings.from_url(self.broker.url)

    def settings(self) -> ManagerSettings:
        return ManagerSettings(db=self.workdir / "fleet.db", artifacts=self.workdir / "art",
                               mqtt=self.mqtt, trusted_keys=(self.trusted,), tick_s=0.1)

    async def start_manager(self) -> FleetManager:
        self.fleet = Fleet(self.settings())
        self.manager = FleetManager(self.fleet, lambda **kw: MqttLink(self.mqtt, **kw))
        await self.manager.start()
        await self.manager.link.wait_connected(10)
        return self.manager

    async def stop_manager(self) -> None:
        if self.manager is not None:
            await self.manager.stop()
            self.manager = None

    async def start_sim(self, devices: int, **kw: object) -> Simulator:
        knobs = kw.pop("knobs", SimKnobs())
        cfg = SimConfig(devices, self.mqtt, trusted_keys=(self.trusted,),
                        workdir=self.workdir / "devices", rps=20.0, telemetry_interval_s=0.3,
                        knobs=knobs, **kw)  # type: ignore[arg-type]
        self.sim = Simulator(cfg)
        await self.sim.start()
        return self.sim

    def with_knobs(self, knobs: SimKnobs) -> None:
        assert self.sim is not None
        for d in self.sim.devices:
            d.runtime.registry._backends["onnx"].knobs = knobs  # type: ignore[index,union-attr]

    async def until(self, cond: Callable[[], bool], timeout: float = 30.0,
                    what: str = "condition") -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not cond():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    def active(self, name: str) -> dict[str, str | None]:
        assert self.sim is not None
        out = {}
        for d in self.sim.devices:
            ref = d.runtime.store.active(name)
            out[d.id] = ref.version if ref else None
        return out

    def count(self, name: str, version: str) -> int:
        return sum(1 for v in self.active(name).values() if v == version)


def make_settings_replace(s: ManagerSettings, **kw: object) -> ManagerSettings:
    return replace(s, **kw)  # type: ignore[arg-type]
