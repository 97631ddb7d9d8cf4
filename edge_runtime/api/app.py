"""The daemon's HTTP API as a plain ASGI app over the in-process Runtime.

    GET  /v2/health/live | /v2/health/ready | /v2
    GET  /v2/models/{name}[/versions/{v}] | .../ready
    POST /v2/models/{name}[/versions/{v}]/infer          KServe V2 (JSON + binary tensors)
    POST /v1/models/{name}[/versions/{v}]:predict        TF-Serving
    POST /predict/{name}                                 one-line convenience
    GET  /metrics                                        Prometheus text
    *    /admin/...                                      local model management (admin token)

Large requests do not hold the event loop: their decoding, inference and encoding run in
worker threads or the decoder process (``offload.py``, ``DataPlane.infer_async``), so health
checks and small requests are answered meanwhile. ``gate`` lets the builtin server refuse a
request with a wrong token before reading its body.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import unquote

from edge_runtime import __version__
from edge_runtime.api import admin
from edge_runtime.api.errors import status_for
from edge_runtime.api.http import (
    JSON,
    Body,
    Receive,
    Request,
    Scope,
    Send,
    json_bytes,
    read_body,
    send,
)
from edge_runtime.api.metrics_access import check_metrics
from edge_runtime.api.offload import INLINE_JSON_MAX, Offload, output_elements
from edge_runtime.codecs import (
    InferRequest,
    check_outputs,
    decode_plain,
    decode_predict,
    decode_request,
    decode_simple,
    encode_plain,
    encode_predict,
    encode_response,
    encode_simple,
    model_metadata,
)
from edge_runtime.dataplane import input_elements
from edge_runtime.errors import EdgeRuntimeError, ModelNotFound, PayloadInvalid, Unauthorized
from edge_runtime.feedback import decode_feedback
from edge_runtime.monitor.prometheus import render
from edge_runtime.runtime import Runtime

log = logging.getLogger("edge_runtime.api")
Response = tuple[int, bytes, list[tuple[bytes, bytes]] | None]
_V2_MODELS = "/v2/models/"
_V1_MODELS = "/v1/models/"
_EXTENSIONS = ["binary_tensor_data", "model_repository"]
METRICS_WINDOW_S = 60.0
_JSON_ONLY = {"Content-Type": "application/json"}
_ALL_OUTPUTS_AS_JSON = InferRequest(None, {})
_PLAIN_PATHS_MAX = 1024


def _ok(doc: Any, status: int = 200) -> Response:
    return status, json_bytes(doc), None


def _split_model_path(rest: str) -> tuple[str, str | None, str]:
    """'name[/versions/v][/tail]' -> (name, version, tail)."""
    parts = rest.split("/")
    name, version, tail = parts[0], None, parts[1:]
    if len(tail) >= 2 and tail[0] == "versions":
        version, tail = tail[1], tail[2:]
    return name, version, "/".join(tail)


class App:
    def __init__(self, runtime: Runtime, *, token: str | None, admin_token: str,
                 max_body_bytes: int, on_shutdown: Callable[[], None] | None = None) -> None:
        self.rt = runtime
        self._token = f"Bearer {token}".encode() if token else None
        self._admin = admin.Admin(runtime, f"Bearer {admin_token}".encode())
        self._limit = max_body_bytes
        self._on_shutdown = on_shutdown
        self.ready = False
        # "/v2/models/NAME/infer" -> NAME, for models that were active when first asked
        self._plain_paths: dict[str, str] = {}
        self._plain_urls: dict[bytes, str] = {}  # the same, as raw URLs (``fast``)
        self.offload = Offload()

    async def __call__(self, scope: Scope, receive: Receive, send_: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send_)
            return
        if scope["type"] != "http":
            return
        try:
            req = Request.from_scope(scope)
            name = self._plain_paths.get(req.path) if req.method == "POST" else None
            if name is not None and req.header_length is None:
                status, body, headers = await self._v2_infer_json(name, req, receive)
            else:
                status, body, headers = await self._route(req, receive)
        except EdgeRuntimeError as exc:
            status, body, headers = status_for(exc), json_bytes({"error": str(exc)}), None
        except Exception as exc:  # never let one request take the daemon down
            log.exception("unhandled error")
            status, body, headers = 500, json_bytes({"error": f"internal error: {exc}"}), None
        await send(send_, status, body, headers)

    async def _lifespan(self, receive: Receive, send_: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send_({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # uvicorn re-raises the captured SIGTERM once serve() returns, so cleanup that
                # must happen (telemetry flush, run file) happens here, not after serve().
                self.ready = False
                self.offload.close()
                if self._on_shutdown is not None:
                    self._on_shutdown()
                await send_({"type": "lifespan.shutdown.complete"})
                return

    def gate(self, url: bytes, headers: list[tuple[bytes, bytes]], client: str | None
             ) -> tuple[int, str] | None:
        """The builtin server's check of a request head before its body is read
        (``HttpServer(gate=...)``): (401, reason) when the token the route needs is missing
        or wrong, else None. The route answers the same when it sees the request."""
        path = url.partition(b"?")[0].decode("latin-1")
        if "%" in path:
            path = unquote(path)
        if path.startswith("/v2/health/"):
            return None
        auth = None
        for key, value in headers:
            if key == b"authorization":
                auth = value
        req = Request("", path, None, auth, None, client)
        try:
            if path.startswith("/admin/"):
                self._admin.check(req)
            elif path == "/metrics":
                check_metrics(self.rt.settings, auth, client, self._token)
            else:
                self._check_token(req)
        except Unauthorized as exc:
            return 401, str(exc)
        return None

    def _check_token(self, req: Request) -> None:
        if self._token is not None and not (
            req.authorization is not None and hmac.compare_digest(req.authorization, self._token)
        ):
            raise Unauthorized()

    async def _route(self, req: Request, receive: Receive) -> Response:
        path = req.path
        if path.startswith("/v2/health/"):
            return self._health(path)
        if path.startswith("/admin/"):
            body = await read_body(receive, req.content_length, self._limit)
            return _ok(*await self._admin.handle(req, body))
        if path == "/metrics" and req.method == "GET":
            check_metrics(self.rt.settings, req.authorization, req.client, self._token)
            return self._metrics()
        self._check_token(req)
        if req.method == "POST":
            body = await read_body(receive, req.content_length, self._limit,
                                   align_at=req.header_length)
            if path.startswith(_V2_MODELS) and path.endswith("/feedback"):
                return await self._feedback(path[len(_V2_MODELS):-len("/feedback")], body)
            if path.startswith(_V2_MODELS) and path.endswith("/infer"):
                rest = path[len(_V2_MODELS):-len("/infer")]
                self._remember_plain_path(path, rest)
                return await self._v2_infer(rest, req, body)
            if path.startswith(_V1_MODELS) and path.endswith(":predict"):
                return await self._v1_predict(path[len(_V1_MODELS):-len(":predict")], body)
            if path.startswith("/predict/"):
                return await self._simple(path[len("/predict/"):], body)
        elif req.method == "GET":
            if path.startswith(_V2_MODELS):
                return self._v2_model(*_split_model_path(path[len(_V2_MODELS):]))
            if path == "/v2":
                return _ok({"name": "edge-runtime", "version": __version__,
                            "extensions": _EXTENSIONS})
            if path.startswith(_V1_MODELS):
                return self._v1_status(*_split_model_path(path[len(_V1_MODELS):])[:2])
        return _ok({"error": f"no route for {req.method} {path}"}, 404)

    def _health(self, path: str) -> Response:
        if path == "/v2/health/live":
            return _ok({"live": True})
        if path == "/v2/health/ready":
            return _ok({"ready": self.ready}, 200 if self.ready else 503)
        return _ok({"error": f"no route for {path}"}, 404)

    def _remember_plain_path(self, path: str, name: str) -> None:
        """Send later JSON requests on this path to ``_v2_infer_json`` (bounded: paths are
        remembered only for models that are active when first asked)."""
        if ("/" not in name and len(self._plain_paths) < _PLAIN_PATHS_MAX
                and self.rt.registry.active(name) is not None):
            self._plain_paths[path] = name
            if path.isascii():
                self._plain_urls[path.encode()] = name

    async def _v2_infer_json(self, name: str, req: Request, receive: Receive) -> Response:
        """POST /v2/models/NAME/infer with a JSON body over ASGI: ``_infer_plain`` when it is
        the everyday request, else the general ``_v2_infer``."""
        self._check_token(req)
        body = await read_body(receive, req.content_length, self._limit)
        answer = self._infer_plain(name, body) if len(body) < INLINE_JSON_MAX else None
        return answer if answer is not None else await self._v2_infer(name, req, body)

    def fast(self, url: bytes, headers: list[tuple[bytes, bytes]], body: bytes | memoryview
             ) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
        """The builtin server's synchronous route (``HttpServer(fast=...)``): the everyday
        V2 JSON infer request on a remembered path, answered with no ASGI scope, task or
        messages. None for anything else (other paths, query strings, binary requests, a
        missing or wrong token, bodies that are not everyday): the ASGI app answers those."""
        name = self._plain_urls.get(url)
        if name is None or len(body) >= INLINE_JSON_MAX:
            return None
        auth = None
        for key, value in headers:
            if key == b"inference-header-content-length":
                return None
            if key == b"authorization":
                auth = value
        if self._token is not None and not (
                auth is not None and hmac.compare_digest(auth, self._token)):
            return None
        try:
            answer = self._infer_plain(name, body)
        except EdgeRuntimeError as exc:
            return status_for(exc), json_bytes({"error": str(exc)}), JSON
        except Exception as exc:  # as __call__: one request never takes the daemon down
            log.exception("unhandled error")
            return 500, json_bytes({"error": f"internal error: {exc}"}), JSON
        if answer is None:
            return None
        return answer[0], answer[1], JSON

    def _infer_plain(self, name: str, body: Body) -> Response | None:
        """The everyday request (``decode_plain``) on a model that runs it on the event loop,
        straight to the data plane; None when it is not that, and ``_v2_infer`` (which gives
        the same answer more slowly, or off the loop) must take it."""
        dataplane = self.rt.dataplane
        active = self.rt.registry.active(name)
        if active is None or not active.inline or dataplane.max_batch_size > 1:
            return None
        plain = decode_plain(body)
        if plain is None:
            return None
        rid, inputs = plain
        if input_elements(inputs) > active.inline_elements:
            return None
        result = dataplane.infer(name, None, inputs, unit=rid)
        if rid is not None:
            self.rt.feedback.remember(rid, result.name, result.version, result.outputs)
        out = encode_plain(result.name, result.version, result.outputs, rid)
        if out is None:
            out, _ = encode_response(result.name, result.version, result.outputs,
                                     _ALL_OUTPUTS_AS_JSON, request_id=rid)
        return 200, out, None

    async def _v2_infer(self, rest: str, req: Request, body: Body) -> Response:
        name, version = rest, None
        if "/" in rest:
            name, version, tail = _split_model_path(rest + "/x")
            if tail != "x":
                raise PayloadInvalid(f"bad model path {rest!r}")
        json_bytes = len(body) if req.header_length is None else req.header_length
        request = await self.offload.decode(decode_request, body, req.header_length,
                                            json_bytes=json_bytes)
        served = self.rt.registry.get(name, version)
        if request.requested_outputs:
            check_outputs(request, [o.name for o in served.installed.manifest.outputs])
        # the V2 request id is the A/B unit and the key for later label feedback
        result = await self.rt.dataplane.infer_async(name, version, request.inputs,
                                                     unit=request.id)
        if request.id is not None:
            self.rt.feedback.remember(request.id, result.name, result.version, result.outputs)
        out, headers = await self.offload.run(
            _encode_v2, result.name, result.version, result.outputs, request,
            elements=output_elements(result.outputs))
        if headers == _JSON_ONLY:
            return 200, out, None  # send() writes the same content-type header
        return 200, out, [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def _v1_predict(self, rest: str, body: Body) -> Response:
        name, version, _ = _split_model_path(rest)
        served = self.rt.registry.get(name, version)
        inputs, fmt = await self.offload.decode(decode_predict, body,
                                                served.installed.manifest.inputs,
                                                json_bytes=len(body))
        result = await self.rt.dataplane.infer_async(name, version, inputs)
        return 200, await self.offload.run(encode_predict, result.outputs, fmt,
                                              elements=output_elements(result.outputs)), None

    async def _simple(self, name: str, body: Body) -> Response:
        served = self.rt.registry.get(name)
        inputs = await self.offload.decode(decode_simple, body, served.installed.manifest.inputs,
                                           json_bytes=len(body))
        result = await self.rt.dataplane.infer_async(name, None, inputs)
        return 200, await self.offload.run(encode_simple, result.outputs,
                                              elements=output_elements(result.outputs)), None

    def _v2_model(self, name: str, version: str | None, tail: str) -> Response:
        if tail == "ready":
            served = self.rt.registry.get(name, version)
            return _ok({"name": name, "version": served.version, "ready": True})
        if tail:
            raise ModelNotFound(f"{name}/{tail}", version)
        served = self.rt.registry.get(name, version)
        m = served.installed.manifest
        versions = [i.version for i in self.rt.store.installed(name)]
        return _ok(model_metadata(name, versions, f"{m.format}_{m.precision}", m.inputs,
                                  m.outputs))

    def _v1_status(self, name: str, version: str | None) -> Response:
        served = self.rt.registry.get(name, version)
        return _ok({"model_version_status": [
            {"version": served.version, "state": "AVAILABLE",
             "status": {"error_code": "OK", "error_message": ""}}]})

    async def _feedback(self, name: str, body: Body) -> Response:
        """True labels for earlier predictions: by V2 request id, or with the predictions."""
        active = self.rt.registry.active(name)
        installed = [i.version for i in self.rt.store.installed(name)]
        if active is None and not installed:
            raise ModelNotFound(name)
        fb = await self.offload.decode(decode_feedback, body, json_bytes=len(body))
        apply = partial(self.rt.feedback.apply, active_version=active.version if active
                        else None, installed=installed)
        counted = await self.offload.run(apply, name, fb, elements=fb.labels.size)
        return _ok({"accepted": counted["n"], "correct": counted["correct"],
                    "version": counted["version"]})

    def _metrics(self) -> Response:
        metrics = self.rt.telemetry.metrics
        text = render(metrics.totals_all(), feedback=self.rt.feedback.totals(),
                      extra_gauges=self.rt.telemetry.health.gauges())
        return 200, text.encode(), [(b"content-type", b"text/plain; version=0.0.4")]


def _encode_v2(name: str, version: str, outputs: dict[str, Any], request: InferRequest
               ) -> tuple[bytes, dict[str, str]]:
    return encode_response(name, version, outputs, request, request_id=request.id)
