"""The wheel works the way a device installs it: `pip wheel .`, then `pip install
'edge_runtime-*.whl[onnx]'` (or `[tflite]`) into a fresh venv outside the checkout; install and
activate a signed package, `edge-runtime serve`, infer over HTTP, `edge-runtime status`.

Packages are built here, in the dev environment (the converters' libraries are absent from the
device venv on purpose). Prints the figures docs/benchmarks.md quotes: site-packages size, cold
start to the first 200, idle RSS.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.package import sha256_bytes, write_package
from tests.conftest import Keys, build_package
from tests.edge_runtime.backends.helpers import gemm_weights, make_manifest
from tests.install.support import Served, infer, output, rss_kib, serve, stop

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# What `pip wheel .` needs from the checkout (copied, so the build leaves nothing behind in it).
SOURCES = ("pyproject.toml", "README.md", "edge_runtime", "converters", "fleet")
SHIPPED_PROFILES = ["arm64", "rpi4", "rpi5", "x86_64"]
# Never installed on a device: the fleet statistics, the converters, the optional server.
NOT_ON_DEVICE = {"scipy", "onnx", "scikit-learn", "skl2onnx", "onnxconverter-common", "torch",
                 "uvicorn", "paho-mqtt", "pyarrow"}
SITE_PACKAGES_LIMIT_MB = 200
REQUESTS = 50


def _env() -> dict[str, str]:
    """This environment without anything that would point Python at the dev venv or checkout."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(*argv: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd,
                          env=_env(), timeout=timeout, check=False)
    assert proc.returncode == 0, (argv, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def _du_mb(path: Path) -> float:
    """Disk usage, as `du` counts it (what the issue measured)."""
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) / 1024


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheelhouse")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, src, cwd=src)
    (whl,) = out.glob("edge_runtime-*.whl")
    return whl


def test_the_wheel_ships_what_the_daemon_reads(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    profiles = sorted(Path(n).stem for n in names if n.startswith("edge_runtime/device_profiles/"))
    assert profiles == SHIPPED_PROFILES
    assert not [n for n in names if n.startswith(("devices/", "tests/", "bench/"))]


@dataclasses.dataclass
class Venv:
    root: Path
    site: Path
    base_mb: float  # site-packages of the fresh venv: pip and setuptools

    def bin(self, name: str) -> Path:
        return self.root / "bin" / name


def _venv(tmp: Path, wheel: Path, extra: str) -> Venv:
    root = tmp / f"venv-{extra}"
    _run(sys.executable, "-m", "venv", root, cwd=tmp)
    (site,) = (root / "lib").glob("python3*/site-packages")
    venv = Venv(root, site, _du_mb(site))
    _run(venv.bin("python"), "-m", "pip", "install", "-q", f"{wheel}[{extra}]", cwd=tmp)
    return venv


def _tflite_package(out: Path, keys: Keys) -> Path:
    from tests.edge_runtime.backends.tflite_models import dense_tflite

    model = dense_tflite(*gemm_weights())
    manifest = dataclasses.replace(make_manifest("tflite"), name="gemm", version="1",
                                   files={"model.tflite": sha256_bytes(model)})
    return write_package(out, manifest, {"model.tflite": model}, signer=keys.signer)


@pytest.fixture
def figures() -> Iterator[dict[str, object]]:
    found: dict[str, object] = {}
    yield found
    print(f"\nwheel install figures: {json.dumps(found)}")  # `pytest -s` shows them


@pytest.mark.parametrize("extra", ["onnx", "tflite"])
def test_wheel_install_serves_with_one_backend_extra(wheel: Path, extra: str, tmp_path: Path,
                                                     keys: Keys,
                                                     figures: dict[str, object]) -> None:
    venv = _venv(tmp_path, wheel, extra)
    total_mb = _du_mb(venv.site)
    figures.update(extra=extra, site_packages_mb=round(total_mb, 1),
                   added_by_install_mb=round(total_mb - venv.base_mb, 1),
                   venv_pip_setuptools_mb=round(venv.base_mb, 1))
    listed = json.loads(_run(venv.bin("python"), "-m", "pip", "list", "--format=json",
                             cwd=tmp_path).stdout)
    installed = {p["name"].lower().replace("_", "-") for p in listed}
    assert installed & NOT_ON_DEVICE == set()
    assert total_mb - venv.base_mb <= SITE_PACKAGES_LIMIT_MB, figures
    where = _run(venv.bin("python"), "-c", "import edge_runtime.profiles as p; "
                 "print(p.__file__); print(','.join(p.available_profiles()))", cwd=tmp_path)
    module_file, profiles = where.stdout.split()
    assert Path(module_file).is_relative_to(venv.site)  # the wheel's copy, not the checkout
    assert profiles.split(",") == SHIPPED_PROFILES

    dist = tmp_path / "dist"
    pkg = build_package(dist, keys.signer) if extra == "onnx" else _tflite_package(dist, keys)
    store = tmp_path / "store"
    edge = venv.bin("edge-runtime")
    trust = ("--trusted-keys", str(keys.public))
    _run(edge, "install", pkg, "--store", store, *trust, cwd=tmp_path)
    _run(edge, "activate", "gemm", "1", "--store", store, cwd=tmp_path)

    x = np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)
    served = serve([str(edge), "serve", "--store", str(store), "--port", "0", *trust], store,
                   tmp_path / "serve.log", cwd=tmp_path, env=_env(), model="gemm", x=x)
    try:
        _check_serving(served, x, tmp=tmp_path, edge=edge, store=store, figures=figures)
    finally:
        code = stop(served.proc)
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    log = (tmp_path / "serve.log").read_text()
    settings_lines = [line for line in log.splitlines() if " settings: " in line]
    assert len(settings_lines) == 1 and "batching=off cache=off" in settings_lines[0], log

    # Neither uvicorn nor the MQTT link is installed: asking for one is one clear error line.
    for flags, feature, needed in (
            (["--http-server", "uvicorn"], "--http-server uvicorn", "uvicorn"),
            (["--fleet-url", "mqtt://127.0.0.1:1883"], "--fleet-url", "mqtt")):
        refused = subprocess.run([str(edge), "serve", "--store", str(tmp_path / "empty"),
                                  "--port", "0", *flags], capture_output=True, text=True,
                                 cwd=tmp_path, env=_env(), timeout=60, check=False)
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.strip() == (f"error: {feature} needs the {needed!r} extra: "
                                          f"pip install 'edge-runtime[{needed}]'")


def _check_serving(served: Served, x: np.ndarray, *, tmp: Path, edge: Path, store: Path,
                   figures: dict[str, object]) -> None:
    w, b = gemm_weights()
    for i in range(REQUESTS):
        xi = x + i
        status, doc = infer(served.info.url, "gemm", xi)
        assert status == 200, doc
        np.testing.assert_allclose(output(doc), xi @ w + b, rtol=1e-4, atol=1e-4)
    time.sleep(1.0)  # idle
    figures.update(cold_start_to_first_200_s=round(served.first_200_s, 2),
                   idle_rss_mb=round(rss_kib(served.proc.pid) / 1024, 1))

    before = time.monotonic()
    status_doc = json.loads(_run(edge, "status", "--store", store, "--json", cwd=tmp).stdout)
    after = time.monotonic()
    assert status_doc["source"] == "daemon"
    s = status_doc["settings"]
    assert (s["batching"], s["max_batch_size"], s["cache_entries"]) == (False, 0, 0)
    assert s["profile"] in SHIPPED_PROFILES and 1 <= s["threads"] <= s["cpus"]
    assert s["cpus"] <= len(os.sched_getaffinity(0))
    (row,) = status_doc["windows"]["60s"]
    assert row["requests"] == REQUESTS + 1 and row["errors"] == {}
    # Requests over the time since the daemon started (well under the 60 s window): at least
    # the rate over spawn..status, at most the rate over first-200..status.
    assert row["requests"] / (after - served.started) <= row["throughput_rps"]
    assert row["throughput_rps"] <= row["requests"] / (before - served.started
                                                       - served.first_200_s)
    figures["status_rps_60s"] = round(row["throughput_rps"], 1)
