"""Poison on every device topic the shipped ACL lets a device write, over a real Mosquitto, into
a real manager process (`edgectl serve`): huge integers, 1e300, NaN as text, lists for scalars,
deep nesting, 1 MB strings, invalid UTF-8 and non-JSON, retained and not. The manager drops and
counts each one, survives a restart that replays the retained ones, and a real device (the
`edge-runtime serve` daemon) still gets a deployment while its `last seen` advances."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.protocol.link import MqttSettings
from edge_runtime.protocol.mqtt import MqttLink
from edge_runtime.protocol.schema import MessageInvalid
from edge_runtime.protocol.topics import TopicScheme
from fleet import health
from fleet.core import Fleet
from fleet.ingest import _DECODERS
from fleet.settings import ManagerSettings
from tests.broker import Broker
from tests.conftest import Keys, run_cli
from tests.edge_runtime.protocol.test_decoders_fuzz import VALID, _doc
from tests.integration.conftest import DaemonFactory

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]
T = TopicScheme("default")
BASES: dict[str, dict[str, Any]] = {
    "status": VALID["status"], "heartbeat": VALID["heartbeat"], "reported": VALID["reported"],
    "events": VALID["event"], "telemetry": {**VALID["feedback"], "version": "1"},
    "artifact/req": VALID["artifact_req"],  # an artifact nobody published: dropped too
}
GENERIC = [b"", b"not json", b"\xff\xfe\x00garbage", b"[" * 100_000 + b"]" * 100_000,
           b'{"schema_version": 1, "session": NaN, "ts": NaN}', b"null", b"[1, 2]"]


def poison(kind: str) -> list[bytes]:
    """Payloads for one topic kind that the manager must drop."""
    base = BASES[kind]
    out = [*GENERIC, _doc(**base)[:-1] + b', "x": "\xff\xfe"}', _doc(**base).replace(
        b"1", b"NaN", 1)]
    for key in base:
        for value in (2**64 - 1, 10**30, 1e300, -1, [base[key]], {"a": [{"b": [[[]]]}]}):
            out.append(_doc(**{**base, key: value}))
    out.append(_doc(**{**base, next(iter(base)): "x" * (1 << 20)}))
    if kind == "artifact/req":
        return [*out, _doc(**base)]

    def rejected(payload: bytes) -> bool:
        try:
            _DECODERS[kind](payload)
        except MessageInvalid:
            return True
        return False

    return [p for p in out if rejected(p)]  # (e.g. an uptime of 1e300 is a valid float)


class Manager:
    """`edgectl serve` in a subprocess."""

    def __init__(self, tmp: Path, common: list[str], broker: Broker, keys: Keys) -> None:
        self.log = tmp / "manager.log"
        self.args = [sys.executable, "-m", "fleet.cli", "serve", "--broker", broker.url,
                     "--tick", "0.2", "--signing-key", str(keys.private), *common]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        size = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(self.args, stdout=fh, stderr=subprocess.STDOUT)
        _wait(lambda: b"enrollment known" in self.log.read_bytes()[size:], "manager start")

    def stop(self) -> None:
        assert self.proc is not None
        size = self.log.stat().st_size
        self.proc.terminate()
        # SIGTERM stops the manager cleanly: counters saved, exit status 0
        assert self.proc.wait(timeout=30) == 0
        assert b"fleet manager stopping" in self.log.read_bytes()[size:]

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")


def _wait(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


async def _publish(broker: Broker, client_id: str, msgs: list[tuple[str, bytes, bool]]) -> None:
    link = MqttLink(MqttSettings.from_url(broker.url), client_id=client_id, clean_start=True)
    await link.start()
    await link.wait_connected(10)
    for topic, payload, retain in msgs:
        await link.publish(topic, payload, retain=retain)
    await link.stop()


def test_poison_then_restart_and_the_fleet_still_deploys(
        tmp_path: Path, broker: Broker, keys: Keys, fleet_pkgs: dict[str, Path],
        daemons: DaemonFactory) -> None:
    common = ["--db", str(tmp_path / "fleet.db"), "--artifacts", str(tmp_path / "art"),
              "--trusted-keys", str(keys.public)]
    assert run_cli("fleet.cli", "models", "publish", fleet_pkgs["1"], *common).returncode == 0
    added = run_cli("fleet.cli", "devices", "add", "dev1", "rogue", "--group", "lab", *common)
    assert "added 2 device(s)" in added.stdout, added.stderr
    fleet = Fleet(ManagerSettings(db=tmp_path / "fleet.db", artifacts=tmp_path / "art"))
    manager = Manager(tmp_path, common, broker, keys)
    manager.start()
    try:
        peak = _poison_and_restart(fleet, manager, broker)
        daemon = daemons(tmp_path / "store", "--config", str(_device_config(tmp_path)),
                         "--fleet-url", broker.url, "--device-id", "dev1", "--trusted-keys",
                         str(keys.public), "--log-level", "warning").start()
        _the_fleet_still_deploys(fleet, common)
        # serving it (it commits after the default 30 s probation)
        assert daemon.get("/v2/models/digits/versions/1/ready")[0] == 200
        _manager_status_shows_the_drops(common)
        metrics, local = daemon.get("/metrics")[1], json.loads(run_cli(
            "edge_runtime.cli", "status", "--store", tmp_path / "store", "--json").stdout)
        for task in ("telemetry-flush", "agent.pump", "agent.heartbeat"):
            assert f'edge_task_running{{task="{task}"}} 1'.encode() in metrics, metrics[-2000:]
        assert local["health"]["tasks"]["telemetry-flush"]["restarts"] == 0
        assert local["health"]["agent"]["drops"] == {}
        assert peak < 400, f"manager peak RSS {peak:.0f} MB"
    finally:
        manager.stop()
        fleet.db.close()


def _counts(fleet: Fleet) -> dict[str, Any]:
    doc = health.load(fleet.db)
    return doc["counts"] if doc else {"dropped": 0, "drops": {}}


def _poison_and_restart(fleet: Fleet, manager: Manager, broker: Broker) -> float:
    """Every poison message dropped and counted, and again after a restart for the retained
    ones; the manager's peak RSS (MB) while taking them."""
    by_kind = {kind: poison(kind) for kind in BASES}
    msgs = [(T.device("rogue", kind), p, False) for kind, ps in by_kind.items() for p in ps]
    retained = [(T.device("rogue", kind), ps[-1], True) for kind, ps in by_kind.items()]
    stranger = [(T.status("stranger"), _doc(**VALID["status"]), True)]  # valid, not enrolled
    expected = len(msgs) + len(retained) + len(stranger)
    asyncio.run(_publish(broker, "test-rogue", msgs + retained + stranger))
    _wait(lambda: _counts(fleet)["dropped"] >= expected, "every poison message dropped")
    assert _counts(fleet)["dropped"] == expected
    assert set(_counts(fleet)["drops"]) == set(BASES)
    peak = manager.peak_rss_mb()
    manager.stop()  # a restart replays every retained message
    manager.start()
    again = expected + len(retained) + len(stranger)
    _wait(lambda: _counts(fleet)["dropped"] >= again, "the retained poison dropped again")
    assert "Traceback" not in manager.log.read_text()
    return peak


def _device_config(tmp_path: Path) -> Path:
    config = tmp_path / "device.toml"
    config.write_text("[serve]\nheartbeat_s = 0.3\ntelemetry_interval_s = 0.5\n")
    return config


def _the_fleet_still_deploys(fleet: Fleet, common: list[str]) -> None:
    _wait(lambda: fleet.inventory.get("dev1").reported is not None, "dev1 reports")
    seen = fleet.inventory.get("dev1").last_seen
    dep = json.loads(run_cli("fleet.cli", "deploy", "digits", "1", "--to", "all", "--json",
                             *common).stdout)
    assert dep["devices"] == ["dev1", "rogue"]  # the stranger never joined the inventory
    _wait(lambda: fleet.inventory.get("dev1").active("digits") == "1", "dev1 runs digits 1")
    _wait(lambda: fleet.inventory.get("dev1").last_seen > seen + 0.5, "last seen advances")
    assert [d.id for d in fleet.inventory.devices()] == ["dev1", "rogue"]


def _manager_status_shows_the_drops(common: list[str]) -> None:
    doc = json.loads(run_cli("fleet.cli", "manager", "status", "--json", *common).stdout)
    assert doc["running"] and doc["enrollment"] == "known"
    assert all(t["running"] and t["restarts"] == 0 for t in doc["tasks"].values()), doc["tasks"]
    drops = doc["counts"]["drops"]
    assert drops["status"]["unknown_device"] >= 2
    assert drops["artifact/req"]["unknown_version"] >= 1
    assert {"not_json", "out_of_range", "wrong_type", "too_long"} <= set(drops["status"])
    assert "unknown_device" not in drops.get("heartbeat", {})  # dev1 was enrolled
    text = run_cli("fleet.cli", "manager", "status", *common).stdout
    assert "unknown_device" in text and "running" in text
