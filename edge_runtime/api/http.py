"""Minimal ASGI plumbing: read a bounded body, send a response. No framework on the hot path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from edge_runtime.errors import PayloadInvalid, PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = [(b"content-type", b"application/json")]
Body = bytes | memoryview  # memoryview: joined with the binary tensors aligned (_aligned)


@dataclass
class Request:
    method: str
    path: str
    content_length: int | None
    authorization: bytes | None
    header_length: int | None  # Inference-Header-Content-Length
    client: str | None

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        length = auth = hlen = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                length = _int(value, "Content-Length")
            elif key == b"authorization":
                auth = value
            elif key == b"inference-header-content-length":
                hlen = _int(value, "Inference-Header-Content-Length")
        client = scope.get("client")
        return cls(scope["method"], scope["path"], length, auth, hlen,
                   client[0] if client else None)


def _int(value: bytes, name: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise PayloadInvalid(f"header {name} is not an integer") from exc


async def read_body(receive: Receive, declared: int | None, limit: int, *,
                    align_at: int | None = None) -> Body:
    if declared is not None and declared > limit:
        raise PayloadTooLarge(declared, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise PayloadInvalid("client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(size, limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if declared is not None and size != declared:
        raise PayloadInvalid(f"body has {size} bytes, Content-Length says {declared}")
    if align_at is not None and len(chunks) > 1:
        return _aligned(chunks, size, align_at)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _aligned(chunks: list[bytes], size: int, offset: int) -> memoryview:
    """Join the chunks so that byte ``offset`` (where binary tensors start, after the JSON
    header) lands 64-byte aligned: the tensors are then used in place, not copied again."""
    pad = (-offset) % 64
    buf = bytearray(pad + size)
    pos = pad
    for chunk in chunks:
        buf[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    return memoryview(buf)[pad:]


async def send(send_: Send, status: int, body: bytes,
               headers: list[tuple[bytes, bytes]] | None = None) -> None:
    hdrs = [*(headers if headers is not None else JSON),
            (b"content-length", str(len(body)).encode())]
    await send_({"type": "http.response.start", "status": status, "headers": hdrs})
    await send_({"type": "http.response.body", "body": body})


def json_bytes(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
