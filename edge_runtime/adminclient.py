"""Talk to the running daemon's admin endpoints (stdlib http.client, loopback only)."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from edge_runtime.daemon import RunInfo
from edge_runtime.errors import EdgeRuntimeError, SwapError


class AdminClient:
    def __init__(self, info: RunInfo, *, timeout: float = 600.0) -> None:
        url = urlsplit(info.url)
        self._host, self._port = url.hostname or "127.0.0.1", url.port or 80
        self._token = info.admin_token
        self._timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else b""
            conn.request(method, path, body=payload,
                         headers={"Authorization": f"Bearer {self._token}",
                                  "Content-Type": "application/json"})
            resp = conn.getresponse()
            data = json.loads(resp.read() or b"null")
        except (OSError, ValueError) as exc:
            raise EdgeRuntimeError(f"cannot reach the daemon at {self._host}:{self._port} "
                                   f"({exc})") from exc
        finally:
            conn.close()
        if resp.status == 409 and isinstance(data, dict) and "state" in data:
            raise SwapError(data["name"], data.get("version"),
                            f"{data['kind']} failed: {data['reason']}")
        if resp.status >= 400:
            raise EdgeRuntimeError(data.get("error", f"HTTP {resp.status}")
                                   if isinstance(data, dict) else f"HTTP {resp.status}")
        return data
