"""The in-process runtime over a real store: install, activate, predict, rollback, restart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.errors import (
    InputInvalid,
    ModelNotFound,
    SwapError,
)
from edge_runtime.runtime import Runtime
from edge_runtime.swap.machine import State
from tests.conftest import Keys, build_package


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pkgs")
    return {v: build_package(d, keys.signer, version=v, seed=int(v)) for v in ("1", "2")}


def weights(pkg: Path, keys: Keys) -> tuple[np.ndarray, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    from edge_runtime.package import open_package

    model = onnx.load_from_string(open_package(pkg, keys.trust).read("model.onnx"))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return init["w"], init["b"]


def test_install_activate_predict_rollback(tmp_path: Path, keys: Keys,
                                           packages: dict[str, Path]) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with Runtime(tmp_path / "store", trusted_keys=(keys.public,)) as rt:
        rec = rt.install(packages["1"])
        assert rec.state is State.INSTALLED
        assert rec.history == ("verifying", "installing", "installed")
        with pytest.raises(ModelNotFound):
            rt.predict("gemm", x)  # installed is not active
        assert rt.activate("gemm", "1").state is State.COMMITTED
        w, b = weights(packages["1"], keys)
        np.testing.assert_allclose(rt.predict("gemm", x)["y"], x @ w + b, rtol=1e-5)
        rt.install(packages["2"])
        rec = rt.activate("gemm", "2")
        assert rec.history == ("loading", "switching", "probation", "committed")
        assert rec.previous == "1"
        w2, b2 = weights(packages["2"], keys)
        np.testing.assert_allclose(rt.predict("gemm", x)["y"], x @ w2 + b2, rtol=1e-5)
        assert rt.rollback("gemm").state is State.ROLLED_BACK
        np.testing.assert_allclose(rt.predict("gemm", x)["y"], x @ w + b, rtol=1e-5)
        assert rt.store.active("gemm").previous == "2"  # type: ignore[union-attr]
    # restart: the active version comes back from the store
    with Runtime(tmp_path / "store", trusted_keys=(keys.public,)) as rt:
        np.testing.assert_allclose(rt.predict("gemm", x)["y"], x @ w + b, rtol=1e-5)


def test_bad_input_and_refusals(tmp_path: Path, keys: Keys, other_keys: Keys,
                                packages: dict[str, Path]) -> None:
    with Runtime(tmp_path / "store", trusted_keys=(keys.public,)) as rt:
        rt.install(packages["1"])
        rt.activate("gemm", "1")
        with pytest.raises(InputInvalid, match="shape"):
            rt.predict("gemm", np.zeros((1, 5), np.float32))
        with pytest.raises(InputInvalid):
            rt.predict("gemm", {"nope": np.zeros((1, 4), np.float32)})
        # the model keeps serving after bad input
        assert rt.predict("gemm", np.zeros((1, 4), np.float32))["y"].shape == (1, 3)
        unsigned = build_package(tmp_path / "u", None, version="9")
        with pytest.raises(SwapError, match="not signed"):
            rt.install(unsigned)
        foreign = build_package(tmp_path / "f", other_keys.signer, version="8")
        with pytest.raises(SwapError, match="not in the trusted keys"):
            rt.install(foreign)
        rec = rt.swaps.install(foreign)  # the runner itself reports instead of raising
        assert rec.state is State.FAILED and rec.history[-1] == "failed"
        with pytest.raises(ModelNotFound):
            rt.activate("gemm", "8")
        with pytest.raises(SwapError, match="no previous version"):
            rt.rollback("gemm")


def test_corrupted_install_is_not_activated(tmp_path: Path, keys: Keys,
                                            packages: dict[str, Path]) -> None:
    with Runtime(tmp_path / "store", trusted_keys=(keys.public,)) as rt:
        rt.install(packages["1"])
        rt.activate("gemm", "1")
        rt.install(packages["2"])
        model_file = rt.store.get("gemm", "2").model_path
        model_file.write_bytes(b"corrupted on disk")
        with pytest.raises(SwapError, match="sha256"):
            rt.activate("gemm", "2")
        assert rt.registry.get("gemm").version == "1"  # the old version keeps serving
        assert rt.predict("gemm", np.zeros((1, 4), np.float32))["y"].shape == (1, 3)
