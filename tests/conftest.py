from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.signing import Signer, TrustStore, generate_keypair
from tests.broker import Broker


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path
    signer: Signer
    trust: TrustStore


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    priv, pub = generate_keypair(tmp_path_factory.mktemp("keys"), "test")
    return Keys(priv, pub, Signer.load(priv), TrustStore.load([pub]))


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    priv, pub = generate_keypair(tmp_path_factory.mktemp("other-keys"), "other")
    return Keys(priv, pub, Signer.load(priv), TrustStore.load([pub]))


def gemm_model(n_in: int = 4, n_out: int = 3, seed: int = 0, op: str = "Gemm") -> bytes:
    """A one-layer ONNX model built with onnx.helper (dynamic batch)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((n_in, n_out)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(n_out).astype(np.float32), "b")
    node = helper.make_node(op, ["x", "w", "b"], ["y"]) if op == "Gemm" else helper.make_node(
        op, ["x", "w", "b"], ["y"], domain="custom.ops")
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n_out])],
        initializer=[w, b],
    )
    opsets = [helper.make_opsetid("", 17)] + (
        [helper.make_opsetid("custom.ops", 1)] if op != "Gemm" else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return bytes(model.SerializeToString())


@pytest.fixture
def gemm_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "gemm.onnx"
    path.write_bytes(gemm_model())
    return path


def run_cli(module: str, *args: str | Path, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run a console script's module the way a user does, in a fresh process."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300, check=False)


def build_package(out_dir: Path, signer: Signer | None, *, name: str = "gemm",
                  version: str = "1", model: bytes | None = None, n_in: int = 4,
                  seed: int = 0, calib_rows: int = 64) -> Path:
    """A real fp32 package of a one-layer ONNX model, through the converter pipeline."""
    from converters import sources
    from converters.pipeline import ConvertRequest, convert

    src_path = out_dir / f".src-{name}-{version}.onnx"
    out_dir.mkdir(parents=True, exist_ok=True)
    src_path.write_bytes(model if model is not None else gemm_model(n_in=n_in, seed=seed))
    calib = out_dir / f".calib-{name}-{version}.npy"
    np.save(calib, np.random.default_rng(seed).standard_normal((calib_rows, n_in)).astype(
        np.float32))
    req = ConvertRequest(name=name, version=version, precision="fp32", out_dir=out_dir,
                         signer=signer, calibration=calib)
    result = convert(sources.from_onnx_file(src_path), req, log=lambda _m: None)
    src_path.unlink()
    calib.unlink()
    return result.package


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh mosquitto on a free loopback port for this test."""
    b = Broker(tmp_path).start()
    yield b
    b.stop()
