from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.backends import BackendOptions, get_backend
from edge_runtime.backends.onnx import OnnxBackend
from edge_runtime.errors import InferenceFailed, InputInvalid, SwapError
from tests.conftest import gemm_model
from tests.edge_runtime.backends.helpers import X_4, Y_3, batch, gemm_weights, make_manifest

W, B = gemm_weights()
MANIFEST = make_manifest("onnx")


def two_output_model() -> bytes:
    """y = x @ w + b and p = softmax(y), built like tests.conftest.gemm_model."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"]),
         helper.make_node("Softmax", ["y"], ["p"], axis=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def softmax(a: Any) -> Any:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def two_outputs(tmp_path: Path) -> Path:
    path = tmp_path / "two.onnx"
    path.write_bytes(two_output_model())
    return path


@pytest.mark.parametrize("n", [1, 5])
def test_matches_numpy(gemm_onnx: Path, n: int) -> None:
    model = get_backend("onnx").load(gemm_onnx, MANIFEST, BackendOptions())
    x = batch(n)
    out = model.predict({"x": x})
    assert list(out) == ["y"]
    assert out["y"].shape == (n, 3)
    np.testing.assert_allclose(out["y"], x @ W + B, rtol=1e-5, atol=1e-5)


def test_returns_only_the_manifest_outputs_in_its_order(two_outputs: Path) -> None:
    x = batch(4)
    only_p = make_manifest(outputs=[("p", "float32", ("batch", 3))])
    out = OnnxBackend().load(two_outputs, only_p, BackendOptions()).predict({"x": x})
    assert list(out) == ["p"]
    np.testing.assert_allclose(out["p"], softmax(x @ W + B), rtol=1e-5, atol=1e-6)

    both = make_manifest(outputs=[("p", "float32", ("batch", 3)), Y_3])
    out = OnnxBackend().load(two_outputs, both, BackendOptions()).predict({"x": x})
    assert list(out) == ["p", "y"]
    np.testing.assert_allclose(out["y"], x @ W + B, rtol=1e-5, atol=1e-5)


def test_concurrent_predicts_are_correct(gemm_onnx: Path) -> None:
    options = BackendOptions(intra_op_threads=2)
    model = OnnxBackend().load(gemm_onnx, MANIFEST, options)

    def work(seed: int) -> int:
        for i in range(200):
            x = batch(1 + (seed + i) % 7, seed=seed * 1000 + i)
            np.testing.assert_allclose(model.predict({"x": x})["y"], x @ W + B, rtol=1e-5,
                                       atol=1e-5)
        return 200

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(work, range(8))) == 1600


def test_bad_model_bytes_is_a_swap_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"this is not an onnx model")
    with pytest.raises(SwapError) as info:
        OnnxBackend().load(path, MANIFEST, BackendOptions())
    assert (info.value.name, info.value.version) == ("m", "1")
    assert "bad.onnx" in info.value.reason


def test_missing_file_is_a_swap_error(tmp_path: Path) -> None:
    with pytest.raises(SwapError, match=r"missing\.onnx"):
        OnnxBackend().load(tmp_path / "missing.onnx", MANIFEST, BackendOptions())


@pytest.mark.parametrize("manifest", [
    make_manifest(inputs=[("input", "float32", ("batch", 4))]),
    make_manifest(outputs=[("probabilities", "float32", ("batch", 3))]),
    make_manifest(inputs=[X_4, ("extra", "float32", ("batch", 1))]),
], ids=["input-name", "output-name", "extra-input"])
def test_names_not_in_the_model_are_a_swap_error(gemm_onnx: Path, manifest: Any) -> None:
    with pytest.raises(SwapError, match="do not match the manifest"):
        OnnxBackend().load(gemm_onnx, manifest, BackendOptions())


def test_an_input_the_model_refuses_at_runtime_is_input_invalid(gemm_onnx: Path) -> None:
    model = OnnxBackend().load(gemm_onnx, MANIFEST, BackendOptions())
    with pytest.raises(InputInvalid) as info:
        model.predict({"x": np.ones((2, 5), np.float32)})
    assert info.value.input_name == "x" and "Got: 5 Expected: 4" in str(info.value)
    np.testing.assert_allclose(model.predict({"x": batch(2)})["y"], batch(2) @ W + B, rtol=1e-5,
                               atol=1e-5)


def test_predict_after_unload_is_inference_failed(gemm_onnx: Path) -> None:
    model = OnnxBackend().load(gemm_onnx, MANIFEST, BackendOptions())
    model.unload()
    model.unload()
    with pytest.raises(InferenceFailed, match="unloaded"):
        model.predict({"x": batch(1)})


def test_extra_options_are_applied(gemm_onnx: Path) -> None:
    extra = {"graph_optimization_level": "disable", "execution_mode": "parallel",
             "session.intra_op.allow_spinning": "0", "pool_size": 3}  # pool_size is tflite's
    options = BackendOptions(intra_op_threads=1, inter_op_threads=2, extra=extra)
    model = OnnxBackend().load(gemm_onnx, MANIFEST, options)
    np.testing.assert_allclose(model.predict({"x": batch(3)})["y"], batch(3) @ W + B, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("extra", [{"graph_optimization_level": "max"},
                                   {"graph_optimization_level": 99},
                                   {"execution_mode": "async"}])
def test_bad_extra_options_are_a_swap_error(gemm_onnx: Path, extra: dict[str, Any]) -> None:
    with pytest.raises(SwapError, match="backend option"):
        OnnxBackend().load(gemm_onnx, MANIFEST, BackendOptions(extra=extra))


def test_custom_op_model_cannot_load(tmp_path: Path) -> None:
    path = tmp_path / "custom.onnx"
    path.write_bytes(gemm_model(op="FancyGemm"))
    with pytest.raises(SwapError):
        OnnxBackend().load(path, MANIFEST, BackendOptions())
