"""provision.sh prints the `edgectl devices add` line that enrolls the device it provisioned;
run as printed (with the manager's database), it puts the device in the inventory."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from fleet.core import Fleet
from fleet.settings import ManagerSettings
from tests.conftest import run_cli

SCRIPT = Path(__file__).resolve().parents[2] / "devices" / "systemd" / "provision.sh"


def test_provision_prints_the_enrollment_command(tmp_path: Path) -> None:
    res = subprocess.run(["sh", str(SCRIPT), "--device-id", "pi-07", "--broker", "b.example",
                          "--group", "kitchen", "--tags", "camera,door", "--config",
                          str(tmp_path / "config.toml"), "--keys", str(tmp_path / "keys"),
                          "--store", str(tmp_path / "store"), "--owner-group", "no-such-group"],
                         capture_output=True, text=True, timeout=30, check=True)
    line = next(x for x in res.stdout.splitlines() if "edgectl devices add" in x)
    args = shlex.split(line.replace("FLEET.db", str(tmp_path / "fleet.db")))
    assert args[:3] == ["edgectl", "devices", "add"]
    added = run_cli("fleet.cli", *args[1:], "--artifacts", tmp_path / "art")
    assert added.returncode == 0, added.stderr
    dev = Fleet(ManagerSettings(db=tmp_path / "fleet.db", artifacts=tmp_path / "art")
                ).inventory.get("pi-07")
    assert (dev.group, dev.tags, dev.status) == ("kitchen", ("camera", "door"), "unknown")
