"""`edgectl sim`: run N simulated devices against a broker until interrupted (or --duration)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import click

from edge_runtime.protocol.link import MqttSettings
from fleet.sim import SimConfig, SimKnobs, Simulator


def _versions(text: str) -> dict[str, float]:
    """'3=0.2,4=0.5' -> {'3': 0.2, '4': 0.5}"""
    out = {}
    for part in filter(None, text.split(",")):
        version, _, value = part.partition("=")
        out[version] = float(value)
    return out


@click.command("sim")
@click.option("--devices", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True)
@click.option("--fleet", "fleet_name", default="default", show_default=True)
@click.option("--trusted-keys", multiple=True, type=click.Path(path_type=Path))
@click.option("--fleet-keys", multiple=True, type=click.Path(path_type=Path),
              help="Keys desired states must be signed with (default: --trusted-keys).")
@click.option("--allow-unsigned-desired", is_flag=True,
              help="Development only: accept unsigned desired states.")
@click.option("--groups", default="sim", show_default=True, help="Comma-separated groups.")
@click.option("--rps", type=float, default=5.0, show_default=True, help="Requests/s per device.")
@click.option("--telemetry-interval", type=float, default=1.0, show_default=True)
@click.option("--offline-fraction", type=float, default=0.0, show_default=True)
@click.option("--offline-for", type=float, default=30.0, show_default=True)
@click.option("--failing", default="", help="Versions that fail to load, comma-separated.")
@click.option("--error-rates", default="", help="VERSION=RATE,... simulated error rates.")
@click.option("--slow", default="", help="VERSION=MS,... extra latency.")
@click.option("--drift-fraction", type=click.FloatRange(0.0, 1.0), default=0.0,
              show_default=True,
              help="Share of devices whose inputs are shifted (exactly this share, listed).")
@click.option("--drift-sd", type=float, default=1.0, show_default=True,
              help="How far drifted inputs are shifted, in reference standard deviations.")
@click.option("--real-models", is_flag=True,
              help="Run the packaged models (onnxruntime/TFLite), so outputs are counted for "
                   "drift as on a device; default: an instant fake with no model outputs.")
@click.option("--duration", type=float, default=0.0, help="Seconds to run (0 = forever).")
@click.option("--workdir", type=click.Path(path_type=Path), default=None)
def sim_cmd(devices: int, broker: str, fleet_name: str, trusted_keys: tuple[Path, ...],
            fleet_keys: tuple[Path, ...], allow_unsigned_desired: bool, groups: str, rps: float,
            telemetry_interval: float, offline_fraction: float, offline_for: float,
            failing: str, error_rates: str, slow: str, drift_fraction: float, drift_sd: float,
            real_models: bool, duration: float, workdir: Path | None) -> None:
    """Simulate a fleet: real MQTT clients running the real device agent."""
    logging.basicConfig(level="WARNING")
    knobs = SimKnobs(failing=frozenset(filter(None, failing.split(","))),
                     error_rates=_versions(error_rates), extra_latency_ms=_versions(slow),
                     drift_fraction=drift_fraction, drift_sd=drift_sd)
    cfg = SimConfig(devices, MqttSettings.from_url(broker), fleet=fleet_name,
                    trusted_keys=trusted_keys, fleet_keys=fleet_keys,
                    allow_unsigned_desired=allow_unsigned_desired, workdir=workdir,
                    groups=tuple(groups.split(",")), rps=rps,
                    telemetry_interval_s=telemetry_interval, offline_fraction=offline_fraction,
                    offline_for_s=offline_for, knobs=knobs, real_models=real_models)

    async def main() -> None:
        sim = Simulator(cfg)
        await sim.start()
        click.echo(f"{devices} simulated devices on {cfg.mqtt.url}", err=True)
        drifted = sim.drifted()
        if drifted:
            click.echo(f"inputs shifted by {drift_sd:g} sd on {len(drifted)} of {devices} "
                       f"devices: {', '.join(drifted)}", err=True)
        try:
            await asyncio.sleep(duration if duration > 0 else 1e9)
        finally:
            click.echo(json.dumps(sim.summary()))
            await sim.stop()

    asyncio.run(main())
