"""`edgectl` on a fleet database, the way an operator runs it (a fresh process per command): models,
deploy, rollouts and their commands (applied by the manager's tick), devices, and bad input
(exit 1, one line)."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.protocol import messages as m
from edge_runtime.protocol.link import Message
from edge_runtime.protocol.memory import InMemoryBroker, InMemoryLink
from edge_runtime.protocol.topics import TopicScheme
from fleet.core import Fleet
from fleet.manager import FleetManager
from fleet.settings import ManagerSettings
from tests.conftest import Keys, run_cli

pytestmark = pytest.mark.timeout(120)


class Edgectl:
    def __init__(self, root: Path, keys: Keys) -> None:
        self.db, self.art = root / "fleet.db", root / "art"
        self.common = ["--db", str(self.db), "--artifacts", str(self.art),
                       "--trusted-keys", str(keys.public)]

    def __call__(self, *args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
        res = run_cli("fleet.cli", *args, *self.common)
        if ok:
            assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res

    def json(self, *args: str | Path) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def parallel(self, *commands: tuple[str | Path, ...]) -> list[str]:
        """Read-only commands at once (each is a fresh interpreter): their stdouts."""
        with ThreadPoolExecutor(len(commands)) as pool:
            return [r.stdout for r in pool.map(lambda args: self(*args), commands)]

    def fleet(self) -> Fleet:
        return Fleet(ManagerSettings(db=self.db, artifacts=self.art))


def _devices_report(fleet: Fleet) -> None:
    """Three devices say hello through the manager's real ingest path (no broker needed)."""
    manager = FleetManager(fleet, lambda **kw: InMemoryLink(InMemoryBroker(), **kw))
    t = TopicScheme("default")
    msgs = []
    for i, group in enumerate(("edge", "edge", "lab")):
        dev = f"dev-{i}"
        report = m.ModelReport("1", None, ("1",), "committed", "dep-x")
        msgs += [Message(t.status(dev), m.encode(m.Status("online", 1))),
                 Message(t.reported(dev), m.encode(m.Reported(
                     0, 1, {"digits": report}, ("cam",) if i else (), group, "rpi4")))]
    manager.ingest(msgs)
    assert manager.stats["dropped"] == 0


def test_edgectl_end_to_end(tmp_path: Path, keys: Keys, fleet_pkgs: dict[str, Path]) -> None:
    ctl = Edgectl(tmp_path, keys)
    pub = ctl.json("models", "publish", fleet_pkgs["1"])
    assert (pub["name"], pub["version"]) == ("digits", "1") and len(pub["sha256"]) == 64
    assert "published digits 2" in ctl("models", "publish", fleet_pkgs["2"]).stdout
    assert ctl("models", "alias", "digits", "production", "1").stdout.strip() == \
        "digits:production -> 1"
    again, listed, listing, shown, by_alias = ctl.parallel(
        ("models", "publish", fleet_pkgs["1"], "--json"),  # idempotent
        ("models", "list", "--json"), ("models", "list"), ("models", "show", "digits", "--json"),
        ("models", "show", "digits", "production", "--json"))
    assert json.loads(again)["sha256"] == pub["sha256"]
    assert [(r["name"], r["version"]) for r in json.loads(listed)] == [
        ("digits", "1"), ("digits", "2")]
    assert "digits" in listing and "production" in listing
    assert json.loads(shown)["aliases"] == {"production": "1"}
    assert json.loads(shown)["versions"][1]["lineage"]["format"] == "onnx"
    assert json.loads(by_alias)["versions"][0]["version"] == "1"

    assert "added 3 device(s)" in ctl("devices", "add", "dev-0", "dev-1", "dev-2").stdout
    fleet = ctl.fleet()
    _devices_report(fleet)
    every, edge, cam, table, dev1, dev1_text = ctl.parallel(
        ("devices", "list", "--json"), ("devices", "list", "--to", "group:edge", "--json"),
        ("devices", "list", "--to", "tag:cam", "--json"), ("devices", "list"),
        ("devices", "show", "dev-1", "--json"), ("devices", "show", "dev-1"))
    assert [d["id"] for d in json.loads(every)] == ["dev-0", "dev-1", "dev-2"]
    assert json.loads(every)[0]["models"] == {"digits": {"active": "1", "state": "committed"}}
    assert [d["id"] for d in json.loads(edge)] == ["dev-0", "dev-1"]
    assert [d["id"] for d in json.loads(cam)] == ["dev-1", "dev-2"]
    assert "dev-2" in table and "digits=1(committed)" in table
    assert (json.loads(dev1)["group"], json.loads(dev1)["status"]) == ("edge", "online")
    assert "dev-1  online" in dev1_text

    dep = ctl.json("deploy", "digits", "1", "--to", "group:edge", "--probation-s", "5",
                   "--probation-min-requests", "0")
    assert dep["deployment"].startswith("dep-") and dep["devices"] == ["dev-0", "dev-1"]
    assert dep["probation"] == {"seconds": 5.0, "min_requests": 0}
    ro = ctl.json("rollout", "start", "digits", "2", "--to", "all", "--steps", "50",
                  "--bake", "500ms", "--min-requests", "0", "--on-timeout", "skip")
    rid = ro["id"]
    assert (ro["version"], ro["from_version"]) == ("2", "1")
    status, listed_ro, latest = ctl.parallel(("rollout", "status", rid, "--json"),
                                             ("rollout", "list", "--json"), ("rollout", "status"))
    assert json.loads(status)["state"] == "deploying"
    assert json.loads(status)["steps"] == [50.0, 100.0]
    assert json.loads(status)["config"]["bake_s"] == 0.5
    assert json.loads(status)["config"]["on_timeout"] == "skip"
    assert [r["id"] for r in json.loads(listed_ro)] == [rid]
    assert rid in latest and "step 1/2 (50%)" in latest

    def command(cmd: str, rollout: str = rid) -> str:
        assert "requested" in ctl("rollout", cmd, rollout).stdout
        fleet.rollouts.tick()  # what the running manager does on its next tick
        return fleet.rollouts.get(rollout).state.value

    assert command("pause") == "paused"
    assert command("resume") == "deploying"
    assert command("promote") == "completed"
    assert fleet.registry.aliases("digits")["production"] == "2"
    assert set(fleet.desired.assigned_devices("digits").values()) == {"2"}

    second = ctl.json("rollout", "start", "digits", "1", "--steps", "exp:25", "--bake", "1m")
    assert fleet.rollouts.get(second["id"]).config.steps == (25.0, 50.0, 100.0)
    conflict = ctl("rollout", "start", "digits", "1", ok=False)
    assert conflict.returncode == 1 and "still running" in conflict.stderr
    assert command("abort", second["id"]) == "aborted"
    fleet.db.close()


BAD: list[tuple[tuple[str, ...], str]] = [
    (("deploy", "digits", "1", "--to", "planet:mars"), "target 'planet:mars'"),
    (("rollout", "start", "digits", "1", "--to", "group:"), "target 'group:'"),
    (("deploy", "nosuch", "1", "--to", "all"), "model nosuch 1 is not in the registry"),
    (("deploy", "digits", "1", "--to", "all", "--probation-min-requests", "-1"),
     "must not be negative"),
    (("deploy", "digits", "1", "--to", "all", "--probation-s", "nan"), "must not be negative"),
    (("rollout", "start", "digits", "7"), "model digits 7 is not in the registry"),
    (("models", "alias", "digits", "production", "9"), "model digits 9 is not in the registry"),
    (("rollout", "status", "ro-nope"), "no rollout 'ro-nope'"),
    (("rollout", "abort", "ro-nope"), "no rollout 'ro-nope'"),
    (("rollout", "start", "digits", "1", "--steps", "50,10"), "--steps"),
    (("rollout", "start", "digits", "1", "--steps", "abc"), "--steps"),
    (("rollout", "start", "digits", "1", "--bake", "ten minutes"), "duration"),
    (("devices", "show", "nobody"), "device 'nobody' is not in the inventory"),
]


def test_edgectl_bad_input(tmp_path: Path, keys: Keys, fleet_pkgs: dict[str, Path]) -> None:
    ctl = Edgectl(tmp_path, keys)
    ctl("models", "publish", fleet_pkgs["1"])
    unsigned = ctl("models", "publish", fleet_pkgs["4"], ok=False)
    assert unsigned.returncode == 1 and "sign" in unsigned.stderr.lower()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: ctl(*case[0], ok=False), BAD))
    for (args, expected), res in zip(BAD, results, strict=True):
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, res.stderr)
        assert expected in lines[0], (args, lines[0])
        assert "Traceback" not in res.stderr
    # --allow-unsigned is a development escape hatch, and says so in the output
    dev = ctl("models", "publish", fleet_pkgs["4"], "--allow-unsigned")
    assert "signed by nobody" in dev.stdout
