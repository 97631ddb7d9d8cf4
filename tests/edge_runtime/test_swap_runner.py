"""SwapRunner traces over a real store and a fake backend, with injected faults (mender style).

A ``Case`` names the command, the faults and where the process dies; it asserts the whole chain
of states of the swap record, the reports ``on_change`` received (across restarts), and the
version that is active in the store and served by the registry afterwards. "The process died"
is a ``Died`` raised from the ``after_save`` hook: the record is saved, nothing after runs. The
device then boots again: a fresh registry and runner on the same store, ``recover()`` and
``restore_active()``, as the daemon does.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from edge_runtime.backends import BackendOptions, FakeBackend
from edge_runtime.backends.fake import FakeModel
from edge_runtime.manifest import Manifest
from edge_runtime.package import MANIFEST
from edge_runtime.registry import Registry, ServedModel
from edge_runtime.store.models import ActiveRef, ModelStore
from edge_runtime.swap import records
from edge_runtime.swap.machine import MAX_LOAD_ATTEMPTS, Event, State, SwapRecord
from edge_runtime.swap.runner import SwapRunner
from tests.conftest import Keys, build_package

X = np.ones((2, 4), np.float32)


class Died(BaseException):
    """The process was killed (power cut, OOM killer) right after a record was saved."""


def _marked(version: str) -> Any:
    """Outputs that tell which version computed them."""
    def fn(inputs: Any) -> dict[str, NDArray[Any]]:
        return {"y": np.full((inputs["x"].shape[0], 3), float(version), np.float32)}
    return fn


class PerVersion:
    """The "onnx" backend of these tests: a FakeBackend per version, so a fault hits one."""

    name = "onnx"

    def __init__(self, faults: frozenset[str]) -> None:
        self.fakes = {v: FakeBackend(_marked(v)) for v in ("1", "2")}
        if "load" in faults:
            self.fakes["2"].load_error = "out of memory"
        if "smoke" in faults:
            self.fakes["2"].predict_error = "kernel crashed"
        if "target_load" in faults:
            self.fakes["1"].load_error = "out of memory"

    def load(self, model_path: Path, manifest: Manifest, options: BackendOptions) -> FakeModel:
        return self.fakes[manifest.version].load(model_path, manifest, options)

    @property
    def live(self) -> int:
        return sum(f.live for f in self.fakes.values())


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pkgs")
    pkgs = {v: build_package(d / "signed", keys.signer, version=v, seed=int(v))
            for v in ("1", "2")}
    pkgs["unsigned"] = build_package(d / "unsigned", None, version="2", seed=2)
    pkgs["tampered"] = d / "tampered" / pkgs["2"].name
    pkgs["tampered"].parent.mkdir()
    with zipfile.ZipFile(pkgs["2"]) as src, zipfile.ZipFile(pkgs["tampered"], "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "model.onnx":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.writestr(info, data)
    return pkgs


@dataclass
class Device:
    """One device across boots: the store persists, the registry and the runner do not."""

    root: Path
    keys: Keys
    faults: frozenset[str] = frozenset()
    kill_at: str | None = None
    kills: int = 0
    package: Path | None = None
    reports: list[str] = field(default_factory=list)
    store: ModelStore | None = None
    runner: SwapRunner | None = None
    backend: PerVersion | None = None

    def boot(self, faults: frozenset[str] | None = None) -> SwapRunner:
        if self.store is not None:
            self.store.db.close()
        self.store = ModelStore(self.root, trust=self.keys.trust)
        self.backend = PerVersion(self.faults if faults is None else faults)
        probation = ((lambda _r: Event.FAIL) if "probation" in self.faults
                     else (lambda _r: Event.OK))
        self.runner = SwapRunner(self.store, Registry(backends={"onnx": self.backend}),
                                 on_change=self._report, after_save=self._after_save,
                                 probation=probation)
        return self.runner

    def start(self) -> bool:
        """Boot as the daemon does; False when the process died again during recovery."""
        runner = self.boot()
        try:
            runner.recover()
            runner.restore_active()
        except Died as died:
            self.reports.append(f"died:{died}")
            return False
        return True

    def _report(self, rec: SwapRecord) -> None:
        self.reports.append(rec.state.value)

    def _after_save(self, rec: SwapRecord) -> None:
        if rec.state.value == self.kill_at and self.kills > 0:
            self.kills -= 1
            raise Died(rec.state.value)
        if "vanish" in self.faults and rec.state is State.INSTALLING and self.package:
            self.package.unlink(missing_ok=True)  # e.g. /tmp cleaned while installing

    @property
    def served(self) -> ServedModel | None:
        assert self.runner is not None
        return self.runner.registry.active("gemm")


@pytest.fixture
def device(tmp_path: Path, keys: Keys) -> Iterator[Device]:
    dev = Device(tmp_path / "store", keys)
    yield dev
    if dev.store is not None:
        dev.store.db.close()


def prepare(dev: Device, kind: str, packages: dict[str, Path]) -> None:
    """Before the case: 1 installed and active, then 2 installed (activate) or active
    (rollback). Done by a runner without faults or hooks."""
    store = ModelStore(dev.root, trust=dev.keys.trust)
    runner = SwapRunner(store, Registry(backends={"onnx": PerVersion(frozenset())}))
    runner.install(packages["1"])
    runner.activate("gemm", "1")
    if kind in ("activate", "rollback"):
        runner.install(packages["2"])
    if kind == "rollback":
        runner.activate("gemm", "2")
    store.db.close()


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # install | deploy | activate | rollback (gemm: 1 active, 2 installed or active)
    states: tuple[str, ...]  # history of the swap record at the end
    fail_in: frozenset[str] = frozenset()  # faults present on every boot
    fail_on_restart: frozenset[str] = frozenset()  # faults that appear after the first crash
    kill_at: str | None = None  # the process dies right after saving this state...
    kills: int = 1  # ...this many times (each boot's recovery re-enters it)
    reports: tuple[str, ...] | None = None  # on_change, "died:S" for a crash; default: states
    active_after: str | None = "1"
    previous_after: str | None = None
    reason: str = ""  # in the final record's reason


def case(name: str, kind: str, states: str, *, fail_in: str = "", fail_on_restart: str = "",
         reports: str | None = None, **kw: Any) -> Case:
    return Case(name, kind, tuple(states.split()), frozenset(fail_in.split()),
                frozenset(fail_on_restart.split()),
                reports=tuple(reports.split()) if reports is not None else None, **kw)


INSTALLED = "verifying installing installed"
COMMITTED = "loading switching probation committed"
DEPLOYED = f"downloading {INSTALLED} {COMMITTED}"
PROBATION_FAILED = "loading switching probation rolling_back rolled_back"
A2 = {"active_after": "2", "previous_after": "1"}  # the new version serves, 1 to roll back to
A1 = {"active_after": "1", "previous_after": "2"}  # rolled back to 1; 2 is the way forward

CASES = [
    # -- install 2 next to the serving 1: the active version never changes ----------------
    case("install", "install", INSTALLED),
    case("install_unsigned", "install", "verifying failed", fail_in="unsigned",
         reason="not signed"),
    case("install_tampered", "install", "verifying failed", fail_in="tampered",
         reason="sha256 of 'model.onnx'"),
    case("install_version_taken", "install", "verifying installing failed",
         fail_in="conflict", reason="a different package with this version"),
    case("install_package_vanishes", "install", "verifying installing failed",
         fail_in="vanish", reason="cannot unpack"),
    case("install_died_verifying", "install", INSTALLED, kill_at="verifying",
         reports="died:verifying verifying installing installed"),
    case("install_died_installing", "install", INSTALLED, kill_at="installing",
         reports="verifying died:installing installing installed"),
    case("install_died_installed", "install", INSTALLED, kill_at="installed",
         reports="verifying installing died:installed"),
    case("install_tampered_died_verifying", "install", "verifying failed", fail_in="tampered",
         kill_at="verifying", reports="died:verifying verifying failed"),
    case("install_tampered_died_failed", "install", "verifying failed", fail_in="tampered",
         kill_at="failed", reports="verifying died:failed"),
    case("install_died_installing_package_gone", "install", "verifying installing failed",
         fail_in="vanish", kill_at="installing",
         reports="verifying died:installing installing failed"),
    # -- deploy 2 (the fleet agent downloads, then the swap runs through activation) --------
    case("deploy", "deploy", DEPLOYED, **A2),
    case("deploy_tampered", "deploy", "downloading verifying failed", fail_in="tampered"),
    case("deploy_died_downloading", "deploy", DEPLOYED, kill_at="downloading",
         reports="died:downloading " + DEPLOYED, **A2),
    case("deploy_died_installed", "deploy", DEPLOYED, kill_at="installed", **A2,
         reports=DEPLOYED.replace("installed", "died:installed installed")),
    # -- activate 2 while 1 serves ---------------------------------------------------------
    case("activate", "activate", COMMITTED, **A2),
    case("activate_load_fails", "activate", "loading failed", fail_in="load",
         reason="out of memory"),
    case("activate_smoke_fails", "activate", "loading failed", fail_in="smoke",
         reason="smoke inference failed"),
    case("activate_corrupted_on_disk", "activate", "loading failed", fail_in="corrupt",
         reason="sha256 of 'model.onnx'"),
    case("activate_probation_fails", "activate", PROBATION_FAILED, fail_in="probation", **A1),
    case("activate_died_loading", "activate", COMMITTED, kill_at="loading",
         reports="died:loading " + COMMITTED, **A2),
    case("activate_died_switching", "activate", COMMITTED, kill_at="switching",
         reports="loading died:switching switching probation committed", **A2),
    case("activate_died_probation", "activate", COMMITTED, kill_at="probation",
         reports="loading switching died:probation probation committed", **A2),
    case("activate_died_committed", "activate", COMMITTED, kill_at="committed",
         reports="loading switching probation died:committed", **A2),
    case("activate_load_fails_died_loading", "activate", "loading failed", fail_in="load",
         kill_at="loading", reports="died:loading loading failed"),
    case("activate_load_fails_died_failed", "activate", "loading failed", fail_in="load",
         kill_at="failed", reports="loading died:failed"),
    case("activate_died_loading_twice", "activate", COMMITTED, kill_at="loading", kills=2,
         reports="died:loading died:loading " + COMMITTED, **A2),
    case("activate_load_kills_every_boot", "activate", "loading failed", kill_at="loading",
         kills=MAX_LOAD_ATTEMPTS, reports="died:loading died:loading died:loading failed",
         reason=f"loading was interrupted {MAX_LOAD_ATTEMPTS} times"),
    case("activate_died_switching_new_no_longer_loads", "activate",
         "loading switching rolling_back rolled_back", kill_at="switching",
         fail_on_restart="load", **A1,
         reports="loading died:switching switching rolling_back rolled_back"),
    case("activate_died_switching_new_corrupted_meanwhile", "activate",
         "loading switching rolling_back rolled_back", kill_at="switching",
         fail_on_restart="corrupt", **A1,
         reports="loading died:switching switching rolling_back rolled_back"),
    case("activate_probation_fails_died_probation", "activate", PROBATION_FAILED,
         fail_in="probation", kill_at="probation", **A1,
         reports="loading switching died:probation probation rolling_back rolled_back"),
    case("activate_probation_fails_died_rolling_back", "activate", PROBATION_FAILED,
         fail_in="probation", kill_at="rolling_back", **A1,
         reports="loading switching probation died:rolling_back rolling_back rolled_back"),
    case("activate_probation_fails_died_rolled_back", "activate", PROBATION_FAILED,
         fail_in="probation", kill_at="rolled_back", **A1,
         reports="loading switching probation rolling_back died:rolled_back"),
    # -- roll back from 2 (active) to 1 ----------------------------------------------------
    case("rollback", "rollback", "rolling_back rolled_back", **A1),
    case("rollback_target_does_not_load", "rollback", "rolling_back failed",
         fail_in="target_load", reason="out of memory", **A2),
    case("rollback_died_rolling_back", "rollback", "rolling_back rolled_back",
         kill_at="rolling_back", reports="died:rolling_back rolling_back rolled_back", **A1),
    case("rollback_died_rolled_back", "rollback", "rolling_back rolled_back",
         kill_at="rolled_back", reports="rolling_back died:rolled_back", **A1),
    case("rollback_target_does_not_load_died_failed", "rollback", "rolling_back failed",
         fail_in="target_load", kill_at="failed", reports="rolling_back died:failed", **A2),
]


def corrupt(store: ModelStore) -> None:
    store.get("gemm", "2").model_path.write_bytes(b"flipped bits")


def command(c: Case, dev: Device, packages: dict[str, Path]) -> SwapRecord:
    runner = dev.runner
    assert runner is not None and dev.store is not None
    if c.kind in ("install", "deploy"):
        name = next((f for f in ("unsigned", "tampered") if f in c.fail_in), "2")
        dev.package = package = dev.root.parent / packages[name].name
        shutil.copy(packages[name], package)
        if "conflict" in c.fail_in:  # another package claiming version 2 is on disk already
            taken = dev.store.version_dir("gemm", "2")
            taken.mkdir(parents=True)
            shutil.copy(dev.store.version_dir("gemm", "1") / MANIFEST, taken / MANIFEST)
        if c.kind == "install":
            return runner.install(package)
        return runner.downloaded(runner.begin_deploy("gemm", "2", package))
    if c.kind == "activate":
        if "corrupt" in c.fail_in:
            corrupt(dev.store)
        return runner.activate("gemm", "2")
    return runner.rollback("gemm", reason="operator")


def resume_download(dev: Device) -> None:
    """What the fleet agent does after a restart: finish the download, then go on."""
    assert dev.runner is not None and dev.store is not None
    for rec in records.unfinished(dev.store.db):
        if rec.state is State.DOWNLOADING:
            dev.runner.downloaded(rec)


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_swap_trace(c: Case, device: Device, packages: dict[str, Path]) -> None:
    prepare(device, c.kind, packages)
    device.faults = c.fail_in
    assert device.start()
    before = device.served
    assert before is not None and before.version == ("2" if c.kind == "rollback" else "1")
    device.reports.clear()
    device.kill_at, device.kills = c.kill_at, c.kills

    try:
        command(c, device, packages)
        died = False
    except Died as exc:
        device.reports.append(f"died:{exc}")
        died = True
    if died:
        device.faults = c.fail_in | c.fail_on_restart
        if "corrupt" in c.fail_on_restart:
            assert device.store is not None
            corrupt(device.store)
        while not device.start():
            pass
        resume_download(device)

    assert device.store is not None and device.backend is not None
    (rec,) = records.recent(device.store.db, "gemm", 1)
    assert list(rec.history) == list(c.states)
    assert c.reason in rec.reason
    assert device.reports == list(c.reports or c.states)
    assert records.unfinished(device.store.db) == []
    ref = device.store.active("gemm")
    assert ref is not None and (ref.version, ref.previous) == (c.active_after, c.previous_after)
    served = device.served
    assert served is not None and served.version == c.active_after
    assert served.predict({"x": X})["y"][0, 0] == float(c.active_after or 0)
    assert device.backend.live == 1  # nothing loaded but the serving version
    assert not list(device.root.rglob(".staging-*"))
    if not died and "switching" not in c.states and c.kind != "rollback":
        assert served is before  # the old version kept serving, never reloaded


# -- what a table row cannot say -----------------------------------------------------------
@pytest.fixture
def booted(device: Device, packages: dict[str, Path]) -> Device:
    prepare(device, "activate", packages)
    assert device.start()
    device.reports.clear()
    return device


def test_activating_the_active_version_is_a_no_op(booted: Device) -> None:
    assert booted.runner is not None and booted.store is not None
    rec = booted.runner.activate("gemm", "1")
    assert (rec.state, rec.reason, rec.id) == (State.COMMITTED, "already active", None)
    assert booted.reports == []


def test_reactivating_the_stored_active_version_keeps_the_rollback_target(
        booted: Device) -> None:
    """A local CLI command works on a store without loading it: activating the version that
    the store already has active must not make it its own rollback target."""
    runner = booted.runner
    assert runner is not None and booted.store is not None
    runner.activate("gemm", "2")
    fresh = booted.boot()  # like `edge-runtime activate` without a daemon: nothing loaded
    rec = fresh.activate("gemm", "2")
    assert rec.state is State.COMMITTED
    assert booted.store.active("gemm") == ActiveRef("gemm", "2", "1")
    assert fresh.rollback("gemm").state is State.ROLLED_BACK
    assert fresh.registry.get("gemm").version == "1"


def test_a_new_swap_first_finishes_the_one_a_crash_left(booted: Device,
                                                          packages: dict[str, Path]) -> None:
    """Without recovering first, the stale record would be resumed at the next start and undo
    the swap that came after it."""
    booted.kill_at, booted.kills = "switching", 1
    assert booted.runner is not None
    with pytest.raises(Died):
        booted.runner.activate("gemm", "2")
    fresh = booted.boot()  # a later command, no recover() (the CLI without a daemon)
    booted.kill_at = None
    rec = fresh.rollback("gemm")
    assert rec.state is State.ROLLED_BACK
    assert booted.reports == ["loading", "switching", "probation", "committed",
                              "rolling_back", "rolled_back"]
    assert booted.start()  # the daemon starts: nothing left to resume
    assert booted.store is not None
    assert booted.store.active("gemm") == ActiveRef("gemm", "1", "2")
    assert booted.served is not None and booted.served.version == "1"


def test_restore_rolls_back_when_the_active_version_does_not_load(booted: Device) -> None:
    assert booted.runner is not None
    booted.runner.activate("gemm", "2")
    booted.reports.clear()
    runner = booted.boot(frozenset({"load"}))
    problems = runner.restore_active()
    assert len(problems) == 1 and "gemm 2" in problems[0] and "out of memory" in problems[0]
    assert booted.reports == ["rolling_back", "rolled_back"]
    (rec,) = records.recent(runner.store.db, "gemm", 1)
    assert rec.kind == "rollback" and "does not load" in rec.reason
    assert runner.registry.get("gemm").version == "1"


def test_probation_can_wait_for_a_verdict(booted: Device) -> None:
    assert booted.store is not None
    runner = SwapRunner(booted.store, booted.runner.registry,  # type: ignore[union-attr]
                        on_change=booted._report, probation=lambda _r: None)
    rec = runner.activate("gemm", "2")
    assert rec.state is State.PROBATION
    assert runner.registry.get("gemm").version == "2"  # serving while on probation
    assert [r.id for r in records.unfinished(booted.store.db)] == [rec.id]
    rec = runner.finish_probation(rec, ok=False, reason="error rate 12%")
    assert (rec.state, rec.reason) == (State.ROLLED_BACK, "error rate 12%")
    assert runner.registry.get("gemm").version == "1"
    assert booted.reports == PROBATION_FAILED.split()
