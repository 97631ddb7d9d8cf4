"""300 unsolicited ~900 KB artifact chunks over a real Mosquitto into a real daemon
(`edge-runtime serve --fleet-url ...` in a subprocess): its memory stays bounded, every chunk
is dropped and counted (in `status`), and a real chunked download still completes, also with
foreign chunks of the same artifact arriving in the middle of it."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.protocol import messages as m
from edge_runtime.protocol.mqtt import MqttLink
from edge_runtime.protocol.topics import TopicScheme
from fleet.deploy import deploy
from fleet.inventory import Target
from tests.broker import Broker
from tests.conftest import Keys
from tests.fleet.harness import FLEET, FleetHarness
from tests.integration.conftest import DaemonFactory, DaemonProc

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]
FLOOD = 300
CHUNK_BYTES = 900 * 1024
# Growth of the daemon's RSS allowed over the flood (270 MB sent; before the chunk window the
# daemon kept every chunk: +260 MB). A few copies of one chunk in flight, the allocator's slack.
RSS_BOUND = 48 * 2**20


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class RssWatch:
    """The highest RSS of a process, sampled every 10 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = _rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _drops(daemon: DaemonProc) -> dict[str, int]:
    doc: dict[str, Any] = daemon.admin().call("GET", "/admin/status")
    return doc["health"]["agent"]["drops"]  # type: ignore[no-any-return]


async def _flood(h: FleetHarness, device: str, chunks: list[m.ArtifactChunk]) -> None:
    link = MqttLink(h.mqtt, client_id=f"test-flood-{os.getpid()}", clean_start=True)
    await link.start()
    await link.wait_connected(10)
    topic = TopicScheme(FLEET).artifact_chunk(device)
    try:
        for i in range(0, len(chunks), 20):
            await asyncio.gather(*(link.publish(topic, c.encode()) for c in chunks[i:i + 20]))
    finally:
        await link.stop()


def test_chunk_flood_keeps_memory_bounded(tmp_path: Path, broker: Broker, keys: Keys,
                                          fleet_pkgs: dict[str, Path],
                                          daemons: DaemonFactory) -> None:
    daemon = daemons(tmp_path / "store", "--fleet-url", broker.url, "--device-id", "dev1",
                     "--trusted-keys", str(keys.public), "--log-level", "warning")
    data = os.urandom(CHUNK_BYTES)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"], fleet_pkgs["5"])
            await loop.run_in_executor(None, daemon.start)
            await h.until(lambda: any(d.id == "dev1" and d.reported is not None
                                      for d in h.f.inventory.devices()), what="dev1 joins")
            did, _ = deploy(h.f, "digits", "1", Target.parse("all"),
                            probation={"seconds": 0.2, "min_requests": 0})
            await h.until(lambda: h.committed(did) == {"dev1"}, what="dev1 commits v1")
            assert daemon.proc is not None
            pid = daemon.proc.pid

            # unsolicited: no download under way, for an artifact nobody asked for
            junk = [m.ArtifactChunk("ab" * 32, i, data) for i in range(FLOOD)]
            before = _rss(pid)
            watch = RssWatch(pid)
            await _flood(h, "dev1", junk)
            await h.until(lambda: _drops(daemon).get("artifact/chunk.unsolicited") == FLOOD,
                          what=lambda: f"{FLOOD} drops counted (have {_drops(daemon)})")
            peak = watch.stop()
            after = _rss(pid)
            print(f"daemon RSS: {before / 2**20:.1f} MB before, peak {peak / 2**20:.1f} MB, "
                  f"{after / 2**20:.1f} MB after {FLOOD} x {CHUNK_BYTES // 1024} KB")
            assert peak - before < RSS_BOUND, (before, peak, after)

            # a real download (19 chunks of v5) with the same artifact's junk racing it
            v5 = h.f.registry.get("digits", "5")
            did5, _ = deploy(h.f, "digits", "5", Target.parse("all"),
                             probation={"seconds": 0.2, "min_requests": 0})
            racing = [m.ArtifactChunk(v5.sha256, i % 19, data) for i in range(60)]
            await _flood(h, "dev1", racing)
            await h.until(lambda: h.committed(did5) == {"dev1"}, timeout=60,
                          what="dev1 commits v5 (a chunked download)")
            drops = _drops(daemon)
            assert drops["artifact/chunk.unsolicited"] >= FLOOD
            assert sum(drops.values()) - FLOOD >= len(racing)  # every racing chunk dropped
            assert _rss(pid) - before < RSS_BOUND

    asyncio.run(main())
