"""A separate fleet key, distributed by provision.sh: the real daemon started from the written
config trusts only that key for desired states (not the package key), refuses a manager that
signs with another key (counted in `status`) and takes deployments once the manager signs with
the fleet key."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.settings import ServeSettings
from edge_runtime.signing import generate_keypair
from fleet.deploy import deploy
from fleet.inventory import Target
from tests.broker import Broker
from tests.conftest import Keys
from tests.fleet.harness import FleetHarness
from tests.integration.conftest import DaemonFactory, DaemonProc

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]
PROVISION = Path(__file__).resolve().parents[2] / "devices" / "systemd" / "provision.sh"


def _provision(tmp_path: Path, keys: Keys, broker: Broker, *extra: str) -> Path:
    config = tmp_path / "etc" / "config.toml"
    subprocess.run(["sh", str(PROVISION), "--device-id", "pi-09", "--broker",
                    f"127.0.0.1:{broker.port}", "--keys", str(keys.public), "--store",
                    str(tmp_path / "store"), "--config", str(config), "--owner-group",
                    "no-such-group-here", *extra],
                   capture_output=True, text=True, timeout=30, check=True)
    return config


def _drops(daemon: DaemonProc) -> dict[str, int]:
    doc: dict[str, Any] = daemon.admin().call("GET", "/admin/status")
    return doc["health"]["agent"]["drops"]  # type: ignore[no-any-return]


def test_provision_without_fleet_keys_trusts_the_package_keys(tmp_path: Path, keys: Keys,
                                                             broker: Broker) -> None:
    s = ServeSettings.load(config=_provision(tmp_path, keys, broker), env={})
    assert s.fleet_keys == () and s.desired_keys == (keys.public,)


def test_daemon_trusts_only_the_provisioned_fleet_key(tmp_path: Path, broker: Broker,
                                                      keys: Keys, fleet_pkgs: dict[str, Path],
                                                      daemons: DaemonFactory) -> None:
    fleet_priv, fleet_pub = generate_keypair(tmp_path / "fleet-key", "fleet")
    config = _provision(tmp_path, keys, broker, "--fleet-keys", str(fleet_pub))
    s = ServeSettings.load(config=config, env={})
    assert s.fleet_keys == (fleet_pub,) and s.desired_keys == (fleet_pub,)
    daemon = daemons(tmp_path / "store", "--config", str(config), "--log-level", "warning")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # first a manager that signs with the package key: not a fleet key of this device
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"])
            await loop.run_in_executor(None, daemon.start)
            await h.until(lambda: any(d.id == "pi-09" and d.reported is not None
                                      for d in h.f.inventory.devices()), what="pi-09 joins")
            did, _ = deploy(h.f, "digits", "1", Target.parse("all"),
                            probation={"seconds": 0.2, "min_requests": 0})
            await h.until(lambda: _drops(daemon).get("desired.untrusted_key", 0) >= 1,
                          what="the package-key signature refused")
            assert not h.committed(did)
            await h.stop_manager()
            # the same fleet database, now signing with the fleet key: the device takes it
            h.signing_key = fleet_priv
            await h.start_manager()
            await h.until(lambda: h.committed(did) == {"pi-09"}, timeout=30,
                          what="pi-09 commits v1 signed with the fleet key")

    asyncio.run(main())
