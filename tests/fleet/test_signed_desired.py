"""Forged desired states over a real Mosquitto. A client that can write a device's retained
``desired`` topic (no ACL here) leaves, with a huge generation, an unsigned document, one signed
by an unknown key and another device's real signed document: the device refuses each (also when
it finds one waiting at connect), counts it, and the manager's next signed deployment still
reaches it. The fleet key here is not the package key (devices given ``fleet_keys``)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_runtime.protocol.mqtt import MqttLink
from edge_runtime.protocol.signed import seal
from edge_runtime.protocol.topics import TopicScheme
from edge_runtime.signing import generate_keypair
from fleet.deploy import deploy
from fleet.inventory import Target
from tests.broker import Broker
from tests.conftest import Keys
from tests.fleet.harness import FLEET, FleetHarness

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]
HUGE = 2**62


async def _retained(h: FleetHarness, topic: str) -> bytes:
    """The broker's retained message on ``topic``."""
    link = MqttLink(h.mqtt, client_id="test-retained-reader", clean_start=True)
    await link.subscribe(topic)
    await link.start()
    try:
        return (await asyncio.wait_for(link.next_message(), 10)).payload
    finally:
        await link.stop()


def _document(raw: bytes) -> dict[str, Any]:
    return orjson.loads(base64.b64decode(orjson.loads(raw)["payload"]))  # type: ignore[no-any-return]


def test_forged_retained_desired_does_not_freeze_a_device(tmp_path: Path, broker: Broker,
                                                          keys: Keys, other_keys: Keys,
                                                          fleet_pkgs: dict[str, Path]) -> None:
    fleet_priv, fleet_pub = generate_keypair(tmp_path / "fleet-key", "fleet")

    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public, signing_key=fleet_priv) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"], fleet_pkgs["2"])
            sim = await h.start_sim(2, fleet_keys=(fleet_pub,))
            await h.wait_inventory(2)
            await h.seed("digits", "1")
            victim, other = sim.devices[0].id, sim.devices[1].id
            topics = TopicScheme(FLEET)
            real = _document(await _retained(h, topics.desired(victim)))
            assert real["device"] == victim
            replayable = await _retained(h, topics.desired(other))
            # a forged document at a huge generation that points at v2 (installed nowhere)
            forged = {**real, "generation": HUGE,
                      "models": {"digits": {**real["models"]["digits"], "version": "2",
                                            "deployment": "forged"}}}
            intruder = MqttLink(h.mqtt, client_id="test-intruder", clean_start=True)
            await intruder.start()
            await intruder.wait_connected(10)
            for payload in (orjson.dumps(forged), seal(forged, None),
                            seal(forged, other_keys.signer), replayable):
                await intruder.publish(topics.desired(victim), payload, retain=True)
            await intruder.stop()
            want = {"desired.unsigned": 2, "desired.untrusted_key": 1, "desired.wrong_device": 1}
            await h.until(lambda: h.device(victim).agent.drops.snapshot() == want,
                          what=lambda: f"4 refusals (have "
                                       f"{h.device(victim).agent.drops.snapshot()})")
            # the device reboots and finds the last forgery retained on the broker
            await h.drop_device(victim)
            revived = await h.revive_device(victim)
            await h.until(lambda: revived.agent.drops.snapshot() == {"desired.wrong_device": 1},
                          what="the retained forgery refused at connect")
            assert revived.agent.status()["desired_generation"] == real["generation"]
            assert h.active("digits")[victim] == "1"

            did, devices = deploy(h.f, "digits", "2", Target.parse("all"),
                                  probation={"seconds": 0.2})
            await h.until(lambda: h.committed(did) == set(devices) == {victim, other},
                          what="the signed deployment of v2 reaches both devices")
            after = _document(await _retained(h, topics.desired(victim)))
            assert after["generation"] == real["generation"] + 1 < HUGE
            assert revived.agent.status()["desired_generation"] == after["generation"]
            assert "forged" not in {e["deployment"] for e in h.f.db.query(
                "SELECT DISTINCT deployment FROM events WHERE device = ?", (victim,))}

    asyncio.run(main())


def test_unsigned_manager_reaches_only_devices_that_allow_it(tmp_path: Path, broker: Broker,
                                                             keys: Keys,
                                                             fleet_pkgs: dict[str, Path]
                                                             ) -> None:
    """A lab manager without a signing key: devices run with allow_unsigned_desired take its
    deployments; a device without it refuses every document and stays as it was."""
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public, sign=False) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"])
            sim = await h.start_sim(2, allow_unsigned_desired=True)
            strict = (await h.add_devices(1, allow_unsigned_desired=False))[0]
            await h.wait_inventory(3)
            did, devices = deploy(h.f, "digits", "1", Target.parse("all"),
                                  probation={"seconds": 0.2})
            lab = {d.id for d in sim.devices[:2]}
            await h.until(lambda: h.committed(did) == lab, what="the lab devices commit v1")
            await h.until(lambda: strict.agent.drops.snapshot().get("desired.unsigned", 0) >= 1,
                          what="the strict device refuses the unsigned document")
            assert h.active("digits")[strict.id] is None
            assert strict.agent.status()["desired_generation"] is None
            assert set(devices) == lab | {strict.id}

    asyncio.run(main())
