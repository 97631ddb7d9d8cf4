"""Whole models: the example nets exported to TFLite against onnxruntime, the package through the
pipeline, and the runtime serving it (in process and over HTTP)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters import examples, sources
from converters.pipeline import ConvertRequest, convert
from converters.tflite.export import to_tflite
from converters.tflite.validate import TfliteSession, count_ops
from edge_runtime.package import VALIDATION, open_package
from edge_runtime.runtime import Runtime
from tests.conftest import Keys
from tests.converters.tflite.helpers import run_onnx
from tests.integration.conftest import daemon_factory  # noqa: F401  (fixture)

pytestmark = [pytest.mark.tflite, pytest.mark.convert, pytest.mark.torch]

NETS = {
    "mlp": (examples.torch_mlp, (1, 64)),
    "cnn": (examples.small_cnn, (1, 1, 8, 8)),
    "mobilenet": (examples.mobilenet_style, (1, 3, 32, 32)),
}


@pytest.fixture(scope="module")
def nets() -> dict[str, sources.Source]:
    pytest.importorskip("torch", reason="torch is installed by ./scripts/test")
    import torch

    torch.manual_seed(0)
    return {name: sources.from_torch(factory().eval(), shape, description=name)
            for name, (factory, shape) in NETS.items()}


@pytest.mark.parametrize("name", list(NETS))
def test_example_net_matches_onnxruntime(nets: dict[str, sources.Source], name: str) -> None:
    content = to_tflite(nets[name].model)
    shape = NETS[name][1]
    x = np.random.default_rng(1).standard_normal((20, *shape[1:])).astype(np.float32)
    want = run_onnx(nets[name].model, {"input": x})[0]
    (got,) = TfliteSession(content).run(["output"], {"input": x})
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    if name == "mobilenet":  # one transpose after the NCHW input, none around each op
        assert count_ops(content, "TRANSPOSE") <= 2


@pytest.fixture(scope="module")
def cnn_package(nets: dict[str, sources.Source], keys: Keys,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tflite-pkg")
    x, y = examples.digits()
    img = x.reshape(-1, 1, 8, 8)
    np.savez(root / "calib.npz", input=img[:64])
    np.savez(root / "valid.npz", input=img[1300:1400], labels=y[1300:1400])
    req = ConvertRequest(name="cnn", version="1", precision="int8-weight-only",
                         out_dir=root, signer=keys.signer, calibration=root / "calib.npz",
                         validation=root / "valid.npz", target="tflite", batch_n=4)
    return convert(nets["cnn"], req, log=lambda _m: None).package


def test_package_format_and_report(cnn_package: Path, keys: Keys) -> None:
    pkg = open_package(cnn_package, keys.trust)
    assert pkg.manifest.format == "tflite" and pkg.manifest.model_file == "model.tflite"
    assert pkg.manifest.precision == "int8-weight-only"
    assert pkg.manifest.inputs[0].shape == ("batch", 1, 8, 8)
    report = pkg.read_json(VALIDATION)
    assert report["reference"] == "fp32 onnxruntime" and report["target"] == "tflite"
    fp32, int8 = report["candidates"]
    assert fp32["precision"] == "fp32" and fp32["outputs"][0]["max_abs"] < 1e-4
    assert int8["size_ratio"] <= 0.30


def test_runtime_serves_tflite_package(cnn_package: Path, keys: Keys, tmp_path: Path,
                                       nets: dict[str, sources.Source]) -> None:
    x = np.random.default_rng(2).random((3, 1, 8, 8)).astype(np.float32)
    want = run_onnx(nets["cnn"].model, {"input": x})[0]
    with Runtime(tmp_path / "store", trusted_keys=(keys.public,), restore=False) as rt:
        rt.install(cnn_package)
        rt.activate("cnn", "1")
        one = rt.predict("cnn", x[:1])["output"]
        three = rt.predict("cnn", x)["output"]  # a fixed-batch model, served in chunks
    assert one.shape == (1, 10) and three.shape == (3, 10)
    np.testing.assert_allclose(three, want, atol=0.05)
    np.testing.assert_allclose(one, three[:1], atol=1e-6)


def test_daemon_serves_tflite_package_over_http(cnn_package: Path, keys: Keys, tmp_path: Path,
                                                daemon_factory: Any) -> None:  # noqa: F811
    store = tmp_path / "store"
    with Runtime(store, trusted_keys=(keys.public,), restore=False) as rt:
        rt.install(cnn_package)
        rt.activate("cnn", "1")
    d = daemon_factory(store, "--trusted-keys", str(keys.public)).start()
    x = np.random.default_rng(3).random((2, 1, 8, 8)).astype(np.float32)
    status, doc = d.post_json("/v2/models/cnn/infer", {"inputs": [
        {"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32",
         "data": x.reshape(-1).tolist()}]})
    assert status == 200, json.dumps(doc)
    out = doc["outputs"][0]  # type: ignore[index]
    assert out["name"] == "output" and out["shape"] == [2, 10]
    d.stop()
