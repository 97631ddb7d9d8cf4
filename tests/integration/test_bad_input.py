"""Bad requests get the right 4xx and a message naming the problem; the daemon keeps serving.

Also the daemon's access rules: the bearer token, the admin token, the body size limit, and
the refusal to serve off loopback without a token.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from tests.conftest import Keys, build_package
from tests.integration.conftest import DaemonFactory, DaemonProc
from tests.integration.support import (
    Reply,
    build_onnx_package,
    call,
    make_store,
    mixed_model,
    post_json,
    v2_binary,
    v2_json,
)

X = np.ones((2, 4), dtype=np.float32)
GEMM = "/v2/models/gemm/infer"
MIXED = "/v2/models/mixed/infer"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    tmp = tmp_path_factory.mktemp("bad-input")
    pkgs = [build_package(tmp / "pkgs", keys.signer),
            build_onnx_package(tmp / "pkgs", keys.signer, mixed_model(), name="mixed")]
    return make_store(tmp / "store", keys, pkgs, {"gemm": "1", "mixed": "1"})


@pytest.fixture(scope="module")
def daemon(store: Path, keys: Keys, module_daemon_factory: DaemonFactory) -> DaemonProc:
    return module_daemon_factory(store, "--trusted-keys", str(keys.public)).start()


def still_serving(d: DaemonProc, headers: dict[str, str] | None = None) -> None:
    assert d.proc is not None and d.proc.poll() is None
    reply = post_json(d.url, GEMM, v2_json("x", X), headers)
    assert reply.status == 200, reply.body
    assert reply.json()["outputs"][0]["shape"] == [2, 3]


def mixed_inputs(a: object = None, ids: object = None, ids_type: str = "INT64"
                 ) -> dict[str, object]:
    return {"inputs": [
        {"name": "a", "shape": [1, 4], "datatype": "FP32", "data": a or [0.5] * 4},
        {"name": "ids", "shape": [1, 4], "datatype": ids_type, "data": ids or [1, 2, 3, 4]}]}


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    body: bytes
    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)


def js(doc: object) -> bytes:
    return json.dumps(doc).encode()


def binary(header: dict[str, object], tail: bytes, header_length: int | None = None
           ) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    head = js(header)
    length = len(head) if header_length is None else header_length
    return head + tail, (("Inference-Header-Content-Length", str(length)),)


_BIN_X = {"name": "x", "shape": [2, 4], "datatype": "FP32"}
_TRUNC_HEAD = binary({"inputs": [{**_BIN_X, "parameters": {"binary_data_size": 32}}]},
                     X.tobytes(), header_length=10_000)
_TRUNC_DATA = binary({"inputs": [{**_BIN_X, "parameters": {"binary_data_size": 64}}]},
                     X.tobytes())
_SHORT_SIZE = binary({"inputs": [{**_BIN_X, "parameters": {"binary_data_size": 16}}]},
                     X.tobytes()[:16])
_EXTRA = binary({"inputs": [{**_BIN_X, "parameters": {"binary_data_size": 32}}]},
                X.tobytes() + b"\0" * 8)

CASES = [
    # shapes
    Case("wrong-shape", GEMM, js(v2_json("x", np.ones((2, 5)))), 400,
         "input 'x': shape [2, 5] does not match [batch, 4]"),
    Case("wrong-rank", GEMM, js(v2_json("x", np.ones(4))), 400, "shape [4] does not match"),
    Case("data-vs-shape", GEMM, js({"inputs": [{**_BIN_X, "data": [1.0] * 7}]}), 400,
         "data has 7 elements but shape [2, 4] needs 8"),
    Case("zero-batch", GEMM, js({"inputs": [{**_BIN_X, "shape": [0, 4], "data": []}]}), 400,
         "batch size is 0"),
    Case("negative-dim", GEMM, js({"inputs": [{**_BIN_X, "shape": [-1, 4], "data": [1] * 4}]}),
         400, "negative dimension"),
    # dtypes
    Case("float-for-int64", MIXED, js(mixed_inputs(ids=[1.5, 2, 3, 4])), 400,
         "input 'ids': floating-point values in data cannot be int64"),
    Case("fp32-datatype-for-int64", MIXED, js(mixed_inputs(ids=[1.0] * 4, ids_type="FP32")), 400,
         "input 'ids': dtype float32 cannot be safely cast to int64"),
    Case("bool-data-for-fp32", GEMM, js({"inputs": [{**_BIN_X, "data": [True] * 8}]}), 400,
         "boolean values in data cannot be float32"),
    Case("bytes-for-fp32", GEMM, js({"inputs": [{**_BIN_X, "datatype": "BYTES",
                                                 "data": ["a"] * 8}]}), 400,
         "input 'x': dtype object cannot be safely cast to float32"),
    Case("unknown-datatype", GEMM, js({"inputs": [{**_BIN_X, "datatype": "FP8",
                                                   "data": [1] * 8}]}), 400,
         "unknown datatype 'FP8'"),
    Case("int64-out-of-range", MIXED, js(mixed_inputs(ids=[2**70, 1, 2, 3])), 400,
         "input 'ids'"),
    # names
    Case("renamed-input", GEMM, js(v2_json("z", X)), 400,
         "input 'x': missing (missing: 'x'; unknown: 'z'; the model takes 'x')"),
    Case("extra-input", GEMM, js({"inputs": [*v2_json("x", X)["inputs"],
                                             *v2_json("z", X)["inputs"]]}), 400,
         "input 'z': not an input of this model (the model takes 'x')"),
    Case("missing-input", MIXED, js({"inputs": mixed_inputs()["inputs"][:1]}), 400,  # type: ignore[index]
         "input 'ids': missing"),
    Case("duplicate-input", GEMM, js({"inputs": v2_json("x", X)["inputs"] * 2}), 400,
         "appears more than once"),
    Case("no-inputs", GEMM, js({"outputs": []}), 400, 'the request has no "inputs"'),
    Case("unknown-output", GEMM, js(v2_json("x", X, outputs=[{"name": "z"}])), 400,
         "requested output 'z' is not an output of this model (outputs: 'y')"),
    # JSON
    Case("malformed-json", GEMM, b'{"inputs": [', 400, "the body is not valid JSON"),
    Case("json-array", GEMM, b"[1, 2]", 400, "the request must be a JSON object"),
    Case("empty-body", GEMM, b"", 400, "not valid JSON"),
    # binary tensors
    Case("header-length-past-body", GEMM, _TRUNC_HEAD[0], 400,
         "Inference-Header-Content-Length 10000 is larger than the", _TRUNC_HEAD[1]),
    Case("binary-size-past-body", GEMM, _TRUNC_DATA[0], 400,
         "input 'x': binary_data_size is 64 but the body is truncated: only 32 bytes are left",
         _TRUNC_DATA[1]),
    Case("binary-size-vs-shape", GEMM, _SHORT_SIZE[0], 400,
         "binary_data_size is 16 bytes but FP32 [2, 4] needs 32", _SHORT_SIZE[1]),
    Case("binary-extra-bytes", GEMM, _EXTRA[0], 400, "8 extra bytes after the JSON header",
         _EXTRA[1]),
    Case("header-length-not-int", GEMM, js(v2_json("x", X)), 400,
         "header Inference-Header-Content-Length is not an integer",
         (("Inference-Header-Content-Length", "ten"),)),
    # TF-Serving and /predict
    Case("tf-both-formats", "/v1/models/gemm:predict",
         js({"instances": X.tolist(), "inputs": X.tolist()}), 400, "not both"),
    Case("tf-no-format", "/v1/models/gemm:predict", js({"rows": []}), 400,
         'the body has no "instances" or "inputs" (keys: \'rows\')'),
    Case("tf-wrong-shape", "/v1/models/gemm:predict", js({"instances": [[1, 2, 3]]}), 400,
         "shape [1, 3] does not match"),
    Case("tf-missing-named-input", "/v1/models/mixed:predict",
         js({"instances": [{"a": [1, 2, 3, 4]}]}), 400, "input 'ids': missing in instances[0]"),
    Case("predict-strings", "/predict/gemm", js([["a", "b", "c", "d"]]), 400,
         "string values in data cannot be float32"),
    Case("predict-unknown-name", "/predict/gemm", js({"z": [1, 2, 3, 4]}), 400,
         "input 'x': missing"),
    # unknown models and routes
    Case("unknown-model-v2", "/v2/models/nope/infer", js(v2_json("x", X)), 404,
         "model nope not found"),
    Case("unknown-model-tf", "/v1/models/nope:predict", js({"instances": [[1] * 4]}), 404,
         "model nope not found"),
    Case("unknown-route", "/v2/modelz/gemm/infer", js(v2_json("x", X)), 404,
         "no route for POST /v2/modelz/gemm/infer"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request_is_4xx_with_message(daemon: DaemonProc, case: Case) -> None:
    reply = call(daemon.url, "POST", case.path, case.body, dict(case.headers))
    assert case.message in reply.error(case.status)
    still_serving(daemon)


@pytest.mark.parametrize(("datatype", "arr"), [
    ("FP64", X.astype(np.float64)), ("FP16", X.astype(np.float16)), ("INT32", X.astype(np.int32)),
    ("BOOL", X.astype(bool))])
def test_lossless_or_same_kind_casts_are_accepted(daemon: DaemonProc, datatype: str,
                                                  arr: np.ndarray) -> None:
    """validate_inputs casts within a kind (FP64 -> FP32) and up from bool and ints."""
    body, headers = v2_binary({"x": (datatype, arr)})
    reply = call(daemon.url, "POST", GEMM, body, headers)
    assert reply.status == 200, reply.body
    json_reply = post_json(daemon.url, GEMM, v2_json("x", arr, datatype))
    assert json_reply.json()["outputs"] == reply.json()["outputs"]


def test_int32_for_int64_input_is_accepted(daemon: DaemonProc) -> None:
    reply = post_json(daemon.url, MIXED, mixed_inputs(ids_type="INT32"))
    assert reply.status == 200
    assert reply.json()["outputs"][0]["data"] == [1.5, 2.5, 3.5, 4.5]


def test_bad_requests_are_counted_as_errors(daemon: DaemonProc) -> None:
    post_json(daemon.url, MIXED, mixed_inputs(ids=[1.5, 2, 3, 4]))
    metrics = call(daemon.url, "GET", "/metrics").body.decode()
    assert 'edge_errors_total{model="mixed",version="1",kind="invalid_input"}' in metrics


def test_admin_endpoints_need_the_admin_token(daemon: DaemonProc) -> None:
    assert daemon.info is not None
    for method, path, body in [("GET", "/admin/status", None), ("GET", "/admin/models", None),
                               ("POST", "/admin/install", js({"package": "/nope.edgepkg"})),
                               ("POST", "/admin/models/gemm/rollback", b"")]:
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": daemon.info.admin_token}):
            reply = call(daemon.url, method, path, body, headers)
            assert "admin token" in reply.error(401), (method, path, headers)
    good = {"Authorization": f"Bearer {daemon.info.admin_token}"}
    assert call(daemon.url, "GET", "/admin/models", None, good).status == 200
    reply = call(daemon.url, "POST", "/admin/install", b"not json", good)
    assert "admin body is not JSON" in reply.error(400)
    assert "admin body needs 'package'" in call(daemon.url, "POST", "/admin/install", b"{}",
                                                good).error(400)
    assert call(daemon.url, "GET", "/admin/nope", None, good).error(404)
    still_serving(daemon)


# -- bearer token -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token_daemon(store: Path, keys: Keys, module_daemon_factory: DaemonFactory) -> DaemonProc:
    return module_daemon_factory(store, "--trusted-keys", str(keys.public),
                                 "--token", "s3cret").start()


PROTECTED = [("GET", "/v2", None), ("GET", "/v2/models/gemm", None),
             ("GET", "/v2/models/gemm/ready", None), ("GET", "/metrics", None),
             ("GET", "/v1/models/gemm", None), ("POST", GEMM, js(v2_json("x", X))),
             ("POST", "/v1/models/gemm:predict", js({"instances": X.tolist()})),
             ("POST", "/predict/gemm", js(X.tolist())), ("GET", "/nope", None)]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[p[1] for p in PROTECTED])
def test_bearer_token_is_required(token_daemon: DaemonProc, method: str, path: str,
                                  body: bytes | None) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                    {"Authorization": "Bearer s3cret "}):
        reply = call(token_daemon.url, method, path, body, headers)
        assert reply.error(401) == "missing or wrong bearer token"
    ok = call(token_daemon.url, method, path, body, {"Authorization": "Bearer s3cret"})
    assert ok.status == (404 if path == "/nope" else 200), ok.body


def test_health_stays_open_with_a_token(token_daemon: DaemonProc) -> None:
    assert call(token_daemon.url, "GET", "/v2/health/live").status == 200
    assert call(token_daemon.url, "GET", "/v2/health/ready").json() == {"ready": True}
    still_serving(token_daemon, {"Authorization": "Bearer s3cret"})


def test_user_token_does_not_open_admin(token_daemon: DaemonProc) -> None:
    reply = call(token_daemon.url, "GET", "/admin/status", None,
                 {"Authorization": "Bearer s3cret"})
    assert "admin token" in reply.error(401)


# -- body size limit --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_daemon(store: Path, keys: Keys, module_daemon_factory: DaemonFactory,
                 tmp_path_factory: pytest.TempPathFactory) -> DaemonProc:
    config = tmp_path_factory.mktemp("config") / "edge.toml"
    config.write_text("[serve]\nmax_body_bytes = 2048\n")
    return module_daemon_factory(store, "--trusted-keys", str(keys.public),
                                 "--config", str(config)).start()


def _chunked(url: str, path: str, chunks: list[bytes]) -> Reply:
    """POST a chunked body, then read the answer even if the server answered (413) and closed
    before the last chunk went out (the send then fails with a broken pipe: not the test's
    concern)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=30) as sock:
        wire = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: application/json\r\nConnection: close\r\n\r\n%s"
                         % (path.encode(), wire))
        resp = HTTPResponse(sock)
        resp.begin()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())


def test_oversized_body_is_413(small_daemon: DaemonProc) -> None:
    big = np.ones((100, 4), dtype=np.float32)
    reply = post_json(small_daemon.url, GEMM, v2_json("x", big))
    assert "over the 2048 byte limit" in reply.error(413)
    body, headers = v2_binary({"x": ("FP32", np.ones((200, 4), dtype=np.float32))})
    reply = call(small_daemon.url, "POST", GEMM, body, headers)
    assert "over the 2048 byte limit" in reply.error(413)
    # no Content-Length: the limit is enforced while the chunks arrive
    reply = _chunked(small_daemon.url, "/predict/gemm", [b"[" + b"[1,2,3,4]," * 300, b"[1,2,3,4]]"])
    assert "over the 2048 byte limit" in reply.error(413)
    ok = _chunked(small_daemon.url, "/predict/gemm", [b"[[1,2,", b"3,4]]"])
    assert ok.status == 200 and len(ok.json()["outputs"]["y"]) == 1
    still_serving(small_daemon)


# -- settings rule ----------------------------------------------------------------------------
def test_serving_off_loopback_needs_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGE_TOKEN"}
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "serve", "--store", str(tmp_path / "s"),
         "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (
        "error: binding to 0.0.0.0 needs a bearer token (--token or EDGE_TOKEN): only loopback "
        "may be open")
