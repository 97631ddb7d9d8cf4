"""The app's two routes to a V2 JSON infer answer alike: the everyday request through
``_v2_infer_json`` and the general ``_v2_infer`` (forced by a path the app has not seen yet,
or a request with a binary header). In-process ASGI calls, no server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import orjson
import pytest

from edge_runtime.api.app import App
from edge_runtime.codecs.v2 import decode_plain
from edge_runtime.runtime import Runtime
from tests.conftest import Keys, build_package

PATH = "/v2/models/gemm/infer"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Any:
    pkg = build_package(tmp_path_factory.mktemp("pkg"), keys.signer)
    rt = Runtime(tmp_path_factory.mktemp("store") / "store", trusted_keys=(keys.public,))
    rt.install(pkg)
    rt.activate("gemm", "1")
    yield App(rt, token=None, admin_token="admin", max_body_bytes=1 << 16)
    rt.close()


def call(app: App, body: bytes, path: str = PATH, headers: list[tuple[bytes, bytes]] | None = None
         ) -> tuple[int, bytes]:
    scope = {"type": "http", "method": "POST", "path": path, "client": ("127.0.0.1", 1),
             "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


def general(app: App, body: bytes) -> tuple[int, bytes]:
    """The same request through the general route: forget the learned path first."""
    saved, app._plain_paths = app._plain_paths, {}
    try:
        return call(app, body)
    finally:
        app._plain_paths = saved


def item(**kw: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [2, 4], "datatype": "FP32",
            "data": np.arange(8, dtype=np.float32).tolist()} | kw


BODIES = [
    {"inputs": [item()]},
    {"id": "req-9", "inputs": [item()]},
    {"inputs": [item(datatype="FP64")]},  # cast by validation
    {"inputs": [item(shape=[2, 3], data=list(range(6)))]},  # wrong shape for the model
    {"inputs": [item(name="nope")]},
    {"inputs": [item(shape=[3, 4])]},  # size does not match shape
    {"inputs": [item()], "outputs": [{"name": "y"}]},
    {"inputs": [item()], "outputs": [{"name": "missing"}]},
    {"inputs": [item(datatype="BYTES", data=["a"] * 8)]},
]


@pytest.mark.parametrize("doc", BODIES)
def test_both_routes_give_the_same_answer(app: App, doc: Any) -> None:
    body = json.dumps(doc).encode()
    call(app, body)  # the app learns the path
    assert app._plain_paths == {PATH: "gemm"}
    fast, slow = call(app, body), general(app, body)
    assert fast[0] == slow[0]
    assert orjson.loads(fast[1]) == orjson.loads(slow[1])


def test_not_json_and_an_unknown_model(app: App) -> None:
    call(app, json.dumps({"inputs": [item()]}).encode())
    assert call(app, b"{oops") == general(app, b"{oops")
    status, body = call(app, json.dumps({"inputs": [item()]}).encode(),
                        "/v2/models/other/infer")
    assert status == 404 and "other" in orjson.loads(body)["error"]
    assert "/v2/models/other/infer" not in app._plain_paths  # only active models are learned


def test_the_everyday_route_counts_requests_and_errors(app: App) -> None:
    metrics = app.rt.telemetry.metrics
    before = metrics.totals_all()["gemm", "1"]
    call(app, json.dumps({"inputs": [item()]}).encode())
    call(app, json.dumps({"inputs": [item(shape=[2, 3], data=list(range(6)))]}).encode())
    after = metrics.totals_all()["gemm", "1"]
    assert after.requests - before.requests == 2
    assert after.errors.get("invalid_input", 0) - before.errors.get("invalid_input", 0) == 1
    assert after.items - before.items == 2


def test_a_binary_request_takes_the_general_route(app: App) -> None:
    raw = np.arange(8, dtype="<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    status, body = call(app, header + raw, headers=[
        (b"inference-header-content-length", str(len(header)).encode())])
    assert status == 200 and orjson.loads(body)["outputs"][0]["shape"] == [2, 3]


def fast(app: App, body: bytes, url: bytes = PATH.encode(),
         headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, bytes] | None:
    """The builtin server's synchronous route (``App.fast``); None when it declines."""
    answer = app.fast(url, headers or [], body)
    if answer is None:
        return None
    status, out, hdrs = answer
    assert hdrs == [(b"content-type", b"application/json")]
    return status, out


@pytest.mark.parametrize("doc", BODIES)
def test_the_servers_fast_route_answers_as_asgi_or_declines(app: App, doc: Any) -> None:
    body = json.dumps(doc).encode()
    call(app, body)  # the app learns the path
    answer, slow = fast(app, body), general(app, body)
    # everyday bodies only (outputs asked for, strings, a size that does not fit its shape
    # are not); ASGI answers the rest
    assert (answer is not None) == (decode_plain(body) is not None)
    if answer is not None:
        assert answer[0] == slow[0] and orjson.loads(answer[1]) == orjson.loads(slow[1])


def test_the_fast_route_declines_what_it_does_not_know(app: App) -> None:
    body = json.dumps({"inputs": [item()]}).encode()
    call(app, body)
    assert fast(app, body) is not None
    assert fast(app, body, url=PATH.encode() + b"?x=1") is None  # a query string
    assert fast(app, body, url=b"/v2/models/other/infer") is None  # not a learned path
    assert fast(app, b"{oops") is None  # ASGI words the error
    assert fast(app, body, headers=[(b"inference-header-content-length", b"5")]) is None


def test_the_fast_route_leaves_a_missing_token_to_asgi(app: App) -> None:
    body = json.dumps({"inputs": [item()]}).encode()
    call(app, body)
    saved, app._token = app._token, b"Bearer s3cret"
    try:
        assert fast(app, body) is None
        assert fast(app, body, headers=[(b"authorization", b"Bearer wrong")]) is None
        ok = fast(app, body, headers=[(b"authorization", b"Bearer s3cret")])
        assert ok is not None and ok[0] == 200
        assert call(app, body)[0] == 401
    finally:
        app._token = saved
