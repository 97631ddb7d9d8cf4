"""Kill -9 in every state a swap passes through, then start the real daemon on the store.

The CLI (no daemon running, so it swaps on the store itself) runs with EDGE_FAULT_KILL_AT=<state>
and SIGKILLs itself right after the swap record enters that state. The daemon then starts on the
store: it must finish or undo the swap, serve a valid version with that version's math, leave no
swap under way and no half-unpacked directory behind.

Before SWITCHING the active pointer still names 1; recovery resumes the swap, so an install ends
INSTALLED (1 serves) and an activation killed in LOADING is retried and ends COMMITTED (2 serves;
a version that kills the process on every load fails after MAX_LOAD_ATTEMPTS, see the runner
tests). From SWITCHING on the new version serves. ROLLING_BACK/ROLLED_BACK are reached by
``rollback``: the CLI's probation passes at once, so an activation cannot roll itself back here.
DOWNLOADING is the fleet agent's (no CLI command starts there).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.runtime import Runtime
from edge_runtime.store.models import ModelStore
from edge_runtime.swap import records
from tests.conftest import Keys, build_package

X = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]]
KILLED = -signal.SIGKILL


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pkgs")
    pkgs = {v: build_package(d, keys.signer, version=v, seed=int(v)) for v in ("1", "2")}
    pkgs["tampered"] = d / "tampered" / pkgs["2"].name
    pkgs["tampered"].parent.mkdir()
    with zipfile.ZipFile(pkgs["2"]) as src, zipfile.ZipFile(pkgs["tampered"], "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data[:-1] + b"!" if info.filename == "model.onnx" else data)
    return pkgs


def _math(packages: dict[str, Path], keys: Keys) -> dict[str, np.ndarray]:
    """What each version computes for X: x @ w + b with the weights in its package."""
    import onnx
    from onnx import numpy_helper

    from edge_runtime.package import open_package

    out = {}
    for v in ("1", "2"):
        model = onnx.load_from_string(open_package(packages[v], keys.trust).read("model.onnx"))
        init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        out[v] = np.asarray(X, np.float32) @ init["w"] + init["b"]
    return out


@dataclass(frozen=True)
class Kit:
    keys: Keys
    packages: dict[str, Path]
    expected: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def kit(packages: dict[str, Path], keys: Keys) -> Kit:
    return Kit(keys, packages, _math(packages, keys))


@dataclass(frozen=True)
class Crash:
    kind: str  # install | activate | rollback
    kill_at: str
    history: str  # of the swap record once the daemon has started
    serves: str
    fault: str = ""  # tampered (package) | corrupt-1 / corrupt-2 (unpacked model file) |
    # half-unpacked (the process died while extracting: a staging dir is left behind)

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.kill_at}" + (f"-{self.fault}" if self.fault else "")


INSTALL = "verifying installing installed"
ACTIVATE = "loading switching probation committed"
CRASHES = [
    *(Crash("install", s, INSTALL, "1") for s in INSTALL.split()),
    Crash("install", "installing", INSTALL, "1", fault="half-unpacked"),
    Crash("install", "failed", "verifying failed", "1", fault="tampered"),
    *(Crash("activate", s, ACTIVATE, "2") for s in ACTIVATE.split()),
    Crash("activate", "failed", "loading failed", "1", fault="corrupt-2"),
    Crash("rollback", "rolling_back", "rolling_back rolled_back", "1"),
    Crash("rollback", "rolled_back", "rolling_back rolled_back", "1"),
    Crash("rollback", "failed", "rolling_back failed", "2", fault="corrupt-1"),
]


def prepare(store: Path, kind: str, kit: Kit, fault: str = "") -> None:
    """1 active; 2 installed (activate) or active with 1 to roll back to (rollback)."""
    packages = kit.packages
    with Runtime(store, trusted_keys=(kit.keys.public,), restore=False) as rt:
        rt.install(packages["1"])
        rt.activate("gemm", "1")
        if kind != "install":
            rt.install(packages["2"])
        if kind == "rollback":
            rt.activate("gemm", "2")
        if fault.startswith("corrupt-"):
            rt.store.get("gemm", fault[-1]).model_path.write_bytes(b"bits flipped on disk")


def run_cli(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"EDGE_FAULT_KILL_AT": kill_at} if kill_at else {})}
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False, env=env)


def cli_args(kind: str, store: Path, keys: Keys, package: Path) -> list[str]:
    if kind == "install":
        return ["install", str(package), "--store", str(store), "--trusted-keys",
                str(keys.public)]
    if kind == "activate":
        return ["activate", "gemm", "2", "--store", str(store)]
    return ["rollback", "gemm", "--store", str(store)]


def assert_recovered(store: Path, d: Any, history: str, serves: str, kit: Kit) -> None:
    status, doc = d.post_json("/predict/gemm", X)
    assert status == 200, doc
    np.testing.assert_allclose(doc["outputs"]["y"], kit.expected[serves], rtol=1e-5)
    ms = ModelStore(store)
    try:
        assert records.unfinished(ms.db) == []
        last = records.recent(ms.db, "gemm", 1)[0]
        assert list(last.history) == history.split()
        ref = ms.active("gemm")
        assert ref is not None and ref.version == serves
    finally:
        ms.db.close()
    assert not list(store.rglob(".staging-*"))


@pytest.mark.parametrize("crash", CRASHES, ids=[c.id for c in CRASHES])
def test_cli_killed_in_state_then_daemon_recovers(crash: Crash, tmp_path: Path, kit: Kit,
                                                  daemon_factory: Any) -> None:
    store = tmp_path / "store"
    prepare(store, crash.kind, kit, crash.fault)
    package = kit.packages["tampered" if crash.fault == "tampered" else "2"]
    proc = run_cli(cli_args(crash.kind, store, kit.keys, package), crash.kill_at)
    assert proc.returncode == KILLED, proc.stderr
    assert f"SIGKILL in state {crash.kill_at}" in proc.stderr
    with Runtime(store, restore=False) as rt:  # the record is where the process died
        assert records.recent(rt.store.db, "gemm", 1)[0].state.value == crash.kill_at
        if crash.fault == "half-unpacked":
            half = rt.store.version_dir("gemm", "2").with_name(".staging-2-0badc0de")
            half.mkdir()
            (half / "model.onnx").write_bytes(b"\x08\x07trunc")

    d = daemon_factory(store, "--trusted-keys", str(kit.keys.public)).start()
    assert_recovered(store, d, crash.history, crash.serves, kit)


DAEMON_CRASHES = [
    Crash("install", "installing", INSTALL, "1"),
    Crash("activate", "switching", ACTIVATE, "2"),
    Crash("rollback", "rolling_back", "rolling_back rolled_back", "1"),
]


@pytest.mark.parametrize("crash", DAEMON_CRASHES, ids=[c.id for c in DAEMON_CRASHES])
def test_daemon_killed_mid_swap_recovers_on_restart(crash: Crash, tmp_path: Path, kit: Kit,
                                                    daemon_factory: Any) -> None:
    store = tmp_path / "store"
    prepare(store, crash.kind, kit)
    d = daemon_factory(store, "--trusted-keys", str(kit.keys.public),
                       env={"EDGE_FAULT_KILL_AT": crash.kill_at}).start()
    before = "2" if crash.kind == "rollback" else "1"
    status, doc = d.post_json("/predict/gemm", X)
    assert status == 200
    np.testing.assert_allclose(doc["outputs"]["y"], kit.expected[before], rtol=1e-5)
    admin = d.admin()
    with pytest.raises(EdgeRuntimeError, match="cannot reach the daemon"):
        if crash.kind == "install":
            admin.call("POST", "/admin/install", {"package": str(kit.packages["2"])})
        elif crash.kind == "activate":
            admin.call("POST", "/admin/models/gemm/activate", {"version": "2"})
        else:
            admin.call("POST", "/admin/models/gemm/rollback")
    assert d.proc is not None and d.proc.wait(timeout=30) == KILLED
    d.proc = None

    restarted = daemon_factory(store, "--trusted-keys", str(kit.keys.public)).start()
    assert_recovered(store, restarted, crash.history, crash.serves, kit)


def test_a_later_cli_command_finishes_the_interrupted_swap_first(
        tmp_path: Path, kit: Kit, daemon_factory: Any) -> None:
    """Activating 2 dies in LOADING; the user then activates 1 again, still without a daemon.
    Left alone, the stale LOADING swap would be resumed when the daemon starts and put 2 back
    in service, undoing the user's last command."""
    store = tmp_path / "store"
    prepare(store, "activate", kit)
    assert run_cli(["activate", "gemm", "2", "--store", str(store)], "loading").returncode == (
        KILLED)
    done = run_cli(["activate", "gemm", "1", "--store", str(store)])
    assert done.returncode == 0, done.stderr
    assert "committed" in done.stdout
    d = daemon_factory(store, "--trusted-keys", str(kit.keys.public)).start()
    assert_recovered(store, d, ACTIVATE, "1", kit)
    ms = ModelStore(store)
    try:
        assert ms.active("gemm").previous == "2"  # type: ignore[union-attr]
        (then, first) = records.recent(ms.db, "gemm", 2)
        assert (first.version, first.state.value, first.attempts) == ("2", "committed", 1)
        assert (then.version, then.previous) == ("1", "2")
    finally:
        ms.db.close()
