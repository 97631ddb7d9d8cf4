"""The real, unmodified tritonclient.http.InferenceServerClient against a real daemon.

tritonclient sends no Content-Type, and asks for every output as binary data unless told
otherwise; results must equal the numpy math of the models.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from edge_runtime import __version__
from tests.conftest import Keys, build_package
from tests.integration.conftest import DaemonFactory
from tests.integration.support import (
    affine,
    build_onnx_package,
    image_model,
    make_store,
    mixed_model,
)

X = np.arange(12, dtype=np.float32).reshape(3, 4) / 5


@dataclass
class Triton:
    client: Any
    packages: dict[str, Path]
    keys: Keys

    def math(self, which: str, x: np.ndarray) -> np.ndarray:
        return affine(self.packages[which], self.keys, x)


@pytest.fixture(scope="module")
def tc(tmp_path_factory: pytest.TempPathFactory, keys: Keys,
       module_daemon_factory: DaemonFactory) -> Iterator[Triton]:
    tmp = tmp_path_factory.mktemp("triton")
    pkgs = {"gemm1": build_package(tmp / "pkgs", keys.signer, version="1", seed=1),
            "gemm2": build_package(tmp / "pkgs", keys.signer, version="2", seed=2),
            "img": build_onnx_package(tmp / "pkgs", keys.signer, image_model(), name="img"),
            "mixed": build_onnx_package(tmp / "pkgs", keys.signer, mixed_model(), name="mixed")}
    store = make_store(tmp / "store", keys, list(pkgs.values()),
                       {"gemm": "1", "img": "1", "mixed": "1"})
    daemon = module_daemon_factory(store, "--trusted-keys", str(keys.public)).start()
    client = triton.InferenceServerClient(daemon.url.removeprefix("http://"))
    try:
        yield Triton(client, pkgs, keys)
    finally:
        client.close()


def infer_input(name: str, arr: np.ndarray, datatype: str, *, binary: bool) -> Any:
    return triton.InferInput(name, list(arr.shape), datatype).set_data_from_numpy(
        arr, binary_data=binary)


def test_server_and_model_readiness(tc: Triton) -> None:
    c = tc.client
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("gemm") and c.is_model_ready("gemm", "1")
    assert not c.is_model_ready("gemm", "2")  # installed, not active
    assert not c.is_model_ready("nope")
    meta = c.get_server_metadata()
    assert meta["name"] == "edge-runtime" and meta["version"] == __version__
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata(tc: Triton) -> None:
    meta = tc.client.get_model_metadata("gemm")
    assert meta["name"] == "gemm" and meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    assert tc.client.get_model_metadata("gemm", "1") == meta
    img = tc.client.get_model_metadata("img")
    assert img["inputs"][0]["shape"] == [-1, 3, 8, 8]
    with pytest.raises(InferenceServerException, match="not found"):
        tc.client.get_model_metadata("nope")


@pytest.mark.parametrize(("binary_in", "binary_out"),
                         [(False, False), (True, True), (False, True), (True, False)],
                         ids=["json", "binary", "json-in-binary-out", "binary-in-json-out"])
def test_infer_gemm(tc: Triton, binary_in: bool, binary_out: bool) -> None:
    result = tc.client.infer(
        "gemm", [infer_input("x", X, "FP32", binary=binary_in)],
        outputs=[triton.InferRequestedOutput("y", binary_data=binary_out)], request_id="t-1")
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == ("gemm", "1")
    assert response["id"] == "t-1"
    assert ("parameters" in response["outputs"][0]) is binary_out
    np.testing.assert_allclose(result.as_numpy("y"), tc.math("gemm1", X), rtol=1e-5, atol=1e-6)


def test_infer_defaults_all_outputs_binary(tc: Triton) -> None:
    result = tc.client.infer("gemm", [infer_input("x", X, "FP32", binary=True)],
                             model_version="1")
    assert result.get_response()["outputs"][0]["parameters"] == {"binary_data_size": 36}
    np.testing.assert_allclose(result.as_numpy("y"), tc.math("gemm1", X), rtol=1e-5, atol=1e-6)


def test_infer_image_model(tc: Triton) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    result = tc.client.infer("img", [infer_input("x", x, "FP32", binary=True)])
    y = result.as_numpy("y")
    assert y.shape == (1, 10) and y.dtype == np.float32
    np.testing.assert_allclose(y, tc.math("img", x), rtol=1e-4, atol=1e-5)


def test_infer_two_inputs_with_int64(tc: Triton) -> None:
    a = np.full((2, 4), 0.5, dtype=np.float32)
    ids = np.array([[1, 2, 3, 4], [-4, -3, -2, -1]], dtype=np.int64)
    result = tc.client.infer("mixed", [infer_input("a", a, "FP32", binary=True),
                                       infer_input("ids", ids, "INT64", binary=False)])
    np.testing.assert_array_equal(result.as_numpy("y"), a + ids)


def test_infer_errors_surface_as_exceptions(tc: Triton) -> None:
    with pytest.raises(InferenceServerException, match="model nope not found") as exc:
        tc.client.infer("nope", [infer_input("x", X, "FP32", binary=True)])
    assert exc.value.status() == "404"
    with pytest.raises(InferenceServerException, match="gemm version 2 is not ready"):
        tc.client.infer("gemm", [infer_input("x", X, "FP32", binary=True)], model_version="2")
    bad = np.zeros((2, 5), dtype=np.float32)
    with pytest.raises(InferenceServerException, match=r"shape \[2, 5\] does not match"):
        tc.client.infer("gemm", [infer_input("x", bad, "FP32", binary=True)])
    with pytest.raises(InferenceServerException, match="requested output 'z'"):
        tc.client.infer("gemm", [infer_input("x", X, "FP32", binary=True)],
                        outputs=[triton.InferRequestedOutput("z")])
    # and the daemon goes on serving
    assert tc.client.infer("gemm", [infer_input("x", X, "FP32", binary=True)]).as_numpy("y") \
        is not None
