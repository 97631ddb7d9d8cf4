from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.backends import BackendOptions, get_backend
from edge_runtime.backends.tflite import TfliteBackend
from edge_runtime.errors import InferenceFailed, InputInvalid, SwapError
from edge_runtime.manifest import Manifest
from tests.edge_runtime.backends.helpers import X_4, Y_3, batch, gemm_weights, make_manifest
from tests.edge_runtime.backends.tflite_models import dense_tflite

pytestmark = pytest.mark.tflite

W, B = gemm_weights()
Z_3 = ("z", "float32", ("batch", 3))
MANIFEST = make_manifest("tflite")
# signature / tensors named x,y,z / tensors named arg0, tfl.add, tfl.mul (bound by order)
VARIANTS = {"signature": {"signature": True}, "named": {"signature": False},
            "unnamed": {"signature": False, "named": False}}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tflite")
    paths = {}
    for variant, kw in VARIANTS.items():
        for with_z in (False, True):
            path = root / f"{variant}{'-z' if with_z else ''}.tflite"
            path.write_bytes(dense_tflite(W, B, with_z=with_z, **kw))
            paths[path.stem] = path
    return paths


def load(path: Path, manifest: Manifest = MANIFEST, **extra: Any) -> Any:
    return TfliteBackend().load(path, manifest, BackendOptions(intra_op_threads=2, extra=extra))


def expect_y(x: Any) -> Any:
    return x @ W + B


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_numpy_for_any_batch_size(models: dict[str, Path], variant: str) -> None:
    model = get_backend("tflite").load(models[variant], MANIFEST, BackendOptions())
    for n in (1, 5, 5, 1, 3):  # resizes and returns to an earlier size
        x = batch(n)
        out = model.predict({"x": x})
        assert list(out) == ["y"]
        assert out["y"].dtype == np.float32
        np.testing.assert_allclose(out["y"], expect_y(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["signature-z", "named-z", "unnamed-z"])
def test_outputs_are_bound_by_manifest_name_or_order(models: dict[str, Path], variant: str
                                                      ) -> None:
    x = batch(4)
    model = load(models[variant], make_manifest("tflite", outputs=[Y_3, Z_3]))
    out = model.predict({"x": x})
    assert list(out) == ["y", "z"]
    np.testing.assert_allclose(out["z"], expect_y(x) ** 2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["y"], expect_y(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["signature-z", "named-z"])
def test_output_subset_and_order_by_name(models: dict[str, Path], variant: str) -> None:
    x = batch(2)
    out = load(models[variant], make_manifest("tflite", outputs=[Z_3])).predict({"x": x})
    assert list(out) == ["z"]
    np.testing.assert_allclose(out["z"], expect_y(x) ** 2, rtol=1e-4, atol=1e-4)
    out = load(models[variant], make_manifest("tflite", outputs=[Z_3, Y_3])).predict({"x": x})
    assert list(out) == ["z", "y"]
    np.testing.assert_allclose(out["y"], expect_y(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("variant", "pool_size"), [("signature", 1), ("unnamed", 1),
                                                     ("signature", 3), ("named", 3)])
def test_concurrent_predicts_are_correct(models: dict[str, Path], variant: str,
                                         pool_size: int) -> None:
    model = load(models[variant], pool_size=pool_size)

    def work(seed: int) -> int:
        for i in range(200):
            x = batch(1 + (seed + i) % 4, seed=seed * 1000 + i)  # batch sizes interleave
            np.testing.assert_allclose(model.predict({"x": x})["y"], expect_y(x), rtol=1e-5,
                                       atol=1e-5)
        return 200

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(work, range(8))) == 1600


def test_bad_model_bytes_is_a_swap_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.tflite"
    path.write_bytes(b"this is not a flatbuffer" * 4)
    with pytest.raises(SwapError) as info:
        load(path)
    assert (info.value.name, info.value.version) == ("m", "1")
    assert "bad.tflite" in info.value.reason


def test_missing_file_is_a_swap_error(tmp_path: Path) -> None:
    with pytest.raises(SwapError, match=r"missing\.tflite"):
        load(tmp_path / "missing.tflite")


@pytest.mark.parametrize(("variant", "manifest", "match"), [
    ("signature", make_manifest("tflite", inputs=[("input", "float32", ("batch", 4))]),
     "model inputs"),
    ("signature", make_manifest("tflite", outputs=[("scores", "float32", ("batch", 3))]),
     "model outputs"),
    ("unnamed", make_manifest("tflite", inputs=[X_4, ("x2", "float32", ("batch", 4))]),
     "model inputs"),
    ("named", make_manifest("tflite", inputs=[("x", "int64", ("batch", 4))]), "quantized"),
    ("signature", make_manifest("tflite", outputs=[("y", "int8", ("batch", 3))]), "quantized"),
])
def test_manifest_that_does_not_fit_the_model_is_a_swap_error(
        models: dict[str, Path], variant: str, manifest: Manifest, match: str) -> None:
    with pytest.raises(SwapError, match=match):
        load(models[variant], manifest)


@pytest.mark.parametrize(("extra", "match"), [({"signature_key": "predict"}, "signature"),
                                              ({"pool_size": 0}, "pool_size"),
                                              ({"xnnpack": "yes"}, "xnnpack")])
def test_bad_extra_options_are_a_swap_error(models: dict[str, Path], extra: dict[str, Any],
                                            match: str) -> None:
    with pytest.raises(SwapError, match=match):
        load(models["signature"], **extra)


@pytest.mark.parametrize("variant", ["signature", "unnamed"])
def test_an_input_the_model_refuses_at_runtime_is_input_invalid_and_model_recovers(
        models: dict[str, Path], variant: str) -> None:
    model = load(models[variant])
    with pytest.raises(InputInvalid) as info:
        model.predict({"x": np.ones((2, 5), np.float32)})
    assert info.value.input_name == "x" and "failed to prepare" in str(info.value)
    x = batch(2)
    np.testing.assert_allclose(model.predict({"x": x})["y"], expect_y(x), rtol=1e-5, atol=1e-5)


def test_without_xnnpack_and_explicit_signature(models: dict[str, Path]) -> None:
    model = load(models["signature"], xnnpack=False, signature_key="serving_default")
    x = batch(3)
    np.testing.assert_allclose(model.predict({"x": x})["y"], expect_y(x), rtol=1e-5, atol=1e-5)


def test_predict_after_unload_is_inference_failed(models: dict[str, Path]) -> None:
    model = load(models["named"], pool_size=2)
    model.predict({"x": batch(1)})
    model.unload()
    model.unload()
    with pytest.raises(InferenceFailed, match="unloaded"):
        model.predict({"x": batch(1)})
