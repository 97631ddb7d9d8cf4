"""Minimal ASGI plumbing: read a bounded body, send a response. No framework on the hot path."""

from __future__ import annotations

import ctypes
import mmap
import sys
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
    buf = aligned_buffer(size, offset)
    pos = 0
    for chunk in chunks:
        buf[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    return buf


def aligned_buffer(size: int, offset: int, align: int = 64) -> memoryview:
    """A writable ``size``-byte buffer whose byte ``offset`` sits at an ``align``-byte aligned
    address (the allocator only promises 16)."""
    return _aligned_view(bytearray(size + align), size, offset, align)


def _aligned_view(raw: bytearray | mmap.mmap, size: int, offset: int, align: int
                  ) -> memoryview:
    address = ctypes.addressof(ctypes.c_char.from_buffer(raw))
    pad = -(address + offset) % align
    return memoryview(raw)[pad:pad + size]


class BufferPool:
    """Large body buffers, handed out again once nothing refers to them.

    A new 600 KB bytearray per request cost ~40% of a V2 binary request's CPU in the daemon:
    glibc gives blocks that large back to the kernel, so every request page-faults its buffer
    in again. The pool keeps up to ``keep`` buffers of up to ``max_size`` bytes; one is free
    when its reference count says that no view, array or queue holds it any more (the drift
    buffer may keep a request's inputs for a while). Event-loop thread only.

    A new buffer is an anonymous memory map, not a bytearray (which zero-fills all of it at
    once): its pages take memory only as the body is written into them, so a client that
    declares 32 MB and sends one byte costs one page.
    """

    def __init__(self, keep: int = 8, max_size: int = 8 << 20, align: int = 64) -> None:
        self.keep, self.max_size, self.align = keep, max_size, align
        self._buffers: list[mmap.mmap] = []

    def take(self, size: int, offset: int = 0) -> memoryview:
        """A ``size``-byte buffer, byte ``offset`` aligned (old contents: write it all)."""
        need = size + self.align
        best = -1
        for i in range(len(self._buffers)):
            # 2 = the list's reference + getrefcount's argument: nobody else holds it.
            if len(self._buffers[i]) >= need and sys.getrefcount(self._buffers[i]) == 2 and (
                    best < 0 or len(self._buffers[i]) < len(self._buffers[best])):
                best = i
        if best >= 0:
            return _aligned_view(self._buffers[best], size, offset, self.align)
        raw = mmap.mmap(-1, need)
        if need <= self.max_size and len(self._buffers) < self.keep:
            self._buffers.append(raw)
        return _aligned_view(raw, size, offset, self.align)


async def send(send_: Send, status: int, body: bytes,
               headers: list[tuple[bytes, bytes]] | None = None) -> None:
    hdrs = [*(headers if headers is not None else JSON),
            (b"content-length", str(len(body)).encode())]
    await send_({"type": "http.response.start", "status": status, "headers": hdrs})
    await send_({"type": "http.response.body", "body": body})


def json_bytes(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
