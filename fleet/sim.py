"""Fleet simulator: N devices in one process, each a real MQTT client running the real device
agent over a real store (swaps, outbox, telemetry), with a simulated model backend.

Knobs: devices offline for a while, versions that fail to load, versions with an error rate or
extra latency, and drifted inputs on a fraction of devices.
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.agent import AgentSettings, DeviceAgent
from edge_runtime.backends.base import BackendOptions
from edge_runtime.errors import SwapError
from edge_runtime.manifest import Manifest
from edge_runtime.protocol.link import MqttSettings
from edge_runtime.protocol.mqtt import MqttLink
from edge_runtime.runtime import Runtime
from edge_runtime.settings import ServeSettings
from fleet.simdata import sampler_for

log = logging.getLogger("fleet.sim")


@dataclass(frozen=True)
class SimKnobs:
    failing: frozenset[str] = frozenset()  # versions whose load fails
    error_rates: Mapping[str, float] = field(default_factory=dict)  # version -> error rate
    extra_latency_ms: Mapping[str, float] = field(default_factory=dict)  # version -> ms
    base_latency_ms: float = 2.0
    drift_fraction: float = 0.0  # share of devices whose inputs are shifted
    drift_sd: float = 1.0


@dataclass(frozen=True)
class SimConfig:
    devices: int
    mqtt: MqttSettings
    fleet: str = "default"
    trusted_keys: tuple[Path, ...] = ()
    fleet_keys: tuple[Path, ...] = ()  # desired states' signers (default: trusted_keys)
    allow_unsigned_desired: bool = False
    workdir: Path | None = None
    groups: tuple[str, ...] = ("sim",)
    tags: tuple[str, ...] = ("sim",)
    rps: float = 5.0  # requests per second per device
    telemetry_interval_s: float = 1.0
    heartbeat_s: float = 10.0
    offline_fraction: float = 0.0
    offline_for_s: float = 30.0
    knobs: SimKnobs = field(default_factory=SimKnobs)
    seed: int = 0
    real_models: bool = False  # onnxruntime/TFLite instead of the instant fake


class _SimModel:
    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    def predict(self, inputs: Mapping[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        n = int(next(iter(inputs.values())).shape[0]) if inputs else 1
        out = {}
        for spec in self.manifest.outputs:
            shape = tuple(n if i == 0 else (d if isinstance(d, int) else 1)
                          for i, d in enumerate(spec.shape)) or (n,)
            out[spec.name] = np.zeros(shape, dtype=np.dtype(spec.dtype)
                                      if spec.dtype != "string" else object)
        return out

    def unload(self) -> None:
        return None


class SimBackend:
    """Stands in for onnxruntime/TFLite: loads instantly, fails for the versions it is told."""

    name = "sim"

    def __init__(self, knobs: SimKnobs, *, real: bool = False) -> None:
        self.knobs = knobs
        self.real = real  # run the packaged model for real (outputs, and so output drift)

    def load(self, model_path: Path, manifest: Manifest, options: BackendOptions) -> Any:
        if manifest.version in self.knobs.failing:
            raise SwapError(manifest.name, manifest.version, "simulated load failure")
        if self.real:
            from edge_runtime.backends import get_backend

            return get_backend(manifest.format).load(model_path, manifest, options)
        return _SimModel(manifest)


class SimDevice:
    def __init__(self, index: int, cfg: SimConfig, root: Path, rng: random.Random, *,
                 drifted: bool | None = None) -> None:
        self.id = f"sim-{index:05d}"
        self.cfg = cfg
        self.rng = rng
        # None: drawn per device (a device added later); the Simulator picks an exact share
        self.drifted = rng.random() < cfg.knobs.drift_fraction if drifted is None else drifted
        self.offline = rng.random() < cfg.offline_fraction
        backend = SimBackend(cfg.knobs, real=cfg.real_models)
        settings = ServeSettings(store=root / self.id, trusted_keys=cfg.trusted_keys,
                                 telemetry_interval_s=cfg.telemetry_interval_s)
        self.runtime = Runtime(settings=settings, backends={"onnx": backend, "tflite": backend})
        group = cfg.groups[index % len(cfg.groups)]
        self.agent = DeviceAgent(
            self.runtime, lambda **kw: MqttLink(cfg.mqtt, **kw),
            AgentSettings(self.id, fleet=cfg.fleet, tags=cfg.tags, group=group,
                          profile="sim", heartbeat_s=cfg.heartbeat_s,
                          fleet_keys=cfg.fleet_keys or cfg.trusted_keys,
                          allow_unsigned_desired=cfg.allow_unsigned_desired))
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        if self.offline:
            self._tasks.append(asyncio.ensure_future(self._late_start()))
        else:
            await self.agent.start()
        self._tasks.append(asyncio.ensure_future(self._traffic()))
        self._tasks.append(asyncio.ensure_future(self._flush()))

    async def _late_start(self) -> None:
        await asyncio.sleep(self.cfg.offline_for_s)
        self.offline = False
        await self.agent.start()

    async def _traffic(self) -> None:
        period = 1.0 / self.cfg.rps if self.cfg.rps > 0 else None
        np_rng = np.random.default_rng(self.rng.randrange(2**31))
        while period is not None:
            await asyncio.sleep(period * (0.5 + self.rng.random()))
            registry = self.runtime.registry
            for active in registry.models():
                # a request-level A/B split routes each request by its unit id
                unit = f"{self.id}-{self.rng.getrandbits(48):x}"
                self._request(registry.get(active.name, unit=unit), np_rng)

    def _request(self, served: Any, np_rng: np.random.Generator) -> None:
        k, m = self.cfg.knobs, served.installed.manifest
        inputs = {}
        shift = k.drift_sd if self.drifted else 0.0
        sampler = sampler_for(str(served.installed.path)) if len(m.inputs) == 1 else None
        for spec in m.inputs:
            shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
            if sampler is not None:  # like the reference data (drifted: shifted by shift sd)
                x = sampler.sample(np_rng, shift).reshape(shape)
            else:
                x = np_rng.standard_normal(shape) + shift
            inputs[spec.name] = x.astype(spec.dtype if spec.dtype != "string" else "float32")
        tel = self.runtime.telemetry
        if self.rng.random() < k.error_rates.get(m.version, 0.0):
            tel.error(m.name, m.version, "inference")
            return
        outputs = served.predict(inputs)
        latency = (k.base_latency_ms * (0.8 + 0.4 * self.rng.random())
                   + k.extra_latency_ms.get(m.version, 0.0)) / 1000.0
        # the instant fake's outputs are not a model's: keep them out of the output drift
        tel.observe(served.installed, latency, 1, inputs,
                    outputs if self.cfg.real_models else {})

    async def _flush(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.telemetry_interval_s * (0.9 + 0.2 * self.rng.random()))
            self.runtime.flush()
            self.agent.wake_outbox()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if not self.offline:
            await self.agent.stop()
        self.runtime.close()


class Simulator:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        base = cfg.workdir or Path(tempfile.mkdtemp(prefix="edge-sim-", dir=_fast_tmp()))
        rng = random.Random(cfg.seed)
        drifted = drifted_indices(cfg.devices, cfg.knobs.drift_fraction, cfg.seed)
        self.devices = [SimDevice(i, cfg, base, random.Random(rng.random()),
                                  drifted=i in drifted) for i in range(cfg.devices)]

    def drifted(self) -> list[str]:
        """Ids of the devices whose inputs are shifted (drift_sd reference sds)."""
        return [d.id for d in self.devices if d.drifted]

    async def start(self) -> None:
        for i in range(0, len(self.devices), 50):  # connect in waves, not all at once
            await asyncio.gather(*(d.start() for d in self.devices[i:i + 50]))
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await asyncio.gather(*(d.stop() for d in self.devices), return_exceptions=True)

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.devices:
            for ref in d.runtime.store.actives():
                key = f"{ref.name}={ref.version}"
                counts[key] = counts.get(key, 0) + 1
        return counts


def drifted_indices(devices: int, fraction: float, seed: int) -> frozenset[int]:
    """Exactly round(fraction x devices) devices, chosen by the seed: the same ones every run,
    so a restarted simulator drifts the same devices."""
    k = min(devices, max(0, round(fraction * devices)))
    return frozenset(random.Random(f"drift-{seed}").sample(range(devices), k))


def _fast_tmp() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None
