"""The manager's ingest path (`fleet.ingest`) through the real `FleetManager`, an in-memory broker
and a real database: enrollment, nonsense that must not be stored, one failing message in a
batch, drop counters saved for `edgectl manager status`, and a broken task restarted."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_runtime.monitor import wire
from edge_runtime.protocol import messages as m
from edge_runtime.protocol.link import Message
from edge_runtime.protocol.memory import InMemoryBroker, InMemoryLink
from edge_runtime.protocol.topics import TopicScheme
from fleet import health
from fleet.core import Fleet
from fleet.deploy import deploy
from fleet.inventory import Target
from fleet.manager import FleetManager
from fleet.settings import Enrollment, ManagerSettings
from tests.conftest import Keys, run_cli
from tests.fleet.test_malformed import captured

pytestmark = pytest.mark.timeout(60)
T = TopicScheme("default")


def _fleet(tmp_path: Path, keys: Keys, enrollment: Enrollment = Enrollment.KNOWN) -> Fleet:
    return Fleet(ManagerSettings(db=tmp_path / "fleet.db", artifacts=tmp_path / "art",
                                 trusted_keys=(keys.public,), enrollment=enrollment,
                                 tick_s=0.05, health_interval_s=0.05))


def _manager(fleet: Fleet, broker: InMemoryBroker | None = None) -> FleetManager:
    return FleetManager(fleet, lambda **kw: InMemoryLink(broker or InMemoryBroker(), **kw))


def _telemetry(device: str, kind: str, payload: dict[str, Any], *, msg_id: str,
               version: str = "1") -> Message:
    return Message(T.telemetry(device), m.encode(m.Telemetry(
        msg_id, kind, "digits", version, 1.7e9, 1.7e9 + 1, payload)))


def _hello(device: str, session: int = 1) -> list[Message]:
    return [Message(T.status(device), m.encode(m.Status("online", session))),
            Message(T.reported(device), m.encode(m.Reported(0, session, {}, ("cam",), "lab")))]


def _rows(fleet: Fleet, table: str) -> int:
    return int(fleet.db.query(f"SELECT COUNT(*) FROM {table}")[0][0])


def test_known_enrollment_takes_only_registered_devices(tmp_path: Path, keys: Keys,
                                                        fleet_pkgs: dict[str, Path]) -> None:
    fleet = _fleet(tmp_path, keys)
    manager = _manager(fleet)
    with captured("fleet.manager") as logs:
        manager.ingest([*_hello("stranger"),
                        Message(T.heartbeat("stranger"), m.encode(m.Heartbeat(1, 3.0)))])
    assert fleet.inventory.devices() == []
    assert manager.ingestor.counts.drops == {("status", "unknown_device"): 1,
                                             ("reported", "unknown_device"): 1,
                                             ("heartbeat", "unknown_device"): 1}
    assert len(logs) == 3 and all("stranger" in r.getMessage() and "devices add" in
                                  r.getMessage() for r in logs)

    assert fleet.inventory.register("pi-07", group="kitchen", tags=("door",))
    assert not fleet.inventory.register("pi-07")
    registered = fleet.inventory.get("pi-07")
    assert (registered.status, registered.last_seen, registered.group) == ("unknown", 0,
                                                                            "kitchen")
    manager.ingest(_hello("pi-07"))
    dev = fleet.inventory.get("pi-07")
    assert (dev.status, dev.group, dev.tags) == ("online", "lab", ("cam",))
    assert dev.first_seen > 0 and dev.last_seen >= dev.first_seen
    assert manager.ingestor.new_devices == {"pi-07"}
    fleet.registry.publish(fleet_pkgs["1"])  # a deploy to all reaches enrolled devices only
    assert deploy(fleet, "digits", "1", Target.parse("all"))[1] == ["pi-07"]


def test_open_enrollment_takes_any_device(tmp_path: Path, keys: Keys) -> None:
    fleet = _fleet(tmp_path, keys, Enrollment.OPEN)
    manager = _manager(fleet)
    manager.ingest(_hello("lab-1") + _hello("lab-2"))
    assert [d.id for d in fleet.inventory.devices()] == ["lab-1", "lab-2"]
    assert manager.stats["dropped"] == 0


def test_nonsense_is_not_stored(tmp_path: Path, keys: Keys, fleet_pkgs: dict[str, Path]) -> None:
    fleet = _fleet(tmp_path, keys)
    fleet.registry.publish(fleet_pkgs["1"])
    fleet.inventory.register("dev")
    manager = _manager(fleet)
    layout, _ = fleet.drift.layout("digits", "1")
    good_drift = base64.b64encode(wire.encode(layout, layout.zeros())).decode()
    alien = base64.b64encode(b"EDW1" + b"\x78\x9c" + b"\x00" * 40).decode()
    latency = {"relative_accuracy": 0.01, "min_value": 1e-6, "bins": {"10": 3}, "zero": 0,
               "sum": 0.01, "min": 0.003, "max": 0.004}
    manager.ingest([
        _telemetry("dev", "feedback", {"n": -5, "correct": 100}, msg_id="f-bad"),
        _telemetry("dev", "feedback", {"n": 5, "correct": 100}, msg_id="f-bad2"),
        _telemetry("dev", "feedback", {"n": 10, "correct": 9}, msg_id="f-ok"),
        _telemetry("dev", "feedback", {"n": 10, "correct": 9}, msg_id="f-nover", version="77"),
        _telemetry("dev", "drift", {"encoding": "EDW1", "data": alien}, msg_id="d-bad"),
        _telemetry("dev", "drift", {"encoding": "EDW1", "data": good_drift}, msg_id="d-ok"),
        _telemetry("dev", "metrics", {"requests": 3, "errors": {}, "latency": latency,
                                      "junk": "x" * 10000}, msg_id="m-ok"),
        _telemetry("dev", "metrics", {"requests": 3, "errors": {}, "latency": latency},
                   msg_id="m-ok"),  # a duplicate
        Message(T.events("dev"), m.encode(m.Event(1, "digits", "1", "committed", "d-1"))[:-1]
                + b', "msg_id": ["x"]}'),
    ])
    c = manager.ingestor.counts
    assert c.drops == {("telemetry", "out_of_range"): 2, ("telemetry", "unknown_version"): 1,
                       ("telemetry", "undecodable"): 1, ("events", "wrong_type"): 1}
    assert c.duplicates == 1 and manager.stats["messages"] == 9
    assert fleet.db.query("SELECT n, correct FROM feedback")[0][:] == (10, 9)
    assert _rows(fleet, "feedback") == 1 and _rows(fleet, "drift") == 1
    assert _rows(fleet, "events") == 0
    stored = json.loads(fleet.db.query("SELECT latency FROM metrics")[0][0])
    assert stored == latency  # normalised: what the schema defines, nothing else
    assert _rows(fleet, "metrics") == 1


def test_a_message_that_raises_rolls_back_only_itself(tmp_path: Path, keys: Keys,
                                                      fleet_pkgs: dict[str, Path]) -> None:
    """The package of version 2 went missing from the artifact store: reading its drift layout
    raises (an OSError, nothing the decoders know). That one message is dropped with its
    traceback; the rest of the batch is stored."""
    fleet = _fleet(tmp_path, keys)
    for v in ("1", "2"):
        fleet.registry.publish(fleet_pkgs[v])
    fleet.registry.get("digits", "2").path.unlink()
    fleet.inventory.register("dev")
    manager = _manager(fleet)
    data = base64.b64encode(b"EDW1").decode()
    with captured("fleet.manager") as logs:
        manager.ingest([
            _telemetry("dev", "feedback", {"n": 4, "correct": 4}, msg_id="before"),
            _telemetry("dev", "drift", {"encoding": "EDW1", "data": data}, msg_id="x",
                       version="2"),
            _telemetry("dev", "feedback", {"n": 2, "correct": 1}, msg_id="after"),
            *_hello("dev"),
        ])
    assert manager.ingestor.counts.drops == {("telemetry", "error"): 1}
    assert [r.exc_info is not None for r in logs] == [True]
    assert _rows(fleet, "feedback") == 2 and fleet.inventory.get("dev").status == "online"
    assert fleet.db.query("SELECT 1 FROM seen WHERE msg_id = 'x'") == []


def test_counters_survive_a_restart_and_show_in_edgectl(tmp_path: Path, keys: Keys) -> None:
    fleet = _fleet(tmp_path, keys)
    manager = _manager(fleet)
    manager.ingest([Message(T.status("ghost"), b"{"), Message(T.status("ghost"), b"[]"),
                    Message(T.root + "/bad id/status", b"{}")])
    manager.save_health()
    again = _manager(_fleet(tmp_path, keys))  # the next process on the same database
    again.ingest([Message(T.heartbeat("ghost"), b"\xff")])
    again.save_health()
    doc = health.load(again.fleet.db)
    assert doc is not None and doc["counts"]["dropped"] == 4
    assert doc["counts"]["drops"] == {"status": {"not_json": 1, "not_object": 1},
                                      "topic": {"bad_topic": 1}, "heartbeat": {"not_json": 1}}
    common = ["--db", str(tmp_path / "fleet.db"), "--artifacts", str(tmp_path / "art")]
    res = run_cli("fleet.cli", "manager", "status", *common)
    assert res.returncode == 0, res.stderr
    assert "enrollment known" in res.stdout and "4 dropped" in res.stdout
    assert "not_object" in res.stdout and "running" in res.stdout
    shown = json.loads(run_cli("fleet.cli", "manager", "status", "--json", *common).stdout)
    assert shown["counts"]["drops"]["topic"] == {"bad_topic": 1}
    empty = run_cli("fleet.cli", "manager", "status", "--db", str(tmp_path / "new.db"),
                    "--artifacts", str(tmp_path / "art"))
    assert empty.returncode == 0 and "no manager has run" in empty.stdout
    bad = run_cli("fleet.cli", "devices", "add", "bad/id", *common)
    assert bad.returncode == 1 and bad.stderr.startswith("error:")


def test_a_broken_tick_is_restarted_and_ingest_goes_on(tmp_path: Path, keys: Keys,
                                                        fleet_pkgs: dict[str, Path]) -> None:
    """A rollout row this version cannot read (written by a newer CLI, say) makes every tick
    raise: the tick task is logged, counted and restarted with backoff; ingest keeps going;
    once the row is gone, the tick publishes again."""
    fleet = _fleet(tmp_path, keys)
    fleet.registry.publish(fleet_pkgs["1"])
    fleet.inventory.register("dev")

    async def main() -> None:
        broker = InMemoryBroker()
        manager = _manager(fleet, broker)
        device = InMemoryLink(broker, client_id="default.dev")
        await device.subscribe(T.desired("dev"))
        await device.start()
        with fleet.db.transaction() as cur:
            cur.execute("INSERT INTO rollouts (id, name, version, target, config, state, step, "
                        "step_started, created_at, updated_at) VALUES ('ro-x', 'digits', '1', "
                        "'all', '{}', 'warping', 0, 0, 0, 0)")
        with captured("fleet.manager") as logs:
            await manager.start()
            await _until(lambda: manager.supervisor.health["tick"].restarts >= 2)
            for msg in _hello("dev"):
                await device.publish(msg.topic, msg.payload)
            await _until(lambda: fleet.inventory.get("dev").status == "online")
            deploy(fleet, "digits", "1", Target.parse("device:dev"))
            with fleet.db.transaction() as cur:
                cur.execute("DELETE FROM rollouts WHERE id = 'ro-x'")
            got = await asyncio.wait_for(device.next_message(), 10)
        assert got.topic == T.desired("dev")
        failures = [r for r in logs if r.getMessage().startswith("task tick failed")]
        assert failures and all(r.exc_info is not None for r in failures)
        await _until(lambda: (health.load(fleet.db) or {}).get("tasks", {}).get(
            "tick", {}).get("restarts", 0) >= 2)
        doc = health.load(fleet.db)
        assert doc is not None and "warping" in doc["tasks"]["tick"]["last_error"]
        assert doc["tasks"]["ingest"]["restarts"] == 0 and doc["tasks"]["ingest"]["running"]
        await manager.stop()
        await device.stop()

    asyncio.run(main())


async def _until(cond: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_stored_integers_fit_sqlite(tmp_path: Path, keys: Keys) -> None:
    """The issue's first case: a session of 2**64-1 used to make sqlite3 raise inside the batch
    and kill the ingest task. Now it is a counted drop, and the database holds no such value."""
    fleet = _fleet(tmp_path, keys, Enrollment.OPEN)
    manager = _manager(fleet)
    huge = orjson.dumps({"schema_version": 1, "state": "online", "session": 2**64 - 1, "ts": 1})
    manager.ingest([Message(T.status("dev"), huge), *_hello("dev")])
    assert manager.ingestor.counts.drops == {("status", "out_of_range"): 1}
    with pytest.raises(OverflowError):  # what sqlite3 does with it
        sqlite3.connect(":memory:").execute("SELECT ?", (2**64 - 1,))
    assert fleet.inventory.get("dev").session == 1
