"""The broker configuration in devices/mosquitto/ (passwords + per-device ACL from `pattern`
rules on the username): a device can publish its own topics and nobody sees what it publishes
on another device's; it cannot read another device's desired state; the real protocol (manager
and agents) works through it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_runtime.protocol.link import Message
from edge_runtime.protocol.mqtt import MqttLink
from edge_runtime.protocol.topics import TopicScheme
from tests.broker import Broker, free_port
from tests.conftest import Keys
from tests.fleet.aclbroker import AclBroker, login
from tests.fleet.harness import FLEET, FleetHarness

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

DEVICES = ("sim-00000", "sim-00001", "sim-00002")


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[AclBroker]:
    b = AclBroker(tmp_path, port=free_port(), users=("fleet-manager", "ops", *DEVICES)).start()
    yield b
    b.stop()


class Client:
    def __init__(self, broker: Broker, user: str | None, *, client_id: str,
                 pw: str | None = None) -> None:
        self.link = MqttLink(login(broker, user, pw), client_id=client_id, clean_start=True,
                             timeout=3.0)
        self.got: list[Message] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, *filters: str, wait: float = 5.0) -> Client:
        await self.link.subscribe(*filters)
        await self.link.start()
        if wait:
            await self.link.wait_connected(wait)
        self._task = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        while True:
            self.got.append(await self.link.next_message())

    def topics(self) -> list[str]:
        return [m.topic for m in self.got]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.link.stop()


async def _until(cond: object, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


def test_device_cannot_write_or_read_another_devices_topics(acl_broker: AclBroker) -> None:
    async def main() -> None:
        t = TopicScheme(FLEET)
        a, b = DEVICES[0], DEVICES[1]
        ops = await Client(acl_broker, "ops", client_id="ops").start("edge/#")
        dev_a = await Client(acl_broker, a, client_id=f"{FLEET}.{a}").start(
            t.desired(a), t.desired(b), t.artifact_chunk(b))
        dev_b = await Client(acl_broker, b, client_id=f"{FLEET}.{b}").start(t.desired(b))
        manager = await Client(acl_broker, "fleet-manager", client_id="fleet-manager").start()
        try:
            forbidden = [t.device(b, kind) for kind in ("status", "heartbeat", "reported",
                                                        "events", "telemetry", "artifact/req",
                                                        "desired", "artifact/chunk")]
            forbidden += [t.desired(a), t.artifact_chunk(a), t.alert("x"),
                          f"edge/v1/other-fleet/{b}/status", "elsewhere/topic"]
            for topic in forbidden:
                await dev_a.link.publish(topic, b"forged")
            for kind in ("status", "heartbeat", "reported", "events", "telemetry",
                         "artifact/req"):
                await dev_a.link.publish(t.device(a, kind), b"own")
            await _until(lambda: t.artifact_req(a) in ops.topics(),
                         "ops sees the device's own topics")
            assert sorted(ops.topics()) == sorted(t.device(a, k) for k in (
                "status", "heartbeat", "reported", "events", "telemetry", "artifact/req"))
            assert all(m.payload == b"own" for m in ops.got)

            # the manager writes b's desired state: b gets it, a (subscribed to it) does not
            await manager.link.publish(t.desired(b), b"for b only")
            await manager.link.publish(t.artifact_chunk(b), b"chunk for b")
            await manager.link.publish(t.desired(a), b"for a")
            await _until(lambda: t.desired(a) in dev_a.topics(), "a gets its own desired")
            await _until(lambda: t.desired(b) in dev_b.topics(), "b gets its desired")
            assert dev_a.topics() == [t.desired(a)]
            # a read-only login cannot write either
            await ops.link.publish(t.desired(a), b"ops forging")
            await manager.link.publish(t.status(a), b"marker")
            await _until(lambda: t.status(a) in [m.topic for m in ops.got[6:]], "marker")
            assert b"ops forging" not in [m.payload for m in ops.got + dev_a.got]
            # presenting b's client id does not take over b's connection
            impostor = await Client(acl_broker, a, client_id=f"{FLEET}.{b}").start()
            await asyncio.sleep(0.3)
            assert dev_b.link.connected
            await impostor.stop()
        finally:
            for c in (ops, dev_a, dev_b, manager):
                await c.stop()

    asyncio.run(main())


def test_logins_are_required(acl_broker: AclBroker) -> None:
    async def main() -> None:
        for user, pw in ((None, None), (DEVICES[0], "wrong"), ("nobody", "x")):
            c = Client(acl_broker, user, client_id=f"try-{user}", pw=pw)
            await c.start(wait=0)
            await asyncio.sleep(0.5)
            assert not c.link.connected, user
            await c.stop()

    asyncio.run(main())


def test_fleet_works_through_the_acl(tmp_path: Path, acl_broker: AclBroker, keys: Keys,
                                     fleet_pkgs: dict[str, Path]) -> None:
    """The manager and three agents, each with its own login: presence with wills, retained
    reports, chunked artifacts, events and telemetry all pass; the deploy completes."""
    async def main() -> None:
        async with FleetHarness(acl_broker, tmp_path, keys.public) as h:
            h.manager_mqtt = login(acl_broker, "fleet-manager")
            await h.start_manager()
            h.publish(fleet_pkgs["1"])
            await h.start_sim(0)
            await h.add_devices(3, mqtt_for=lambda d: login(acl_broker, d))
            await h.wait_inventory(3)
            await h.seed("digits", "1")
            await h.until(lambda: all(h.f.db.query(
                "SELECT 1 FROM metrics WHERE device = ?", (d,)) for d in DEVICES),
                what="telemetry from every device")
            await h.drop_device(DEVICES[2])
            await h.until(lambda: h.f.inventory.get(DEVICES[2]).status == "offline",
                          what="the will (an offline status) is allowed")

    asyncio.run(main())
