"""Malformed payloads on every topic, from a client that can write anywhere: the manager and the
device log and drop each one, count it, and keep working (a deploy afterwards succeeds)."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_runtime.protocol.mqtt import MqttLink
from edge_runtime.protocol.topics import TopicScheme
from fleet.deploy import deploy
from fleet.inventory import Target
from tests.broker import Broker
from tests.conftest import Keys
from tests.fleet.harness import FLEET, FleetHarness

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

SHA = "ab" * 32


def _doc(**kw: Any) -> bytes:
    return orjson.dumps({"schema_version": 1, **kw})


def _chunk(header: bytes, data: bytes = b"x") -> bytes:
    return struct.pack(">I", len(header)) + header + data


GOOD_LATENCY = {"relative_accuracy": 0.01, "min_value": 1e-6, "bins": {"10": 3}, "zero": 0,
                "sum": 0.01, "min": 0.003, "max": 0.004}
METRICS = {"msg_id": "m-1", "kind": "metrics", "model": "digits", "version": "1", "start": 0.0,
           "end": 1.0}

# Sent to the manager (device -> manager kinds).
TO_MANAGER: dict[str, list[bytes]] = {
    "status": [b"", b"not json", b"[1, 2]", orjson.dumps({"state": "online", "session": 1}),
               _doc(state="sleeping", session=1), _doc(state="online", session="1")],
    "heartbeat": [b"\xff\xfe", _doc(session=1), _doc(session=True, uptime_s=1.0)],
    "reported": [b"{", _doc(generation=1, session=1, models=[]),
                 _doc(generation=1, session=1, models={"digits": "v1"}),
                 _doc(generation=1, session=1, models={"digits": {"state": 3}})],
    "events": [b"null", _doc(seq="1", name="digits", state="committed"),
               _doc(seq=1, name="digits")],
    "telemetry": [
        b"[]", _doc(msg_id=1, kind="metrics"),
        _doc(**METRICS, payload={"requests": "many", "errors": {}, "latency": GOOD_LATENCY}),
        _doc(**{**METRICS, "msg_id": "m-2"}, payload={"requests": 5, "errors": [1],
                                                      "latency": GOOD_LATENCY}),
        _doc(**{**METRICS, "msg_id": "m-3"}, payload={"requests": 5, "errors": {"x": "y"},
                                                      "latency": GOOD_LATENCY}),
        _doc(**{**METRICS, "msg_id": "m-4"}, payload={"requests": 5, "errors": {},
                                                      "latency": {"bins": "garbage"}}),
        _doc(**{**METRICS, "msg_id": "m-5"}, payload={"errors": {}, "latency": GOOD_LATENCY}),
    ],
    "artifact/req": [b"", _doc(sha256=SHA, chunks=[]), _doc(sha256=SHA, chunks=[-1]),
                     _doc(sha256=SHA, chunks=["0"]), _doc(chunks=[0])],
}
# Sent to a device (manager -> device kinds).
TO_DEVICE: dict[str, list[bytes]] = {
    "desired": [b"", b"garbage", _doc(generation="7", models={}),
                _doc(generation=99, models={"digits": {"version": "9"}}),
                _doc(generation=99, models={"digits": {"version": "9", "deployment": "d",
                                                       "artifact": {"sha256": "x"}}}),
                _doc(generation=99, models={"digits": {
                    "version": "9", "deployment": "d", "artifact": {
                        "sha256": SHA, "size": 10, "chunk_size": 4, "chunks": [SHA]}}})],
    "artifact/chunk": [b"", b"\x00\x00", _chunk(b"nope"), b"\x00\x00\x10\x00{}",
                       _chunk(_doc(sha256=SHA, index=0, size=99)),
                       _chunk(_doc(sha256=SHA, index="0", size=1))],
}


@contextmanager
def captured(*names: str) -> Iterator[list[logging.LogRecord]]:
    """Warnings logged by these loggers (independent of pytest's logging plugin)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield records
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


def test_malformed_payloads_on_every_topic(tmp_path: Path, broker: Broker, keys: Keys,
                                           fleet_pkgs: dict[str, Path]) -> None:
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            manager = await h.start_manager()
            h.publish(fleet_pkgs["1"], fleet_pkgs["2"])
            sim = await h.start_sim(3)
            await h.wait_inventory(3)
            await h.seed("digits", "1")
            target = sim.devices[0].id
            topics = TopicScheme(FLEET)
            intruder = MqttLink(h.mqtt, client_id="test-intruder", clean_start=True)
            await intruder.start()
            await intruder.wait_connected(10)
            dropped_before = manager.stats["dropped"]
            n_manager = sum(map(len, TO_MANAGER.values())) + 1
            n_device = sum(map(len, TO_DEVICE.values()))
            with captured("fleet.manager", "edge_runtime.agent") as logs:
                for kind, payloads in TO_MANAGER.items():
                    for payload in payloads:
                        await intruder.publish(topics.device(target, kind), payload)
                # a topic of the fleet whose device id is not one
                await intruder.publish(f"{topics.root}/bad+id/status".replace("+", "_-!"),
                                       b"{}")
                for kind, payloads in TO_DEVICE.items():
                    for payload in payloads:
                        await intruder.publish(topics.device(target, kind), payload)
                await h.until(lambda: manager.stats["dropped"] - dropped_before >= n_manager,
                              what=lambda: f"{n_manager} drops (have "
                                           f"{manager.stats['dropped'] - dropped_before})")
                await h.until(lambda: sum(target in r.getMessage() for r in logs
                                          if r.name == "edge_runtime.agent") >= n_device,
                              what="the device logs every drop")
            await asyncio.sleep(0.3)
            assert manager.stats["dropped"] - dropped_before == n_manager
            device_logs = [r.getMessage() for r in logs if r.name == "edge_runtime.agent"]
            assert len(device_logs) == n_device, device_logs
            assert all("dropped" in msg and "invalid" in msg for msg in device_logs)
            manager_logs = [r.getMessage() for r in logs if r.name == "fleet.manager"]
            assert sum(msg.startswith("dropped") for msg in manager_logs) == n_manager
            # nothing of the junk landed in the database
            assert not h.f.db.query("SELECT 1 FROM metrics WHERE device = ? AND end = 1.0",
                                    (target,))
            assert h.f.inventory.get(target).status == "online"
            h.f.rollouts.arm_metrics("digits", "1", [target], 0.0)  # no poisoned row to merge
            await intruder.stop()

            # both sides still work: a deploy goes through, telemetry still lands, the tick runs
            did, _ = deploy(h.f, "digits", "2", Target.parse("all"),
                            probation={"seconds": 0.2})
            await h.until(lambda: h.committed(did) == {d.id for d in sim.devices},
                          what="v2 committed everywhere after the junk")
            await h.until(lambda: bool(h.f.db.query(
                "SELECT 1 FROM metrics WHERE device = ? AND version = '2'", (target,))),
                what="telemetry from v2")
            assert all(t.done() is False for t in manager._tasks)
            assert all(t.done() is False for t in sim.devices[0].agent._tasks[:4])

    asyncio.run(main())
