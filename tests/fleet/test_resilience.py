"""Rollouts that survive trouble: the broker restarts, the manager restarts, a device is
offline (skipped or counted as failed, and catches up when it returns)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fleet.inventory import Target
from fleet.rollout.machine import RolloutConfig, RState
from tests.broker import Broker
from tests.conftest import Keys
from tests.fleet.harness import FleetHarness

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

CFG = RolloutConfig(steps=(30.0, 100.0), bake_s=0.5, min_requests=5, device_timeout_s=20,
                    probation={"seconds": 0.3})


def test_broker_restart_mid_rollout(tmp_path: Path, broker: Broker, keys: Keys,
                                    fleet_pkgs: dict[str, Path]) -> None:
    """The broker goes away (losing its sessions and retained messages) during the first bake
    and comes back on the same port: everyone reconnects by itself and the rollout completes."""
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"], fleet_pkgs["2"])
            await h.start_sim(10)
            await h.wait_inventory(10)
            await h.seed("digits", "1")
            r = h.f.rollouts.start("digits", "2", Target.parse("all"), CFG)
            await h.wait_rollout(r.id, RState.BAKING)
            broker.stop()
            await asyncio.sleep(1.0)
            assert h.manager is not None and not h.manager.link.connected
            broker.start()
            await h.until(lambda: h.manager is not None and h.manager.link.connected,
                          what="the manager reconnects")
            done = await h.wait_rollout(r.id, RState.COMPLETED, RState.ROLLED_BACK,
                                        RState.PAUSED, timeout=40)
            assert done.state is RState.COMPLETED, done.reason
            await h.until(lambda: h.count("digits", "2") == 10, what="v2 everywhere")
            await h.until(lambda: all(d.agent.link.connected for d in h.sim.devices),  # type: ignore[union-attr]
                          what="every device reconnected")
            online = [d.id for d in h.f.inventory.devices() if d.status == "online"]
            assert len(online) == 10

    asyncio.run(main())


def test_manager_restart_mid_rollout(tmp_path: Path, broker: Broker, keys: Keys,
                                     fleet_pkgs: dict[str, Path]) -> None:
    """The manager stops during the first bake and a new one starts on the same database: the
    rollout continues where it was, and no device is ever told two different things under one
    generation, nor moved back and forth."""
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            spy = await h.start_spy()
            h.publish(fleet_pkgs["1"], fleet_pkgs["2"])
            await h.start_sim(12)
            await h.wait_inventory(12)
            await h.seed("digits", "1")
            r = h.f.rollouts.start("digits", "2", Target.parse("all"), CFG)
            await h.wait_rollout(r.id, RState.BAKING)
            await h.stop_manager()
            before = h.rollout(r.id)
            canary = _on(h, "2")
            assert canary
            sent_before = {d: list(msgs) for d, msgs in spy.got.items()}
            await asyncio.sleep(1.0)
            await h.start_manager()
            await asyncio.sleep(0.5)
            after = h.rollout(r.id)
            assert after.step >= before.step and after.history[:len(before.history)] == \
                before.history
            assert canary <= _on(h, "2")
            done = await h.wait_rollout(r.id, RState.COMPLETED, RState.ROLLED_BACK,
                                        RState.PAUSED, timeout=40)
            assert done.state is RState.COMPLETED, done.reason
            await h.until(lambda: h.count("digits", "2") == 12, what="v2 everywhere")
            spy.check_generations()
            assert set(spy.got) == {d.id for d in h.sim.devices}  # type: ignore[union-attr]
            for device, msgs in spy.got.items():
                versions = spy.versions(device, "digits")
                # v1 (seed), then v2: never back to v1, whatever the restart did
                assert versions == sorted(versions, key=lambda v: v or ""), (device, versions)
                assert versions[-1] == "2"
                # two things to do (the seed, the rollout), so two generations: the restarted
                # manager re-sent what it had sent, it did not re-decide
                assert len({g for g, _m in msgs}) == 2, (device, msgs)
            for device in canary:
                resent = [g for g, _m in spy.got[device][len(sent_before[device]):]]
                assert set(resent) <= {sent_before[device][-1][0]}, (device, resent)

    asyncio.run(main())


@pytest.mark.parametrize("on_timeout", ["skip", "fail"])
def test_offline_device_during_rollout(tmp_path: Path, broker: Broker, keys: Keys,
                                       fleet_pkgs: dict[str, Path], on_timeout: str) -> None:
    """A device drops off the network before the rollout. skip: the rollout completes without
    waiting for it; fail: its timeout fails the gate and the rollout rolls back. Either way,
    when the device returns it converges on what its desired state now says."""
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"], fleet_pkgs["2"])
            await h.start_sim(6)
            await h.wait_inventory(6)
            await h.seed("digits", "1")
            gone = h.sim.devices[3].id  # type: ignore[union-attr]
            await h.drop_device(gone)
            await h.until(lambda: h.f.inventory.get(gone).status == "offline",
                          what="the will marks it offline")
            cfg = RolloutConfig(steps=(50.0, 100.0), bake_s=0.3, min_requests=5,
                                device_timeout_s=3.0, on_timeout=on_timeout,
                                probation={"seconds": 0.3})
            r = h.f.rollouts.start("digits", "2", Target.parse("all"), cfg)
            done = await h.wait_rollout(r.id, RState.COMPLETED, RState.ROLLED_BACK,
                                        RState.PAUSED)
            want = "1"
            if on_timeout == "skip":
                assert done.state is RState.COMPLETED, done.reason
                want = "2"
            else:
                assert done.state is RState.ROLLED_BACK
                assert gone in done.reason and "failed" in done.reason
            back = await h.revive_device(gone)
            await h.until(lambda: h.active("digits").get(gone) == want,
                          what=f"{gone} back on v{want}")
            await h.until(lambda: h.count("digits", want) == 6, what=f"v{want} everywhere")
            await h.until(lambda: h.f.inventory.get(gone).status == "online",
                          what=f"{gone} online again")
            if on_timeout == "skip":
                await h.until(lambda: h.f.db.query(
                    "SELECT state, deployment FROM device_state WHERE device = ?",
                    (gone,))[0][:] == ("committed", r.id), what=f"{gone} reports committed")
            else:
                assert "2" not in {m.version for m in back.runtime.store.installed("digits")}

    asyncio.run(main())


def test_events_lost_in_a_broker_restart_are_recovered(tmp_path: Path, broker: Broker,
                                                       keys: Keys,
                                                       fleet_pkgs: dict[str, Path]) -> None:
    """The manager is down while the broker restarts without persistence: its session is gone,
    so the 'committed' events the canary sends meanwhile reach nobody. The devices' retained
    reports carry the same news, and the rollout goes on instead of timing them out."""
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"], fleet_pkgs["2"])
            await h.start_sim(6)
            await h.wait_inventory(6)
            await h.seed("digits", "1")
            cfg = RolloutConfig(steps=(50.0, 100.0), bake_s=0.3, min_requests=5,
                                device_timeout_s=30, probation={"seconds": 1.5})
            r = h.f.rollouts.start("digits", "2", Target.parse("all"), cfg)
            await h.until(lambda: bool(h.f.db.query(
                "SELECT 1 FROM device_state WHERE deployment = ? AND state = 'probation'",
                (r.id,))), what="the canary in probation")
            canary = _on(h, "2")
            assert canary
            await h.stop_manager()
            broker.stop()
            broker.start()
            await h.until(lambda: all(_swap_state(h, d) == "committed" and _events_sent(h, d)
                                      for d in canary),
                          what="the canary commits and sends its events (to nobody)")
            await h.start_manager()
            done = await h.wait_rollout(r.id, RState.COMPLETED, RState.ROLLED_BACK,
                                        RState.PAUSED, timeout=20)
            assert done.state is RState.COMPLETED, done.reason
            lost = {e["device"] for e in h.events(r.id) if e["state"] == "committed"}
            assert not canary & lost  # the events really were lost

    asyncio.run(main())


def _on(h: FleetHarness, version: str) -> set[str]:
    """Devices whose assignment is this version of digits."""
    return {d for d, v in h.f.desired.assigned_devices("digits").items() if v == version}


def _events_sent(h: FleetHarness, device: str) -> bool:
    """The device's outbox holds no unsent swap event (the broker acknowledged them all)."""
    return not h.device(device).runtime.store.db.query(
        "SELECT 1 FROM outbox WHERE kind = 'event' AND sent_at IS NULL")


def _swap_state(h: FleetHarness, device: str) -> str:
    from edge_runtime.swap import records

    return records.recent(h.device(device).runtime.store.db, "digits", limit=1)[0].state.value
