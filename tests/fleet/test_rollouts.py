"""Canary rollouts over a real mosquitto: a good one at 50 devices, a broken model, a metric gate
(rollback, pause/resume/abort), and devices that join the targeted group mid-rollout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fleet.inventory import Target
from fleet.rollout.machine import Command, RolloutConfig, RState, canary_set
from fleet.sim import SimKnobs
from tests.broker import Broker
from tests.conftest import Keys
from tests.fleet.harness import FleetHarness

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

FAST = RolloutConfig(steps=(10.0, 50.0, 100.0), bake_s=0.5, min_requests=5,
                     device_timeout_s=20, probation={"seconds": 0.3})


def test_good_rollout_to_50_devices(tmp_path: Path, broker: Broker, keys: Keys,
                                    fleet_pkgs: dict[str, Path]) -> None:
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"], fleet_pkgs["2"])
            await h.start_sim(50, rps=8.0, telemetry_interval_s=0.4)
            await h.wait_inventory(50)
            await h.seed("digits", "1")
            r = h.f.rollouts.start("digits", "2", Target.parse("all"), FAST)
            assert r.from_version == "1"
            done = await h.wait_rollout(r.id, RState.COMPLETED, RState.ROLLED_BACK,
                                        RState.PAUSED, timeout=40)
            assert done.state is RState.COMPLETED, done.reason
            assert [e.split("->")[1] for e in done.history] == [
                "baking", "deploying", "baking", "deploying", "baking", "completed"]
            await h.until(lambda: h.count("digits", "2") == 50, what="v2 on all 50")
            assert h.f.registry.aliases("digits")["production"] == "2"
            status = h.f.rollouts.status(r.id)
            assert status["device_states"] == {"committed": 50}
            assert status["canary"]["requests"] >= FAST.min_requests

    asyncio.run(main())


def test_broken_model_stopped_at_first_step(tmp_path: Path, broker: Broker, keys: Keys,
                                            fleet_pkgs: dict[str, Path]) -> None:
    """v3 fails to load: the first step fails, the canary gets v2 back, and no device outside
    the first step is ever sent v3 (nor installs it)."""
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            spy = await h.start_spy()
            h.publish(fleet_pkgs["2"], fleet_pkgs["3"])
            sim = await h.start_sim(16, knobs=SimKnobs(failing=frozenset({"3"})))
            await h.wait_inventory(16)
            await h.seed("digits", "2")
            r = h.f.rollouts.start("digits", "3", Target.parse("all"), FAST)
            done = await h.wait_rollout(r.id, RState.ROLLED_BACK, RState.COMPLETED,
                                        RState.PAUSED)
            assert done.state is RState.ROLLED_BACK
            assert done.step == 0 and "failed or rolled back" in done.reason
            obs = h.f.rollouts._observe(done, 0.0, None)
            first_step = canary_set(done, obs.devices)
            assert 1 <= len(first_step) <= 8  # 10% of 16, by hash
            await h.until(lambda: all(v == "2" for v in h.active("digits").values()),
                          what="v2 everywhere after the rollback")
            assert spy.ever_sent("digits", "3") == first_step
            await h.until(lambda: any(e["state"] == "failed" for e in h.events(r.id)),
                          what="the failure event (the retained report may come first)")
            failed = {e["device"] for e in h.events(r.id) if e["state"] == "failed"}
            assert failed <= first_step
            assert all("simulated load failure" in e["reason"] for e in h.events(r.id)
                       if e["state"] == "failed")
            for d in sim.devices:
                if d.id not in first_step:
                    assert "3" not in h.installed(d.id, "digits"), d.id
            # the canary's last desired state is v2 again, under the rollback deployment
            await h.until(lambda: all(spy.versions(d, "digits")[-1] == "2" for d in first_step),
                          what="the canary sent v2 again")
            for d in first_step:
                assert h.f.desired._models(d)["digits"]["deployment"] == f"{r.id}.rollback"
            spy.check_generations()

    asyncio.run(main())


LENIENT = {"seconds": 0.3, "max_error_rate": 1.0, "max_error_increase": 1.0}


def test_metric_gate_rolls_back_or_pauses(tmp_path: Path, broker: Broker, keys: Keys,
                                          fleet_pkgs: dict[str, Path]) -> None:
    """v2 answers half of its requests with errors (the devices' probation is told to let it
    through): the canary-vs-control gate fails. rollback: the canary gets v1 back. pause: it
    holds; resume bakes again (and pauses again); abort gives everyone v1 back."""
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"], fleet_pkgs["2"])
            await h.start_sim(10, knobs=SimKnobs(error_rates={"2": 0.5}))
            await h.wait_inventory(10)
            await h.seed("digits", "1")
            cfg = RolloutConfig(steps=(30.0, 100.0), bake_s=0.5, min_requests=5,
                                device_timeout_s=20, probation=LENIENT)
            r = h.f.rollouts.start("digits", "2", Target.parse("all"), cfg)
            done = await h.wait_rollout(r.id, RState.ROLLED_BACK, RState.COMPLETED)
            assert done.state is RState.ROLLED_BACK and done.step == 0
            assert "error" in done.reason and "canary" in done.reason, done.reason
            await h.until(lambda: h.count("digits", "1") == 10, what="v1 back everywhere")
            assert h.f.registry.aliases("digits")["production"] == "1"

            p = h.f.rollouts.start("digits", "2", Target.parse("all"),
                                   RolloutConfig(**{**cfg.to_dict(), "on_failure": "pause"}))
            paused = await h.wait_rollout(p.id, RState.PAUSED, RState.ROLLED_BACK)
            assert paused.state is RState.PAUSED and paused.paused_from is RState.BAKING
            assert "error" in paused.reason and "canary" in paused.reason, paused.reason
            canary = {d for d, v in h.active("digits").items() if v == "2"}
            assert 1 <= len(canary) < 10  # held at the first step, nobody reverted
            await asyncio.sleep(0.5)
            assert h.rollout(p.id).state is RState.PAUSED  # stays paused by itself

            h.f.rollouts.command(p.id, Command.RESUME)
            await h.until(lambda: "resume->baking" in h.rollout(p.id).history,
                          what="resume applied by the manager's tick")
            again = await h.wait_rollout(p.id, RState.PAUSED)
            assert again.history[-1] == "gate_fail_pause->paused"

            h.f.rollouts.command(p.id, Command.ABORT)
            aborted = await h.wait_rollout(p.id, RState.ABORTED)
            assert aborted.reason == "aborted"
            await h.until(lambda: h.count("digits", "1") == 10, what="v1 back after abort")
            assert h.f.registry.aliases("digits")["production"] == "1"
            assert not h.f.db.query("SELECT 1 FROM rollout_devices WHERE rollout = ?", (p.id,))

    asyncio.run(main())


def test_devices_joining_mid_rollout(tmp_path: Path, broker: Broker, keys: Keys,
                                     fleet_pkgs: dict[str, Path]) -> None:
    """Devices that join the targeted group during a rollout end on the new version; devices
    of another group keep the standing deployment; a device joining after it completed gets
    the completed rollout's version."""
    async def main() -> None:
        async with FleetHarness(broker, tmp_path, keys.public) as h:
            await h.start_manager()
            h.publish(fleet_pkgs["1"], fleet_pkgs["2"])
            await h.start_sim(8, groups=("edge",))
            await h.wait_inventory(8)
            await h.seed("digits", "1")
            cfg = RolloutConfig(steps=(50.0, 100.0), bake_s=1.5, min_requests=5,
                                device_timeout_s=20, probation={"seconds": 0.3})
            r = h.f.rollouts.start("digits", "2", Target.parse("group:edge"), cfg)
            await h.wait_rollout(r.id, RState.BAKING)
            joined = await h.add_devices(3, groups=("edge",))
            others = await h.add_devices(2, groups=("other",))
            done = await h.wait_rollout(r.id, RState.COMPLETED, RState.ROLLED_BACK,
                                        RState.PAUSED)
            assert done.state is RState.COMPLETED, done.reason
            late = await h.add_devices(1, groups=("edge",))
            late_other = await h.add_devices(1, groups=("other",))
            edge = [*(d.id for d in h.sim.devices[:8]), *(d.id for d in joined + late)]  # type: ignore[union-attr]
            other = [d.id for d in others + late_other]
            await h.until(lambda: all(h.active("digits")[d] == "2" for d in edge),
                          what="every edge device on v2")
            await h.until(lambda: all(h.active("digits")[d] == "1" for d in other),
                          what="other devices on v1")
            assert {e["device"] for e in h.events(r.id)} >= {d.id for d in joined}

    asyncio.run(main())
