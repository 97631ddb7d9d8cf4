"""Artifact chunks through the in-memory broker: the agent takes only chunks of the artifact it
is downloading, within the window it asked for and of the right size, writes them at once and
buffers nothing; everything else is dropped and counted, and the real download completes."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.agent import AgentSettings, DeviceAgent
from edge_runtime.protocol import messages as m
from edge_runtime.protocol.memory import InMemoryBroker, InMemoryLink
from edge_runtime.protocol.signed import seal
from edge_runtime.protocol.topics import TopicScheme
from edge_runtime.runtime import Runtime
from tests.conftest import Keys, build_package

pytestmark = pytest.mark.timeout(60)
DEVICE = "dev-a"
TOPICS = TopicScheme("default")
CHUNK = 512
Junk = Callable[[m.ArtifactRequest, int], list[m.ArtifactChunk]]


def artifact(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    chunks = [hashlib.sha256(data[i:i + CHUNK]).hexdigest() for i in range(0, len(data), CHUNK)]
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "chunk_size": CHUNK,
            "chunks": chunks}


class Manager:
    """Answers artifact requests from one file, after the junk ``junk(request, n)`` adds."""

    def __init__(self, broker: InMemoryBroker, package: Path, junk: Junk) -> None:
        self.link = InMemoryLink(broker, client_id="manager")
        self.data = package.read_bytes()
        self.sha = hashlib.sha256(self.data).hexdigest()
        self.junk = junk
        self.requests: list[m.ArtifactRequest] = []

    async def start(self) -> None:
        await self.link.subscribe(TOPICS.artifact_req(DEVICE))
        await self.link.start()
        await self.link.wait_connected(5)
        self._task = asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        while True:
            req = m.ArtifactRequest.decode((await self.link.next_message()).payload)
            self.requests.append(req)
            good = [m.ArtifactChunk(self.sha, i, self.data[i * CHUNK:(i + 1) * CHUNK])
                    for i in req.chunks]
            for chunk in [*self.junk(req, len(self.requests)), *good]:
                await self.link.publish(TOPICS.artifact_chunk(DEVICE), chunk.encode())

    async def stop(self) -> None:
        self._task.cancel()
        await self.link.stop()


async def until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_download_takes_only_its_window(tmp_path: Path, keys: Keys) -> None:
    pkg = build_package(tmp_path / "pkgs", keys.signer, name="digits", version="1")
    art = artifact(pkg)
    n = len(art["chunks"])
    assert n >= 4

    def junk(req: m.ArtifactRequest, nth: int) -> list[m.ArtifactChunk]:
        first = req.chunks[0]
        outside = next(i for i in range(n) if i not in req.chunks)
        out = [m.ArtifactChunk("cd" * 32, first, b"x" * CHUNK),  # another artifact
               m.ArtifactChunk(art["sha256"], outside, b"y" * CHUNK),  # not asked for
               m.ArtifactChunk(art["sha256"], first, b"z" * (CHUNK + 1))]  # wrong size
        if nth == 1:  # a corrupt copy answers `first` in this window: asked for again
            out.append(m.ArtifactChunk(art["sha256"], first, b"w" * CHUNK))
        return out

    async def main() -> None:
        broker = InMemoryBroker()
        manager = Manager(broker, pkg, junk)
        await manager.start()
        rt = Runtime(tmp_path / "store", trusted_keys=(keys.public,))
        agent = DeviceAgent(rt, lambda **kw: InMemoryLink(broker, **kw), AgentSettings(
            DEVICE, fleet_keys=(keys.public,), chunk_window=2, chunk_timeout_s=5.0))
        await agent.start()
        target = {"version": "1", "deployment": "dep-1", "artifact": art,
                  "probation": {"seconds": 0}}
        doc = {"schema_version": 1, "fleet": "default", "device": DEVICE, "generation": 1,
               "models": {"digits": target}, "ts": 0.0}
        await manager.link.publish(TOPICS.desired(DEVICE), seal(doc, keys.signer), retain=True)
        try:
            await until(lambda: (a := rt.store.active("digits")) is not None
                        and a.version == "1", "v1 active")
            drops = agent.drops.snapshot()
            windows = len(manager.requests)
            assert drops == {"artifact/chunk.corrupt": 1,
                             "artifact/chunk.outside_window": windows + 1,  # + the good copy
                             "artifact/chunk.unsolicited": windows,
                             "artifact/chunk.wrong_size": windows}
            assert all(len(r.chunks) <= 2 for r in manager.requests)
            assert agent._window.pending == frozenset()
            # the loops are supervised; the report tasks of each swap event do not pile up
            assert {name: h["running"] for name, h in agent.status()["tasks"].items()} == {
                "agent.converge": True, "agent.heartbeat": True, "agent.outbox": True,
                "agent.pump": True}
            await until(lambda: len(agent._tasks) == 4, "only the 4 loops left in _tasks")
        finally:
            await agent.stop()
            await manager.stop()
            rt.close()

    asyncio.run(main())


def test_unsolicited_flood_is_dropped_without_buffering(tmp_path: Path, keys: Keys) -> None:
    """No download under way: 60 chunks of 256 KB leave nothing behind in the agent."""
    async def main() -> None:
        broker = InMemoryBroker()
        rt = Runtime(tmp_path / "store", trusted_keys=(keys.public,))
        agent = DeviceAgent(rt, lambda **kw: InMemoryLink(broker, **kw),
                            AgentSettings(DEVICE, fleet_keys=(keys.public,)))
        await agent.start()
        flood = InMemoryLink(broker, client_id="flood")
        await flood.start()
        await flood.wait_connected(5)
        tracemalloc.start()
        try:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            data = b"\x00" * (256 * 1024)
            for i in range(60):
                await flood.publish(TOPICS.artifact_chunk(DEVICE),
                                    m.ArtifactChunk("ef" * 32, i, data).encode())
            await until(lambda: agent.drops.snapshot().get("artifact/chunk.unsolicited") == 60,
                        "60 drops")
            broker.published.clear()  # the fake broker's own log of every message
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            await flood.stop()
            await agent.stop()
            rt.close()
        assert grown < 2 * 2**20, f"{grown} bytes kept after a 15 MB flood"

    asyncio.run(main())
