"""Every endpoint of a real daemon, over HTTP on a free loopback port.

The store holds gemm 1 (active) and gemm 2 (installed, not active), an image model and a model
with two inputs of different dtypes. Tests share the daemon; none of them changes what is active.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import __version__
from tests.conftest import Keys, build_package
from tests.integration.conftest import DaemonFactory, DaemonProc
from tests.integration.support import (
    Reply,
    affine,
    build_onnx_package,
    call,
    image_model,
    make_store,
    mixed_model,
    post_json,
    split_binary_response,
    v2_binary,
    v2_json,
)

X = np.arange(8, dtype=np.float32).reshape(2, 4) / 4


@dataclass
class Served:
    daemon: DaemonProc
    packages: dict[str, Path]
    keys: Keys

    @property
    def url(self) -> str:
        return self.daemon.url

    def math(self, which: str, x: np.ndarray) -> np.ndarray:
        return affine(self.packages[which], self.keys, x)

    def get(self, path: str) -> Reply:
        return call(self.url, "GET", path)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Keys,
           module_daemon_factory: DaemonFactory) -> Served:
    tmp = tmp_path_factory.mktemp("http-api")
    pkgs = {"gemm1": build_package(tmp / "pkgs", keys.signer, version="1", seed=1),
            "gemm2": build_package(tmp / "pkgs", keys.signer, version="2", seed=2),
            "img": build_onnx_package(tmp / "pkgs", keys.signer, image_model(), name="img"),
            "mixed": build_onnx_package(tmp / "pkgs", keys.signer, mixed_model(), name="mixed")}
    store = make_store(tmp / "store", keys, list(pkgs.values()),
                       {"gemm": "1", "img": "1", "mixed": "1"})
    daemon = module_daemon_factory(store, "--trusted-keys", str(keys.public)).start()
    return Served(daemon, pkgs, keys)


# -- health and metadata ----------------------------------------------------------------------
def test_health_and_server_metadata(served: Served) -> None:
    assert served.get("/v2/health/live").json() == {"live": True}
    ready = served.get("/v2/health/ready")
    assert ready.status == 200 and ready.json() == {"ready": True}
    server = served.get("/v2")
    assert server.status == 200 and server.headers["content-type"] == "application/json"
    assert server.json() == {"name": "edge-runtime", "version": __version__,
                             "extensions": ["binary_tensor_data", "model_repository"]}
    assert "no route" in served.get("/v2/health/other").error(404)


def test_model_metadata(served: Served) -> None:
    doc = served.get("/v2/models/gemm").json()
    assert doc == {"name": "gemm", "versions": ["1", "2"], "platform": "onnx_fp32",
                   "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                   "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]}
    assert served.get("/v2/models/gemm/versions/1").json() == doc
    img = served.get("/v2/models/img").json()
    assert img["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]
    mixed = served.get("/v2/models/mixed").json()
    assert [(i["name"], i["datatype"]) for i in mixed["inputs"]] == [("a", "FP32"),
                                                                      ("ids", "INT64")]
    # version 2 is installed but not active: Triton answers 400 for a model that is not ready
    assert "gemm version 2 is not ready" in served.get("/v2/models/gemm/versions/2").error(400)
    assert "model nope not found" in served.get("/v2/models/nope").error(404)
    assert served.get("/v2/models/gemm/bogus").error(404)


def test_model_ready(served: Served) -> None:
    for path in ("/v2/models/gemm/ready", "/v2/models/gemm/versions/1/ready"):
        reply = served.get(path)
        assert reply.status == 200, path
        assert reply.json() == {"name": "gemm", "version": "1", "ready": True}
    assert "not ready" in served.get("/v2/models/gemm/versions/2/ready").error(400)
    assert "not ready" in served.get("/v2/models/gemm/versions/7/ready").error(400)
    assert "not found" in served.get("/v2/models/nope/ready").error(404)
    assert "not found" in served.get("/v2/models/nope/versions/1/ready").error(404)


# -- KServe V2 inference ----------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v2/models/gemm/infer", "/v2/models/gemm/versions/1/infer"])
def test_v2_infer_json(served: Served, path: str) -> None:
    reply = post_json(served.url, path, v2_json("x", X, id="req-7"))
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    doc = reply.json()
    assert (doc["model_name"], doc["model_version"], doc["id"]) == ("gemm", "1", "req-7")
    (out,) = doc["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("y", "FP32", [2, 3])
    np.testing.assert_allclose(np.reshape(out["data"], (2, 3)), served.math("gemm1", X),
                               rtol=1e-5, atol=1e-6)


def test_v2_infer_inactive_version_is_400(served: Served) -> None:
    reply = post_json(served.url, "/v2/models/gemm/versions/2/infer", v2_json("x", X))
    assert "gemm version 2 is not ready" in reply.error(400)


def test_v2_binary_inputs_and_outputs(served: Served) -> None:
    body, headers = v2_binary({"x": ("FP32", X)},
                              outputs=[{"name": "y", "parameters": {"binary_data": True}}])
    reply = call(served.url, "POST", "/v2/models/gemm/infer", body, headers)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/octet-stream"
    doc, tail = split_binary_response(reply.body,
                                      int(reply.headers["inference-header-content-length"]))
    (out,) = doc["outputs"]
    assert out["parameters"] == {"binary_data_size": 24} and len(tail) == 24
    y = np.frombuffer(tail, dtype="<f4").reshape(out["shape"])
    np.testing.assert_allclose(y, served.math("gemm1", X), rtol=1e-5, atol=1e-6)


def test_v2_binary_input_json_output(served: Served) -> None:
    body, headers = v2_binary({"x": ("FP32", X)})
    reply = call(served.url, "POST", "/v2/models/gemm/infer", body, headers)
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    data = reply.json()["outputs"][0]["data"]
    np.testing.assert_allclose(np.reshape(data, (2, 3)), served.math("gemm1", X), rtol=1e-5,
                               atol=1e-6)


def test_v2_binary_data_output_parameter(served: Served) -> None:
    doc = v2_json("x", X, parameters={"binary_data_output": True})
    reply = post_json(served.url, "/v2/models/gemm/infer", doc)
    assert reply.status == 200 and "inference-header-content-length" in reply.headers
    header, tail = split_binary_response(reply.body,
                                         int(reply.headers["inference-header-content-length"]))
    assert header["outputs"][0]["parameters"]["binary_data_size"] == len(tail) == 24


def test_v2_two_inputs_of_different_dtypes(served: Served) -> None:
    a = np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 4)
    ids = np.arange(8, dtype=np.int64).reshape(2, 4) - 3
    doc = {"inputs": [v2_json("a", a)["inputs"][0], v2_json("ids", ids, "INT64")["inputs"][0]]}
    reply = post_json(served.url, "/v2/models/mixed/infer", doc)
    assert reply.status == 200, reply.body
    np.testing.assert_allclose(np.reshape(reply.json()["outputs"][0]["data"], (2, 4)), a + ids)
    body, headers = v2_binary({"a": ("FP32", a), "ids": ("INT64", ids)})
    reply = call(served.url, "POST", "/v2/models/mixed/infer", body, headers)
    np.testing.assert_allclose(np.reshape(reply.json()["outputs"][0]["data"], (2, 4)), a + ids)


def test_v2_image_model(served: Served) -> None:
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    reply = post_json(served.url, "/v2/models/img/infer", v2_json("x", x))
    assert reply.status == 200, reply.body
    out = reply.json()["outputs"][0]
    assert out["shape"] == [2, 10]
    np.testing.assert_allclose(np.reshape(out["data"], (2, 10)), served.math("img", x),
                               rtol=1e-4, atol=1e-5)


# -- TF-Serving and /predict ------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/models/gemm:predict", "/v1/models/gemm/versions/1:predict"])
def test_tfserving_instances(served: Served, path: str) -> None:
    reply = post_json(served.url, path, {"instances": X.tolist(), "signature_name": "serve"})
    assert reply.status == 200, reply.body
    np.testing.assert_allclose(reply.json()["predictions"], served.math("gemm1", X), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("inputs", [X.tolist(), {"x": X.tolist()}], ids=["tensor", "named"])
def test_tfserving_columnar_inputs(served: Served, inputs: object) -> None:
    reply = post_json(served.url, "/v1/models/gemm:predict", {"inputs": inputs})
    assert reply.status == 200, reply.body
    np.testing.assert_allclose(reply.json()["outputs"], served.math("gemm1", X), rtol=1e-5,
                               atol=1e-6)


def test_tfserving_named_instances_of_two_input_model(served: Served) -> None:
    instances = [{"a": [0.5, 1, 1.5, 2], "ids": [1, 2, 3, 4]}, {"a": [0, 0, 0, 0],
                                                               "ids": [-1, 0, 1, 2]}]
    reply = post_json(served.url, "/v1/models/mixed:predict", {"instances": instances})
    assert reply.status == 200, reply.body
    assert reply.json() == {"predictions": [[1.5, 3, 4.5, 6], [-1, 0, 1, 2]]}


def test_tfserving_status(served: Served) -> None:
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}
    assert served.get("/v1/models/gemm").json() == expected
    assert served.get("/v1/models/gemm/versions/1").json() == expected
    assert "not ready" in served.get("/v1/models/gemm/versions/2").error(400)
    assert "not found" in served.get("/v1/models/nope").error(404)
    reply = post_json(served.url, "/v1/models/gemm/versions/2:predict", {"instances": [[1] * 4]})
    assert "not ready" in reply.error(400)


@pytest.mark.parametrize(("doc", "rows"), [
    (X.tolist(), X), (X[0].tolist(), X[:1]), ({"x": X.tolist()}, X)],
    ids=["batch", "one-instance", "named"])
def test_predict_simple(served: Served, doc: object, rows: np.ndarray) -> None:
    reply = post_json(served.url, "/predict/gemm", doc)
    assert reply.status == 200, reply.body
    (name, y), = reply.json()["outputs"].items()
    assert name == "y"
    np.testing.assert_allclose(y, served.math("gemm1", rows), rtol=1e-5, atol=1e-6)


def test_predict_simple_unknown_model(served: Served) -> None:
    assert "model nope not found" in post_json(served.url, "/predict/nope", [[1] * 4]).error(404)


# -- metrics and routing ----------------------------------------------------------------------
def _counter(text: str, series: str) -> int:
    match = re.search(rf"^{re.escape(series)} (\d+)$", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def test_metrics_count_requests_and_errors(served: Served) -> None:
    requests = 'edge_requests_total{model="gemm",version="1"}'
    errors = 'edge_errors_total{model="gemm",version="1",kind="invalid_input"}'
    before = served.get("/metrics")
    assert before.status == 200
    assert before.headers["content-type"].startswith("text/plain; version=0.0.4")
    for _ in range(3):
        assert post_json(served.url, "/predict/gemm", X.tolist()).status == 200
    assert post_json(served.url, "/predict/gemm", [[1, 2, 3]]).status == 400
    after = served.get("/metrics").body.decode()
    assert "# TYPE edge_requests_total counter" in after
    # a failed request counts as a request too
    assert _counter(after, requests) - _counter(before.body.decode(), requests) == 4
    assert _counter(after, errors) - _counter(before.body.decode(), errors) == 1
    assert 'edge_request_duration_seconds_bucket{model="gemm",version="1",le="+Inf"}' in after


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/nope"), ("GET", "/v3/models/gemm"), ("PUT", "/v2"), ("DELETE", "/v2/models/gemm"),
    ("POST", "/v2/models/gemm"), ("GET", "/v2/models/gemm/infer/x"), ("POST", "/metrics")])
def test_unknown_routes_are_404_json(served: Served, method: str, path: str) -> None:
    reply = call(served.url, method, path, b"{}" if method in ("POST", "PUT") else None)
    assert reply.error(404)
