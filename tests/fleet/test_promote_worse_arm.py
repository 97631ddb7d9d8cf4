"""Issue 22, items 1 and 2, over a real mosquitto: an A/B experiment by device where B fails 20%
of requests. The arms partition the targeted devices; `experiment stop --promote b` refuses (exit
1, with the verdict) unless ``--force``; forced, no device commits B: the former B devices put it
back on probation under the promotion's limits and roll back, like the former A devices."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge_runtime.protocol.assignment import assign
from fleet.errors import PromoteWorseArm
from fleet.inventory import Target
from fleet.sim import SimKnobs
from tests.broker import Broker
from tests.conftest import Keys, build_package, run_cli
from tests.fleet.harness import FleetHarness

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]
N = 12


def _experiment_id(ids: list[str]) -> str:
    # >= 5 devices per arm: the per-device tests' minimum
    return next(f"ex-promote-{i}" for i in range(1000)
                if 5 <= sum(assign(f"ex-promote-{i}", d) == "b" for d in ids) <= 7)


def test_promote_worse_arm_rolls_back(tmp_path: Path, broker: Broker, keys: Keys) -> None:
    pkgs = [build_package(tmp_path / "pkgs", keys.signer, name="digits", version=v, seed=int(v))
            for v in ("1", "2")]

    async def main() -> None:
        h = FleetHarness(broker, tmp_path, keys.public)
        await h.start_manager()
        h.publish(*pkgs)
        await h.start_sim(N, knobs=SimKnobs(error_rates={"2": 0.2}))
        await h.wait_inventory(N)
        await h.seed("digits", "1")
        f = h.f
        ids = [d.id for d in h.sim.devices]  # type: ignore[union-attr]
        eid = _experiment_id(ids)
        b_devices = {d for d in ids if assign(eid, d) == "b"}
        f.experiments.start("digits", "1", "2", split=50.0, unit="device",
                            target=Target.parse("all"), experiment_id=eid)
        await h.until(lambda: {d for d, v in h.active("digits").items() if v == "2"}
                      == b_devices, what="arm B on v2")
        for _ in range(180):
            await asyncio.sleep(0.5)
            f.experiments.look()
            status = f.experiments.status(eid)
            if status["metrics"]["error_rate"]["decision"] not in ("continue",
                                                                    "not enough data yet"):
                break
        assert status["decision"] == "b worse", status
        arms = status["arms"]
        assert (arms["a"]["assigned"], arms["b"]["assigned"]) == (N - len(b_devices),
                                                                  len(b_devices))
        assert arms["a"]["devices"] <= arms["a"]["assigned"]
        assert arms["b"]["devices"] <= arms["b"]["assigned"]
        assert arms["a"]["devices"] + arms["b"]["devices"] <= N

        common = ["--db", h.workdir / "fleet.db", "--artifacts", h.workdir / "art",
                  "--trusted-keys", keys.public]
        shown = await asyncio.to_thread(run_cli, "fleet.cli", "experiment", "status", eid,
                                        *common)
        assert shown.returncode == 0, shown.stderr
        assert "{" not in shown.stdout and "devices assigned" in shown.stdout
        refused = await asyncio.to_thread(run_cli, "fleet.cli", "experiment", "stop", eid,
                                          "--promote", "b", *common)
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: ") and "b worse" in refused.stderr
        assert "error_rate" in refused.stderr and "--force" in refused.stderr
        assert f.experiments.get(eid)["state"] == "running"
        with pytest.raises(PromoteWorseArm):
            f.experiments.stop(eid, promote="b")

        forced = await asyncio.to_thread(run_cli, "fleet.cli", "experiment", "stop", eid,
                                         "--promote", "b", "--force", *common)
        assert forced.returncode == 0, forced.stderr
        assert "verdict: b worse" in forced.stdout
        deployment = f"{eid}.stop"
        # every device tried v2 under the promotion and rolled back to v1; none committed it
        await h.until(lambda: {e["device"] for e in h.events(deployment)
                               if e["state"] == "rolled_back"} == set(ids), timeout=90,
                      what=lambda: f"rolled back under {deployment}: {h.events(deployment)}")
        assert h.committed(deployment) == set()
        assert not [e for e in h.events(deployment) if e["state"] == "committed"]
        assert h.count("digits", "1") == N
        rejudged = [e for e in h.events(deployment)
                    if e["device"] in b_devices and e["state"] == "rolling_back"]
        assert {e["device"] for e in rejudged} == b_devices
        assert all("error rate" in e["reason"] for e in rejudged), rejudged
        await h.close()

    asyncio.run(main())
