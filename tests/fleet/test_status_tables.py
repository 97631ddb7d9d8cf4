"""Issue 22.2: `edgectl experiment status` and `edgectl rollout status` print aligned tables, and a
metric without data says "no data" (not a dict repr, not `[-, -]` with p-value 1); arms are the
targeted devices split by the shared assignment, so they add up."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.protocol.assignment import assign
from fleet.inventory import Target
from tests.conftest import Keys
from tests.fleet.test_cli_fleet import Edgectl

pytestmark = pytest.mark.timeout(120)


def test_status_tables_without_data(tmp_path: Path, keys: Keys,
                                    fleet_pkgs: dict[str, Path]) -> None:
    ctl = Edgectl(tmp_path, keys)
    for v in ("1", "2"):
        ctl("models", "publish", fleet_pkgs[v])
    devices = [f"dev-{i:02d}" for i in range(20)]
    ctl("devices", "add", *devices)
    ctl("deploy", "digits", "1", "--to", "all")
    exp = ctl.json("experiment", "start", "digits", "--a", "1", "--b", "2", "--split", "50")
    fleet = ctl.fleet()
    fleet.experiments.look()
    status = fleet.experiments.status(exp["id"])
    b = sum(assign(exp["id"], d) == "b" for d in devices)
    assert (status["arms"]["a"]["assigned"], status["arms"]["b"]["assigned"]) == (20 - b, b)
    assert status["arms"]["a"]["devices"] == status["arms"]["b"]["devices"] == 0
    text = ctl("experiment", "status", exp["id"]).stdout
    assert "{" not in text and "[-, -]" not in text
    assert f"A    1        {20 - b:<16}  0" in text and f"B    2        {b:<16}  0" in text
    for metric in ("error_rate", "latency_ms", "accuracy"):
        line = next(ln for ln in text.splitlines() if ln.startswith(metric))
        assert "no data" in line and " 1 " not in line, line
    # no test result to promote against: promoting either arm needs no --force
    assert fleet.experiments.stop(exp["id"], promote="b", force=False)["state"] == "stopped"

    ro = ctl.json("rollout", "start", "digits", "2", "--to", "all", "--steps", "50",
                  "--bake", "1m")
    text = ctl("rollout", "status", ro["id"]).stdout
    assert "{" not in text and "None" not in text
    assert [ln.split()[:3] for ln in text.splitlines() if ln.startswith(("canary", "control"))
            ] == [["canary", "no", "data"], ["control", "no", "data"]]
    assert Target.parse("all").matches(fleet.inventory.get(devices[0]))
