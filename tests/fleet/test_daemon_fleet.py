"""The real daemon (`edge-runtime serve --fleet-url ...` in a subprocess) joins the fleet, takes
deployments from an in-process manager and serves each new version over HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from fleet.deploy import deploy
from fleet.inventory import Target
from tests.broker import Broker
from tests.conftest import Keys
from tests.fleet.aclbroker import AclBroker, login, password
from tests.fleet.harness import FleetHarness
from tests.integration.conftest import DaemonFactory

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]

PROVISION = Path(__file__).resolve().parents[2] / "devices" / "systemd" / "provision.sh"


def _infer(url: str) -> tuple[str, list[float]]:
    from tests.integration.conftest import request

    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                        "data": [0.5, -1.0, 2.0, 0.25]}]}
    status, raw = request(url + "/v2/models/digits/infer", json.dumps(body).encode(),
                          {"Content-Type": "application/json"})
    assert status == 200, raw
    doc = json.loads(raw)
    return doc["model_version"], doc["outputs"][0]["data"]


def test_daemon_joins_fleet_and_serves_deployments(tmp_path: Path, broker: Broker, keys: Keys,
                                                   fleet_pkgs: dict[str, Path],
                                                   daemons: DaemonFactory) -> None:
    daemon = daemons(tmp_path / "store", "--fleet-url", broker.url, "--device-id", "dev1",
                     "--group", "lab", "--tags", "cam,door", "--trusted-keys", str(keys.public),
                     "--telemetry-interval", "0.5", "--log-level", "warning")

    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"], fleet_pkgs["2"])
            await asyncio.get_running_loop().run_in_executor(None, daemon.start)
            await h.until(lambda: any(d.id == "dev1" and d.reported is not None
                                      for d in h.f.inventory.devices()), what="dev1 joins")
            dev = h.f.inventory.get("dev1")
            assert (dev.group, dev.tags, dev.status) == ("lab", ("cam", "door"), "online")
            served = {}
            for version in ("1", "2"):
                did, devices = deploy(h.f, "digits", version, Target.parse("tag:door"),
                                      probation={"seconds": 0.5, "min_requests": 0})
                assert devices == ["dev1"]
                await h.until(lambda d=did: h.committed(d) == {"dev1"}, timeout=30,  # type: ignore[misc]
                              what=f"dev1 commits v{version}")
                served[version] = await asyncio.get_running_loop().run_in_executor(
                    None, _infer, daemon.url)
                assert served[version][0] == version
            assert served["1"][1] != served["2"][1]  # really another model
            reported = h.f.inventory.get("dev1").reported
            assert reported is not None
            assert reported["models"]["digits"]["active"] == "2"
            assert reported["models"]["digits"]["previous"] == "1"
            await h.until(lambda: bool(h.f.db.query(
                "SELECT 1 FROM metrics WHERE device = 'dev1' AND version = '2'")),
                what="the daemon's telemetry for v2 reaches the manager")
            await asyncio.get_running_loop().run_in_executor(None, daemon.stop)
            await h.until(lambda: h.f.inventory.get("dev1").status == "offline",
                          what="a clean stop says offline")

    asyncio.run(main())


def test_provisioned_daemon_through_the_acl_broker(tmp_path: Path, keys: Keys,
                                                   fleet_pkgs: dict[str, Path],
                                                   daemons: DaemonFactory) -> None:
    """The whole device setup of devices/: provision.sh writes the config (with the device's
    broker login), the broker runs the shipped ACL, the daemon starts from the config alone."""
    broker = AclBroker(tmp_path, users=("fleet-manager", "pi-07")).start()
    try:
        config = tmp_path / "config.toml"
        res = subprocess.run(
            ["sh", str(PROVISION), "--device-id", "pi-07", "--broker",
             f"127.0.0.1:{broker.port}", "--password", password("pi-07"), "--group", "lab",
             "--keys", str(keys.public), "--store", str(tmp_path / "store"), "--config",
             str(config), "--owner-group", "no-such-group-here"],
            capture_output=True, text=True, timeout=30, check=True)
        assert "mosquitto_passwd" in res.stdout
        daemon = daemons(tmp_path / "store", "--config", str(config), "--log-level", "warning")

        async def main() -> None:
            async with FleetHarness(broker, tmp_path, keys.public) as h:
                h.manager_mqtt = login(broker, "fleet-manager")
                await h.start_manager()
                h.publish(fleet_pkgs["1"])
                await asyncio.get_running_loop().run_in_executor(None, daemon.start)
                await h.until(lambda: any(d.id == "pi-07" and d.reported is not None
                                          for d in h.f.inventory.devices()),
                              what="pi-07 joins")
                did, _ = deploy(h.f, "digits", "1", Target.parse("group:lab"),
                                probation={"seconds": 0.3, "min_requests": 0})
                await h.until(lambda: h.committed(did) == {"pi-07"}, timeout=30,
                              what="pi-07 commits v1")
                version, _out = await asyncio.get_running_loop().run_in_executor(
                    None, _infer, daemon.url)
                assert version == "1"

        asyncio.run(main())
    finally:
        broker.stop()
