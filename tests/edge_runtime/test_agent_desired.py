"""The device agent's checks on desired states, through the in-memory broker: only documents
signed by a trusted fleet key, for this device and fleet, and newer than the last accepted one
(also after a restart) change anything; each refusal is logged once and counted."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_runtime.agent import AgentSettings, DeviceAgent
from edge_runtime.protocol.memory import InMemoryBroker, InMemoryLink
from edge_runtime.protocol.signed import seal
from edge_runtime.protocol.topics import TopicScheme
from edge_runtime.runtime import Runtime
from edge_runtime.signing import Signer, generate_keypair
from tests.conftest import Keys

pytestmark = pytest.mark.timeout(60)
DEVICE = "dev-a"
TOPICS = TopicScheme("default")


@dataclass(frozen=True)
class FleetKey:
    signer: Signer
    public: Path


@pytest.fixture(scope="module")
def fleet_key(tmp_path_factory: pytest.TempPathFactory) -> FleetKey:
    priv, pub = generate_keypair(tmp_path_factory.mktemp("fleet-key"), "fleet")
    return FleetKey(Signer.load(priv), pub)


@pytest.fixture(scope="module")
def impostor(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    priv, _pub = generate_keypair(tmp_path_factory.mktemp("impostor"), "impostor")
    return Signer.load(priv)


SHA = "ab" * 32
# a model entry: only ever in refused documents (an accepted one would start a download)
OTHER = {"digits": {"version": "9", "deployment": "d-1", "artifact": {
    "sha256": SHA, "size": 10, "chunk_size": 64, "chunks": [SHA]}}}


def doc(generation: int, *, device: str = DEVICE, fleet: str = "default",
        models: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"schema_version": 1, "fleet": fleet, "device": device, "generation": generation,
            "models": models or {}, "ts": 1000.0}


def tampered(raw: bytes, **changes: Any) -> bytes:
    """A validly signed envelope whose document was altered afterwards."""
    env = orjson.loads(raw)
    body = {**orjson.loads(base64.b64decode(env["payload"])), **changes}
    env["payload"] = base64.b64encode(orjson.dumps(body)).decode()
    return orjson.dumps(env)


@contextmanager
def warnings() -> Iterator[list[str]]:
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("edge_runtime.agent")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


class Device:
    """A device agent over a real store, and the manager's side of the in-memory broker."""

    def __init__(self, store: Path, keys: Keys, broker: InMemoryBroker,
                 **settings: Any) -> None:
        self.rt = Runtime(store, trusted_keys=(keys.public,))
        self.agent = DeviceAgent(self.rt, lambda **kw: InMemoryLink(broker, **kw),
                                 AgentSettings(DEVICE, **settings))
        self.manager = InMemoryLink(broker, client_id="manager")

    async def start(self) -> None:
        await self.manager.start()
        await self.manager.wait_connected(5)
        await self.agent.start()
        await self.agent.link.wait_connected(5)

    async def stop(self) -> None:
        await self.agent.stop()
        await self.manager.stop()
        self.rt.close()

    @property
    def generation(self) -> int | None:
        return self.agent.status()["desired_generation"]  # type: ignore[no-any-return]

    def drops(self) -> dict[str, int]:
        return self.agent.drops.snapshot()

    async def send(self, raw: bytes, *, device: str = DEVICE) -> None:
        await self.manager.publish(TOPICS.desired(device), raw, retain=True)

    async def until(self, cond: Callable[[], bool], what: str) -> None:
        for _ in range(2000):
            if cond():
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"timed out waiting for {what}")

    async def accepted(self, raw: bytes, generation: int) -> None:
        await self.send(raw)
        await self.until(lambda: self.generation == generation, f"generation {generation}")

    async def refused(self, raw: bytes, key: str) -> None:
        before = self.drops().get(key, 0)
        await self.send(raw)
        await self.until(lambda: self.drops().get(key, 0) == before + 1, f"a {key} drop")


@asynccontextmanager
async def device(tmp_path: Path, keys: Keys, broker: InMemoryBroker | None = None,
                 **settings: Any) -> AsyncIterator[Device]:
    d = Device(tmp_path / "store", keys, broker or InMemoryBroker(), **settings)
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


# name -> (envelope builder from (fleet signer, impostor signer, the accepted gen-5 envelope),
#          the drop counter it must raise)
REFUSALS: dict[str, tuple[Callable[[Signer, Signer, bytes], bytes], str]] = {
    "unsigned": (lambda s, i, ok: seal(doc(99), None), "desired.unsigned"),
    "bare document": (lambda s, i, ok: orjson.dumps(doc(99)), "desired.unsigned"),
    "forged by an unknown key": (lambda s, i, ok: seal(doc(2**62), i), "desired.untrusted_key"),
    "forged content, real signature": (lambda s, i, ok: tampered(ok, generation=2**62),
                                       "desired.bad_signature"),
    "signature moved to other content": (
        lambda s, i, ok: orjson.dumps({**orjson.loads(seal(doc(6), s)),
                                       "signature": orjson.loads(ok)["signature"]}),
        "desired.bad_signature"),
    "for another device": (lambda s, i, ok: seal(doc(99, device="dev-b"), s),
                           "desired.wrong_device"),
    "for another fleet": (lambda s, i, ok: seal(doc(99, fleet="lab"), s), "desired.wrong_fleet"),
    "replayed generation": (lambda s, i, ok: seal(doc(5, models=OTHER), s),
                            "desired.replayed"),
    "rolled back": (lambda s, i, ok: seal(doc(4), s), "desired.rolled_back"),
    "not JSON": (lambda s, i, ok: b"\xff garbage", "desired.malformed"),
    "payload not base64": (lambda s, i, ok: orjson.dumps(
        {"schema_version": 1, "payload": "%%%", "signature": None}), "desired.malformed"),
    "bad document under a good signature": (
        lambda s, i, ok: seal({**doc(9), "generation": "9"}, s), "desired.malformed"),
}


def test_every_forgery_is_refused_logged_once_and_counted(tmp_path: Path, keys: Keys,
                                                          fleet_key: FleetKey,
                                                          impostor: Signer) -> None:
    async def main() -> None:
        async with device(tmp_path, keys, fleet_keys=(fleet_key.public,)) as d:
            good = seal(doc(5), fleet_key.signer)
            await d.accepted(good, 5)
            for name, (build, key) in REFUSALS.items():
                with warnings() as logged:
                    await d.refused(build(fleet_key.signer, impostor, good), key)
                assert d.generation == 5, name
                assert len(logged) == 1 and "dropped" in logged[0], (name, logged)
            assert sum(d.drops().values()) == len(REFUSALS)
            # the same signed document again (a retained redelivery) is no news and no drop
            with warnings() as logged:
                await d.send(good)
                await d.accepted(seal(doc(6), fleet_key.signer), 6)
            assert logged == [] and sum(d.drops().values()) == len(REFUSALS)
            assert d.agent.status()["tasks"]["agent.pump"]["restarts"] == 0

    asyncio.run(main())


def test_rollback_refused_after_a_restart(tmp_path: Path, keys: Keys,
                                          fleet_key: FleetKey) -> None:
    """The last accepted generation is in the store: a restarted device still refuses older
    signed documents (a replay of its own history)."""
    old = seal(doc(3), fleet_key.signer)

    async def main() -> None:
        broker = InMemoryBroker()
        async with device(tmp_path, keys, broker, fleet_keys=(fleet_key.public,)) as d:
            await d.accepted(old, 3)
            await d.accepted(seal(doc(7), fleet_key.signer), 7)
        async with device(tmp_path, keys, broker, fleet_keys=(fleet_key.public,)) as d:
            assert d.generation == 7  # from the store, before anything arrives
            await d.refused(old, "desired.rolled_back")
            await d.refused(seal(doc(7, models=OTHER), fleet_key.signer), "desired.replayed")
            assert d.generation == 7
            await d.accepted(seal(doc(8), fleet_key.signer), 8)

    asyncio.run(main())


def test_a_retained_forgery_waiting_at_connect_is_refused(tmp_path: Path, keys: Keys,
                                                          fleet_key: FleetKey,
                                                          impostor: Signer) -> None:
    async def main() -> None:
        broker = InMemoryBroker()
        forger = InMemoryLink(broker, client_id="forger")
        await forger.start()
        await forger.wait_connected(5)
        await forger.publish(TOPICS.desired(DEVICE), seal(doc(2**62), impostor), retain=True)
        async with device(tmp_path, keys, broker, fleet_keys=(fleet_key.public,)) as d:
            await d.until(lambda: d.drops().get("desired.untrusted_key") == 1, "the refusal")
            assert d.generation is None
            await d.accepted(seal(doc(1), fleet_key.signer), 1)  # the manager still gets in
        await forger.stop()

    asyncio.run(main())


def test_package_keys_stand_in_when_no_fleet_key_is_given(tmp_path: Path, keys: Keys,
                                                          fleet_key: FleetKey) -> None:
    """AgentSettings.fleet_keys is what the device trusts; the daemon passes the package keys
    when no fleet keys are configured (ServeSettings.desired_keys)."""
    from edge_runtime.settings import ServeSettings

    s = ServeSettings(trusted_keys=(keys.public,))
    assert s.desired_keys == (keys.public,)
    assert s.with_(fleet_keys=(fleet_key.public,)).desired_keys == (fleet_key.public,)

    async def main() -> None:
        async with device(tmp_path, keys, fleet_keys=s.desired_keys) as d:
            await d.refused(seal(doc(1), fleet_key.signer), "desired.untrusted_key")
            await d.accepted(seal(doc(1), keys.signer), 1)

    asyncio.run(main())


def test_no_fleet_key_refuses_everything(tmp_path: Path, keys: Keys,
                                         fleet_key: FleetKey) -> None:
    async def main() -> None:
        with warnings() as logged:
            async with device(tmp_path, keys) as d:
                await d.refused(seal(doc(1), None), "desired.unsigned")
                await d.refused(seal(doc(2), fleet_key.signer), "desired.untrusted_key")
                assert d.generation is None
        assert any("no fleet key configured" in line for line in logged)

    asyncio.run(main())


def test_allow_unsigned_desired_is_for_development_only(tmp_path: Path, keys: Keys,
                                                        fleet_key: FleetKey,
                                                        impostor: Signer) -> None:
    """Unsigned (or signed by an unknown key) is accepted, as packages' --allow-unsigned does;
    a trusted key's signature that does not verify, another device's document and a rollback
    are still refused."""
    async def main() -> None:
        async with device(tmp_path, keys, fleet_keys=(fleet_key.public,),
                          allow_unsigned_desired=True) as d:
            await d.accepted(seal(doc(1), None), 1)
            await d.accepted(seal(doc(2), impostor), 2)
            good = seal(doc(3), fleet_key.signer)
            await d.accepted(good, 3)
            await d.refused(tampered(good, generation=50), "desired.bad_signature")
            await d.refused(seal(doc(60, device="dev-b"), None), "desired.wrong_device")
            await d.refused(seal(doc(1), None), "desired.rolled_back")
            assert d.generation == 3

    asyncio.run(main())


def test_documents_on_another_devices_topic_are_not_read(tmp_path: Path, keys: Keys,
                                                         fleet_key: FleetKey) -> None:
    async def main() -> None:
        async with device(tmp_path, keys, fleet_keys=(fleet_key.public,)) as d:
            await d.send(seal(doc(1, device="dev-b"), fleet_key.signer), device="dev-b")
            await d.accepted(seal(doc(1), fleet_key.signer), 1)
            assert d.drops() == {}

    asyncio.run(main())

