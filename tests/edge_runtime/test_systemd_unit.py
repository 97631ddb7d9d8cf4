"""devices/systemd/edge-runtime.service: a Type=notify unit with a watchdog and a sandbox, clean
under `systemd-analyze verify` (with ExecStart pointed at this venv's console script, since the
device path /opt/edge-runtime does not exist here) and `systemd-analyze security --offline`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "devices" / "systemd" / "edge-runtime.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)")


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_notify_watchdog_and_sandbox() -> None:
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert re.fullmatch(r"\d+s", d["WatchdogSec"][0]) and d["Restart"] == ["always"]
    assert d["User"] == ["edge"] and d["NoNewPrivileges"] == ["yes"]
    assert d["ProtectSystem"] == ["strict"] and d["CapabilityBoundingSet"] == [""]
    assert re.fullmatch(r"\d+[MG]", d["MemoryMax"][0])
    # The store provision.sh configures is the only writable place, and it is the state dir.
    provision = (UNIT.parent / "provision.sh").read_text()
    store = re.search(r'store="([^"]+)"', provision)
    assert store is not None
    writable = d["ReadWritePaths"][0].split()
    assert writable == ["/var/lib/edge-runtime"] and store[1].startswith(writable[0] + "/")
    assert d["StateDirectory"] == ["edge-runtime"]


def _local_copy(tmp_path: Path, text: str) -> Path:
    """The unit with only ExecStart's program replaced by this venv's edge-runtime."""
    program = Path(sys.executable).parent / "edge-runtime"
    assert program.exists()
    local, n = re.subn(r"^ExecStart=\S+", f"ExecStart={program}", text, flags=re.M)
    assert n == 1
    path = tmp_path / "edge-runtime.service"
    path.write_text(local)
    return path


def _analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    proc = _analyze("verify", "--man=no", _local_copy(tmp_path, UNIT.read_text()))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    # The check sees mistakes: a misspelt type is reported (systemd still exits 0 on it).
    bad = _local_copy(tmp_path, UNIT.read_text().replace("Type=notify", "Type=notifyy"))
    assert "notifyy" in _analyze("verify", "--man=no", bad).stderr


@needs_analyze
def test_systemd_analyze_security(tmp_path: Path) -> None:
    proc = _analyze("security", "--offline=true", _local_copy(tmp_path, UNIT.read_text()))
    if "--offline" in proc.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {proc.stderr.strip()}")
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert level is not None, proc.stdout[-2000:] + proc.stderr
    assert float(level[1]) <= 4.0, proc.stdout  # "OK" in systemd's words
