"""Local model management over HTTP, for `edge-runtime install/activate/rollback/status` while
the daemon runs. Loopback or Unix socket only, with the admin token from the run file."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import asdict
from typing import Any

import orjson

from edge_runtime.api.http import Request
from edge_runtime.errors import ModelNotFound, PayloadInvalid, Unauthorized
from edge_runtime.runtime import Runtime
from edge_runtime.settings import LOOPBACK
from edge_runtime.status import models_table, status_doc
from edge_runtime.swap.machine import SwapRecord

Result = tuple[Any, int]


def record_doc(record: SwapRecord) -> dict[str, Any]:
    doc = asdict(record)
    doc["state"] = record.state.value
    return doc


class Admin:
    def __init__(self, runtime: Runtime, token: bytes) -> None:
        self.rt = runtime
        self._token = token

    def check(self, req: Request) -> None:
        """Raise ``Unauthorized`` unless ``req`` may use the admin endpoints."""
        if req.client not in (None, "", *LOOPBACK):
            raise Unauthorized("admin endpoints answer only on loopback or the Unix socket")
        if req.authorization is None or not hmac.compare_digest(req.authorization, self._token):
            raise Unauthorized("missing or wrong admin token")

    async def handle(self, req: Request, body: bytes | memoryview) -> Result:
        self.check(req)
        parts = req.path.strip("/").split("/")[1:]
        args = _json(body) if body else {}
        if req.method == "GET" and parts == ["models"]:
            return models_table(self.rt), 200
        if req.method == "GET" and parts == ["status"]:
            return status_doc(self.rt), 200
        if req.method == "POST" and parts == ["flush"]:
            return {"rows": self.rt.flush()}, 200
        if req.method == "POST" and parts == ["install"]:
            return await self._swap(self.rt.swaps.install, _arg(args, "package"))
        if req.method == "POST" and len(parts) == 3 and parts[0] == "models":
            if parts[2] == "activate":
                return await self._swap(self.rt.swaps.activate, parts[1], _arg(args, "version"))
            if parts[2] == "rollback":
                return await self._swap(self.rt.swaps.rollback, parts[1])
        raise ModelNotFound(f"admin route {req.method} {req.path}")

    async def _swap(self, fn: Any, *args: str) -> Result:
        # Swaps load models: run them off the event loop so serving goes on meanwhile.
        record = await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        return record_doc(record), 200 if record.state.value != "failed" else 409


def _json(body: bytes | memoryview) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadInvalid(f"admin body is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise PayloadInvalid("admin body must be a JSON object")
    return doc


def _arg(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadInvalid(f"admin body needs {key!r}")
    return value
