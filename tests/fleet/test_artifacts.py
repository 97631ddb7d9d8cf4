"""Artifacts a device must refuse (unsigned, untrusted signer, tampered chunks, a whole file that
does not match its sha256), and an abort that stops devices in the middle of a download."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.signing import TrustStore
from edge_runtime.swap import records
from edge_runtime.swap.machine import State
from fleet.deploy import deploy
from fleet.inventory import Target
from fleet.registry import ModelVersion, chunk_hashes
from fleet.rollout.machine import Command, RolloutConfig, RState
from tests.broker import Broker, free_port
from tests.conftest import Keys, build_package
from tests.fleet.harness import FleetHarness

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


def _serves(h: FleetHarness, device: str, version: str) -> bool:
    """The device answers requests with ``version`` (not just its store's active pointer)."""
    d = h.device(device)
    served = d.runtime.registry.active("digits")
    if served is None or served.version != version:
        return False
    n_in = served.installed.manifest.inputs[0].shape[1]
    d.runtime.predict("digits", np.zeros((1, n_in), np.float32))
    return True


def _last_swap(h: FleetHarness, device: str) -> records.SwapRecord:
    return records.recent(h.device(device).runtime.store.db, "digits", limit=1)[0]


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_unsigned_and_untrusted_packages_refused(tmp_path: Path, broker: Broker, keys: Keys,
                                                 other_keys: Keys,
                                                 fleet_pkgs: dict[str, Path]) -> None:
    """A manager configured to publish unsigned packages (and one trusting a key the devices do
    not) cannot make a device install them: the device verifies before installing, reports
    the failure with its reason and keeps serving v1."""
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"])
            h.f.registry.allow_unsigned = True
            h.publish(fleet_pkgs["4"])
            h.f.registry.trust = TrustStore.load([keys.public, other_keys.public])
            foreign = build_package(tmp_path / "foreign", other_keys.signer, name="digits",
                                    version="6", seed=6)
            h.publish(foreign)
            await h.start_sim(3)
            await h.wait_inventory(3)
            await h.seed("digits", "1")
            a, b = h.sim.devices[0].id, h.sim.devices[1].id  # type: ignore[union-attr]
            bad = {a: deploy(h.f, "digits", "4", Target.parse(f"device:{a}"))[0],
                   b: deploy(h.f, "digits", "6", Target.parse(f"device:{b}"))[0]}
            await h.until(lambda: all(
                any(e["state"] == "failed" for e in h.events(did)) for did in bad.values()),
                what="both devices report the failure")
            unsigned = next(e for e in h.events(bad[a]) if e["state"] == "failed")
            untrusted = next(e for e in h.events(bad[b]) if e["state"] == "failed")
            assert "unsigned" in unsigned["reason"].lower(), unsigned
            assert "trust" in untrusted["reason"].lower(), untrusted
            for device, version in ((a, "4"), (b, "6")):
                assert _serves(h, device, "1")
                assert version not in h.installed(device, "digits")
                assert _last_swap(h, device).state is State.FAILED
            await h.until(lambda: h.f.inventory.get(a).reported["models"]["digits"][  # type: ignore[index]
                "state"] == "failed", what="the retained report says failed")
            # not retried: the same deployment stays failed, the device stays on v1
            await asyncio.sleep(0.5)
            assert [e["state"] for e in h.events(bad[a])].count("failed") == 1

    asyncio.run(main())


def test_tampered_artifact_refused(tmp_path: Path, broker: Broker, keys: Keys,
                                   fleet_pkgs: dict[str, Path]) -> None:
    """The manager serves wrong bytes. With the published chunk hashes, every copy of the bad
    chunk is refused and the download fails after a few tries; with chunk hashes recomputed to
    match the bad bytes, the whole-file sha256 refuses it. Nothing is installed either way."""
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"], fleet_pkgs["2"], fleet_pkgs["3"])
            await h.start_sim(2)
            await h.wait_inventory(2)
            await h.seed("digits", "1")
            a, b = h.sim.devices[0].id, h.sim.devices[1].id  # type: ignore[union-attr]
            for d in h.sim.devices:  # type: ignore[union-attr]
                d.agent.s = replace(d.agent.s, chunk_timeout_s=0.5)

            v2 = h.f.registry.get("digits", "2")
            _flip_byte(v2.path, v2.size // 2)
            d2, _ = deploy(h.f, "digits", "2", Target.parse(f"device:{a}"))

            v3 = h.f.registry.get("digits", "3")
            _flip_byte(v3.path, v3.size // 2)
            _rehash_chunks(h, v3)
            d3, _ = deploy(h.f, "digits", "3", Target.parse(f"device:{b}"))

            await h.until(lambda: all(
                any(e["state"] == "failed" for e in h.events(did)) for did in (d2, d3)),
                what="both downloads fail")
            chunk_fail = next(e for e in h.events(d2) if e["state"] == "failed")["reason"]
            file_fail = next(e for e in h.events(d3) if e["state"] == "failed")["reason"]
            assert chunk_fail.startswith("download failed:") and "chunk 0" in chunk_fail
            assert file_fail.startswith("download failed:") and "sha256" in file_fail
            for device, version, sha in ((a, "2", v2.sha256), (b, "3", v3.sha256)):
                assert _serves(h, device, "1")
                assert version not in h.installed(device, "digits")
                downloads = h.device(device).runtime.store.root / "downloads"
                assert not (downloads / f"{sha}.edgepkg").exists()

    asyncio.run(main())


def _rehash_chunks(h: FleetHarness, mv: ModelVersion) -> None:
    """Make the registry's chunk list agree with the (tampered) file on disk."""
    chunks = chunk_hashes(mv.path, mv.chunk_size)
    assert chunks != mv.chunks
    with h.f.db.transaction() as cur:
        cur.execute("UPDATE models SET chunks = ? WHERE sha256 = ?",
                    (json.dumps(chunks), mv.sha256))
    assert hashlib.sha256(mv.path.read_bytes()).hexdigest() != mv.sha256


def test_abort_stops_devices_mid_download(tmp_path: Path, broker: Broker, keys: Keys,
                                          fleet_pkgs: dict[str, Path]) -> None:
    """A big v5 downloads in small windows; the manager stops answering after a few chunks, so
    the devices are provably mid-download when the rollout is aborted. They give up the
    download (swap failed: superseded), never install v5 and keep serving v1."""
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            manager = await h.start_manager()
            h.publish(fleet_pkgs["1"], fleet_pkgs["5"])
            big = h.f.registry.get("digits", "5")
            assert len(big.chunks) > 10
            await h.start_sim(3)
            await h.wait_inventory(3)
            await h.seed("digits", "1")
            for d in h.sim.devices:  # type: ignore[union-attr]
                d.agent.s = replace(d.agent.s, chunk_window=2, chunk_timeout_s=0.5)
            served = _throttle_chunks(manager, limit=6)
            r = h.f.rollouts.start("digits", "5", Target.parse("all"),
                                   RolloutConfig(steps=(100.0,), bake_s=0.5, min_requests=0,
                                                 device_timeout_s=30))
            await h.until(lambda: served() >= 6, what="some chunks served")
            devices = [d.id for d in h.sim.devices]  # type: ignore[union-attr]
            await h.until(lambda: all(_last_swap(h, d).state is State.DOWNLOADING
                                      for d in devices), what="everyone downloading")
            h.f.rollouts.command(r.id, Command.ABORT)
            await h.wait_rollout(r.id, RState.ABORTED)
            await h.until(lambda: all(_last_swap(h, d).state is State.FAILED for d in devices),
                          what="every download given up")
            for d in devices:
                rec = _last_swap(h, d)
                assert rec.version == "5" and "superseded" in rec.reason, rec
                assert "downloading" in rec.history
                assert "5" not in h.installed(d, "digits")
                assert _serves(h, d, "1")
            assert served() <= 6
            # the abort is reported to the manager too
            await h.until(lambda: {e["device"] for e in h.events(r.id)
                                   if e["state"] == "failed"} == set(devices),
                          what="failures reported")

    asyncio.run(main())


def _throttle_chunks(manager: object, *, limit: int) -> object:
    """Let the manager's link publish ``limit`` artifact chunks, then hold the rest forever."""
    link = manager.link  # type: ignore[attr-defined]
    publish = link.publish
    count = [0]
    hold = asyncio.Event()

    async def throttled(topic: str, payload: bytes, **kw: object) -> None:
        if topic.endswith("/artifact/chunk"):
            if count[0] >= limit:
                await hold.wait()
            count[0] += 1
        await publish(topic, payload, **kw)

    link.publish = throttled
    return lambda: count[0]


def test_http_artifact_url(tmp_path: Path, broker: Broker, keys: Keys,
                           fleet_pkgs: dict[str, Path]) -> None:
    """The HTTP(S) delivery route: an unreachable URL fails the swap with its reason (and the
    agent goes on converging); a reachable one delivers the package without MQTT chunks."""
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"], fleet_pkgs["2"], fleet_pkgs["3"])
            await h.start_sim(2)
            await h.wait_inventory(2)
            await h.seed("digits", "1")
            devices = {d.id for d in h.sim.devices}  # type: ignore[union-attr]
            h.f.desired.artifact_url = f"http://127.0.0.1:{free_port()}/artifacts"
            dead, _ = deploy(h.f, "digits", "2", Target.parse("all"))
            await h.until(lambda: {e["device"] for e in h.events(dead)
                                   if e["state"] == "failed"} == devices,
                          what="the unreachable URL fails the swap")
            reason = next(e for e in h.events(dead) if e["state"] == "failed")["reason"]
            assert reason.startswith("download failed:") and "refused" in reason, reason
            assert all(_serves(h, d, "1") for d in devices)

            with _http_server(h.f.settings.artifacts) as (url, hits):
                h.f.desired.artifact_url = url
                did, _ = deploy(h.f, "digits", "3", Target.parse("all"),
                                probation={"seconds": 0.2})
                await h.until(lambda: h.committed(did) == devices, what="v3 over HTTP")
            v3 = h.f.registry.get("digits", "3")
            assert hits == [f"/{v3.sha256}.edgepkg"] * len(devices)
            assert all(_serves(h, d, "3") for d in devices)

    asyncio.run(main())


@contextmanager
def _http_server(root: Path) -> Iterator[tuple[str, list[str]]]:
    """A static file server for the artifacts directory, in a thread."""
    hits: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, directory=str(root), **kw)

        def do_GET(self) -> None:
            hits.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
