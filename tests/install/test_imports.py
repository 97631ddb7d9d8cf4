"""`import edge_runtime` and `edge-runtime serve` never import the converters' or the fleet
statistics' libraries, checked in this (full dev) environment where they all are importable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.broker import Broker
from tests.conftest import Keys, build_package
from tests.edge_runtime.backends.helpers import gemm_weights
from tests.install.support import forbidden_in, infer, output, serve, stop
from tests.integration.support import make_store

# Runs the `edge-runtime` console script's entry point (as installed) and writes sys.modules
# when the process exits.
RUNNER = """
import atexit, json, sys
from importlib.metadata import entry_points
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "edge-runtime"
(script,) = entry_points(group="console_scripts", name="edge-runtime")
script.load()()
"""


def _modules(code: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    return list(json.loads(proc.stdout))


def test_import_edge_runtime_and_its_cli_import_no_heavy_library() -> None:
    dump = "import json, sys; print(json.dumps(sorted(sys.modules)))"
    for module in ("edge_runtime", "edge_runtime.cli", "edge_runtime.runtime",
                   "edge_runtime.daemon"):
        modules = _modules(f"import {module}; {dump}")
        assert module in modules
        assert forbidden_in(modules) == [], module


@pytest.mark.parametrize("fleet", [False, pytest.param(True, marks=pytest.mark.broker)])
def test_serve_imports_no_heavy_library(tmp_path: Path, keys: Keys, fleet: bool,
                                        request: pytest.FixtureRequest) -> None:
    pkg = build_package(tmp_path / "dist", keys.signer)
    store = make_store(tmp_path / "store", keys, [pkg], {"gemm": "1"})
    dumped = tmp_path / "modules.json"
    log = tmp_path / "serve.log"
    fleet_args: list[str] = []
    if fleet:  # a device that joins a fleet: the MQTT link, still no fleet statistics
        broker: Broker = request.getfixturevalue("broker")
        fleet_args = ["--fleet-url", broker.url, "--device-id", "dev-1"]
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    served = serve([sys.executable, "-c", RUNNER, str(dumped), "serve", "--store", str(store),
                    "--port", "0", "--trusted-keys", str(keys.public), *fleet_args],
                   store, log, cwd=tmp_path, env=dict(os.environ), model="gemm", x=x)
    try:
        status, doc = infer(served.info.url, "gemm", x)
        w, b = gemm_weights()
        assert status == 200
        np.testing.assert_allclose(output(doc), x @ w + b, rtol=1e-5, atol=1e-5)
    finally:
        assert stop(served.proc) == 0, log.read_text()[-3000:]
    modules = json.loads(dumped.read_text())
    assert "edge_runtime.daemon" in modules and "onnxruntime" in modules
    if fleet:
        assert "fleet agent dev-1" in log.read_text()
        assert "edge_runtime.agent" in modules and "paho" in modules
        modules = [m for m in modules if not m.startswith("paho")]
    assert forbidden_in(modules) == []
    text = log.read_text()
    assert "settings: profile=" in text and "batching=off cache=off" in text
