"""What survives a restart: the active version, telemetry, and `edge-runtime status` either way.

A clean stop (SIGTERM) flushes telemetry before exiting. A kill -9 loses what was counted since
the last periodic flush (the telemetry interval), but never the store: the daemon restarts and
serves the active version again.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.daemon import RUN_FILE
from edge_runtime.store.models import ModelStore
from edge_runtime.store.telemetry import TelemetryStore
from tests.conftest import Keys, build_package
from tests.integration.conftest import DaemonFactory, DaemonProc
from tests.integration.support import affine, edge, make_store, post_json, v2_json

X = np.arange(8, dtype=np.float32).reshape(2, 4)


def metrics_rows(store: Path) -> list[dict[str, Any]]:
    db = ModelStore(store).db
    try:
        return TelemetryStore(db).recent("metrics")
    finally:
        db.close()


def served_requests(store: Path, version: str) -> tuple[int, dict[str, int]]:
    requests = 0
    errors: dict[str, int] = {}
    for row in metrics_rows(store):
        if (row["model"], row["version"]) == ("gemm", version):
            requests += row["payload"]["requests"]
            for kind, n in row["payload"]["errors"].items():
                errors[kind] = errors.get(kind, 0) + n
    return requests, errors


def status(store: Path) -> dict[str, Any]:
    proc = edge("status", "--store", store, "--json")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def infer(d: DaemonProc) -> tuple[str, np.ndarray]:
    reply = post_json(d.url, "/v2/models/gemm/infer", v2_json("x", X))
    assert reply.status == 200, reply.body
    doc = reply.json()
    return doc["model_version"], np.reshape(doc["outputs"][0]["data"], (2, 3))


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("persist-pkgs")
    return {v: build_package(out, keys.signer, version=v, seed=int(v) + 40) for v in ("1", "2")}


@pytest.fixture
def store(tmp_path: Path, keys: Keys, packages: dict[str, Path]) -> Path:
    """gemm 2 active, 1 the rollback target."""
    store = make_store(tmp_path / "store", keys, [packages["1"]], {"gemm": "1"})
    return make_store(store, keys, [packages["2"]], {"gemm": "2"})


@pytest.mark.timeout(120)
def test_clean_stop_persists_telemetry_and_restart_serves_again(
        store: Path, keys: Keys, packages: dict[str, Path],
        daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(store, "--trusted-keys", str(keys.public)).start()
    for _ in range(5):
        version, y = infer(d)
        assert version == "2"
        np.testing.assert_allclose(y, affine(packages["2"], keys, X), rtol=1e-5, atol=1e-6)
    assert post_json(d.url, "/predict/gemm", [[1, 2]]).status == 400

    live = status(store)
    assert live["source"] == "daemon"
    (row,) = live["windows"]["60s"]
    assert (row["model"], row["version"], row["requests"]) == ("gemm", "2", 6)
    assert row["errors"] == {"invalid_input": 1}
    models = {(m["version"], m["active"], m["previous"], m["loaded"]) for m in live["models"]}
    assert models == {("1", False, True, False), ("2", True, False, True)}

    # uvicorn re-raises the SIGTERM it caught once it has shut down cleanly, so the exit status
    # is "killed by SIGTERM", which systemd counts as a clean stop
    assert d.stop() in (0, -signal.SIGTERM)
    assert not (store / RUN_FILE).exists()
    assert served_requests(store, "2") == (6, {"invalid_input": 1})

    offline = status(store)
    assert offline["source"] == "store (daemon not running)"
    assert offline["windows"]["900s"] == [
        {"model": "gemm", "version": "2", "requests": 6, "errors": {"invalid_input": 1}}]
    assert offline["storage"]["telemetry"] >= 1

    d.start()
    version, y = infer(d)
    assert version == "2"
    np.testing.assert_allclose(y, affine(packages["2"], keys, X), rtol=1e-5, atol=1e-6)
    assert status(store)["source"] == "daemon"
    assert d.stop() in (0, -signal.SIGTERM)
    assert served_requests(store, "2")[0] == 7


def wait_for_rows(store: Path, version: str, requests: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while served_requests(store, version)[0] < requests:
        assert time.monotonic() < deadline, "the periodic flush never wrote telemetry"
        time.sleep(0.05)


@pytest.mark.timeout(120)
def test_kill_9_loses_at_most_the_last_interval(store: Path, keys: Keys,
                                                packages: dict[str, Path],
                                                daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(store, "--trusted-keys", str(keys.public),
                       "--telemetry-interval", "0.2").start()
    for _ in range(3):
        infer(d)
    wait_for_rows(store, "2", 3)  # persisted by the periodic flush, not at exit
    d.kill()  # SIGKILL: no shutdown, the run file stays behind with a dead pid
    assert (store / RUN_FILE).exists()

    after_kill = status(store)  # a stale run file is ignored: its process is gone
    assert after_kill["source"] == "store (daemon not running)"
    assert after_kill["windows"]["900s"][0]["requests"] >= 3

    d.start()
    version, y = infer(d)
    assert version == "2"
    np.testing.assert_allclose(y, affine(packages["2"], keys, X), rtol=1e-5, atol=1e-6)
    assert status(store)["source"] == "daemon"
    d.kill()
    # what was flushed before the kills is intact, and so is the store
    assert served_requests(store, "2")[0] >= 3
    models = edge("models", "--store", store, "--json")
    assert models.returncode == 0, models.stderr
    assert [(m["version"], m["active"]) for m in json.loads(models.stdout)] == [
        ("1", False), ("2", True)]
