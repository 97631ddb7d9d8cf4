"""The fleet end to end over a real mosquitto: deploy, canary rollout, broken model rollback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fleet.deploy import deploy
from fleet.inventory import Target
from fleet.rollout.machine import RolloutConfig, RState, fraction
from fleet.sim import SimKnobs
from tests.broker import Broker
from tests.conftest import Keys, build_package
from tests.fleet.harness import FleetHarness

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


@pytest.fixture
def packages(tmp_path: Path, keys: Keys) -> dict[str, Path]:
    return {v: build_package(tmp_path / "pkgs", keys.signer, name="digits", version=v,
                             seed=int(v)) for v in ("1", "2", "3")}


def test_rollout_good_then_broken(tmp_path: Path, broker: Broker, keys: Keys,
                                  packages: dict[str, Path]) -> None:
    async def main() -> None:
        h = FleetHarness(broker, tmp_path, keys.public)
        await h.start_manager()
        assert h.fleet is not None
        for pkg in packages.values():
            h.fleet.registry.publish(pkg)
        sim = await h.start_sim(12, knobs=SimKnobs(failing=frozenset({"3"})))
        await h.until(lambda: len(h.fleet.inventory.devices()) == 12, what="inventory")  # type: ignore[union-attr]
        deploy(h.fleet, "digits", "1", Target.parse("all"))
        h.fleet.registry.set_alias("digits", "production", "1")
        await h.until(lambda: h.count("digits", "1") == 12, what="v1 everywhere")
        cfg = RolloutConfig(steps=(25.0, 50.0, 100.0), bake_s=0.5, min_requests=5,
                            device_timeout_s=20, probation={"seconds": 0.5})
        r = h.fleet.rollouts.start("digits", "2", Target.parse("all"), cfg)
        await h.until(lambda: h.fleet.rollouts.get(r.id).state is RState.COMPLETED,  # type: ignore[union-attr]
                      timeout=60, what="v2 rollout completes")
        await h.until(lambda: h.count("digits", "2") == 12, what="v2 everywhere")
        assert h.fleet.registry.aliases("digits")["production"] == "2"
        # a broken v3 is stopped at the first step and rolled back; nobody else sees it
        r3 = h.fleet.rollouts.start("digits", "3", Target.parse("all"), cfg)
        await h.until(lambda: h.fleet.rollouts.get(r3.id).state is RState.ROLLED_BACK,  # type: ignore[union-attr]
                      timeout=60, what="v3 rolled back")
        assert "failed" in h.fleet.rollouts.get(r3.id).reason
        await asyncio.sleep(1.0)
        assert h.count("digits", "2") == 12
        touched = {row[0] for row in h.fleet.db.query(
            "SELECT DISTINCT device FROM events WHERE deployment = ?", (r3.id,))}
        first_step = {d.id for d in sim.devices if fraction(r3.id, d.id) < 0.25} or {
            min((d.id for d in sim.devices), key=lambda i: fraction(r3.id, i))}
        assert touched and touched <= first_step  # devices outside the canary never got v3
        for d in sim.devices:
            installed = {m.version for m in d.runtime.store.installed("digits")}
            assert ("3" in installed) == (d.id in touched) or "3" not in installed
        await sim.stop()
        await h.stop_manager()

    asyncio.run(main())
