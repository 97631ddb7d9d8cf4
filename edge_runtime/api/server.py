"""The daemon's HTTP/1.1 server: asyncio (uvloop when installed) + httptools, running an ASGI app.

Why not uvicorn: on one core, uvicorn's per-request protocol work (scope with every key, a
cycle object and keep-alive timer per request, message events, header checks) cost ~50 us a
request against ~17 us for this one running the same ASGI app (hello-world, wrk, c=64;
docs/benchmarks.md). On a Raspberry Pi that difference is most of a small model's budget.
uvicorn stays available (``--http-server uvicorn``).

What it does: keep-alive and pipelining (answers in request order), chunked request bodies,
bodies bounded by ``max_body_bytes`` while they arrive (413, then close), ``Expect:
100-continue``, HTTP/1.0 (closes unless keep-alive), HEAD (no body), a 64 KB header limit
(431), 400 on malformed requests (and on HTTP/0.9 request lines), 505 on other HTTP versions,
501 on transfer codings other than chunked, responses of one event-loop turn written out
together (``HttpServer.send``), TCP and Unix sockets, ASGI lifespan, and a graceful stop on
SIGTERM/SIGINT (stop accepting, let running requests finish, then close). The whole body is
read before the app runs; ``receive()`` hands it over in the parts it arrived in. Not here:
HTTP/2, websockets, TLS (the daemon listens on loopback or a Unix socket; a proxy terminates
TLS).

What a client can hold (``limits.py``): body bytes count against one budget shared by all
connections as they arrive, so a declared Content-Length costs nothing until it is sent; an
optional ``gate`` refuses a request from its head (a wrong token: 401) before any body byte is
read; a sweep every second (no timer per request) answers 408 to a head unfinished after
``header_timeout_s`` and to a body that pauses or trickles, closes idle keep-alive
connections, and closes a connection that does not read its answers. Reading stops while a
connection's answers wait to be written, so a client that sends and never reads holds one
socket buffer, not a growing queue.

An optional ``fast`` handler is offered every complete POST first and may answer it
synchronously, with no task, scope or messages (the daemon's everyday V2 JSON infer request:
about 5 us of the ~45 us a small model's request costs on one core); whatever it declines goes
to the ASGI app unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools
import orjson

from edge_runtime.api.http import JSON, BufferPool
from edge_runtime.api.lifespan import Lifespan
from edge_runtime.api.limits import BodyBudget, HttpLimits
from edge_runtime.errors import PayloadTooLarge

log = logging.getLogger("edge_runtime.server")
App = Callable[..., Any]
# (raw URL, lower-cased headers, whole body) -> (status, body, headers; content-length added),
# or None to hand the request to the ASGI app. Runs on the event loop: it must not block long.
FastHandler = Callable[[bytes, list[tuple[bytes, bytes]], bytes | memoryview],
                       tuple[int, bytes, list[tuple[bytes, bytes]]] | None]
# (raw URL, lower-cased headers, client host) -> (status, message) to refuse the request from
# its head, before its body is read; None to read it. Asked for requests with a large or
# chunked body, or that expect 100-continue (small bodies are read: they cost nothing).
Gate = Callable[[bytes, list[tuple[bytes, bytes]], str | None], tuple[int, str] | None]
MAX_HEADER_BYTES = 64 * 1024
MAX_PIPELINED = 16  # requests queued on one connection before reading pauses
SWEEP_S = 1.0
READ_SIZE = 64 * 1024
DIRECT_MIN = 64 * 1024  # sized bodies from this size are read straight into their buffer
MIN_DIRECT_READ = 4096  # a direct read when the body budget is spent (one page)
MAX_DIRECT_READ = 1 << 20  # one read copies (and faults in) at most this: ~1 ms of the loop
RELEASE_OFF_LOOP = 8 << 20  # bodies from this size are unmapped by a worker thread
OUTBOX_MAX = 32  # responses coalesced before they are written (bounds the wait: ~2 ms at c=64)
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_METHODS = {m.encode(): m for m in ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH")}
_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in _REASONS.items()}
_JSON_FIELDS = b"".join(k + b": " + v + b"\r\n" for k, v in JSON)
_VERSIONS = ("1.1", "1.0")
# why reading is paused (bits): too many pipelined requests, the body budget, unread answers
_PIPELINE, _BUDGET, _WRITE = 1, 2, 4


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status


def _date() -> bytes:
    return formatdate(usegmt=True).encode()


def _drop(parts: list[bytes | memoryview]) -> None:
    """Let go of a body's parts in the worker thread that runs this (the last reference to a
    large body's buffer: unmapping it happens here)."""
    parts.clear()


def head_problem(version: str, transfer_encoding: bytes | None) -> tuple[int, str] | None:
    """What is wrong with a parsed request head that httptools let through, if anything."""
    if version not in _VERSIONS:
        if version == "0.9":  # httptools' name for a request line without a version
            return 400, "the request line has no HTTP version (HTTP/0.9 is not supported)"
        return 505, f"HTTP/{version} is not supported (HTTP/1.1 and HTTP/1.0 are)"
    if transfer_encoding is not None and transfer_encoding.strip().lower() != b"chunked":
        coding = transfer_encoding.decode("latin-1")[:100]
        if transfer_encoding.rsplit(b",", 1)[-1].strip().lower() != b"chunked":
            return 400, f"Transfer-Encoding {coding!r} does not end in chunked"
        return 501, f"Transfer-Encoding {coding!r} is not supported (only chunked)"
    return None


class _Request:
    __slots__ = ("body", "expect_continue", "headers", "held", "keep_alive", "method", "url",
                 "version")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes | memoryview] = []
        self.method = "GET"
        self.version = "1.1"
        self.keep_alive = True
        self.expect_continue = False
        self.held = 0  # body bytes counted against the server's budget


class HttpProtocol(asyncio.BufferedProtocol):
    """One client connection.

    A buffered protocol: the event loop reads into buffers this class hands out. Request
    heads (and small bodies) go through the server's 64 KiB read buffer (one for all
    connections: each read is parsed before the next one starts) into httptools; a body with
    a Content-Length of ``DIRECT_MIN`` or more gets a buffer of its own size once its head is
    parsed, and the socket is read straight into it (no copy into bytes, none into parser
    callbacks, none to join). The server's ``align_header`` names a request header whose
    value is an offset into the body: that byte lands 64-byte aligned (V2 binary tensors,
    which then are used in place).
    """

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.budget = server.budget
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.client: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None
        self.req: _Request | None = None
        self.header_bytes = 0
        self.body_bytes = 0
        self.queue: deque[_Request] = deque()
        self.busy = False  # the app is answering a request
        self.closing = False
        self.paused = 0  # _PIPELINE | _BUDGET | _WRITE
        self.last_active = time.monotonic()
        self.head_since: float | None = None  # a request head is arriving, since
        self.body_since: float | None = None  # a request body is arriving, since
        self.body_base = 0  # body bytes received before ``body_since``
        self.write_blocked_since: float | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.disconnected: asyncio.Future[None] = self.loop.create_future()
        self.read_view = server.read_view
        self.big: memoryview | None = None  # the body buffer of the current large request
        self.filled = 0  # bytes of ``big`` received
        self.direct = False  # the socket is read straight into ``big``

    # -- transport callbacks ------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer, here = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self.sockname = (here[0], here[1]) if isinstance(here, tuple) else None
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        self._drop_unanswered()
        if not self.disconnected.done():
            self.disconnected.set_result(None)
        self.can_write.set()

    def pause_writing(self) -> None:
        self.can_write.clear()
        self.write_blocked_since = time.monotonic()
        self._pause(_WRITE)

    def resume_writing(self) -> None:
        self.can_write.set()
        self.write_blocked_since = None
        self._resume(_WRITE)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.direct:
            assert self.big is not None
            free = self.budget.free
            room = free if free > MIN_DIRECT_READ else MIN_DIRECT_READ
            return self.big[self.filled:self.filled + min(room, MAX_DIRECT_READ)]
        return self.read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.last_active = time.monotonic()
        if self.direct:
            self.filled += nbytes
            self._hold(nbytes)
            assert self.big is not None
            if self.filled == len(self.big):
                # The old parser still waits for this body: the next request gets a new one.
                self.direct = False
                self.parser = httptools.HttpRequestParser(self)
                self.on_message_complete()
            return
        self.data_received(self.read_view[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self.closing:
                self._fail(400, f"malformed HTTP request: {exc}")
            return
        if self.big is not None and self.req is not None and not self.closing:
            self.direct = True  # the rest of this body goes straight into its buffer

    # -- parser callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.req = _Request()
        self.header_bytes = self.body_bytes = 0
        self.head_since = self.last_active

    def on_url(self, url: bytes) -> None:
        assert self.req is not None
        self.req.url += url
        self.header_bytes += len(url)
        if self.header_bytes > MAX_HEADER_BYTES:
            self._headers_too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.req
        assert req is not None
        name = name.lower()
        req.headers.append((name, value))
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            self._headers_too_large()
        if name == b"expect" and value.lower() == b"100-continue":
            req.expect_continue = True

    def _headers_too_large(self) -> None:
        self._fail(431, f"request headers are larger than {MAX_HEADER_BYTES} bytes")
        raise httptools.HttpParserCallbackError("headers too large")

    def on_headers_complete(self) -> None:
        req = self.req
        assert req is not None
        parser = self.parser
        self.head_since = None
        method = parser.get_method()
        req.method = _METHODS.get(method) or method.decode("ascii")
        req.version = parser.get_http_version()
        req.keep_alive = parser.should_keep_alive()
        length = align_at = 0
        coding = None
        align_header = self.server.align_header
        for name, value in req.headers:
            # (no contextlib.suppress: its object per request showed in the profile; a bad
            # value counts as 0: the parser refuses a bad length, the app words the rest)
            if name == b"content-length":
                length = int(value) if value.isdigit() else 0
            elif name == align_header:
                align_at = int(value) if value.isdigit() else 0
            elif name == b"transfer-encoding":
                coding = value
        if req.version not in _VERSIONS or coding is not None:
            self._refuse(head_problem(req.version, coding))
        gate = self.server.gate
        if gate is not None and (length >= DIRECT_MIN or coding is not None
                                 or req.expect_continue):
            self._refuse(gate(req.url, req.headers, self.client[0] if self.client else None))
        if length > self.server.max_body_bytes:
            self._too_large(length)
            raise httptools.HttpParserCallbackError("body too large")
        if length or coding is not None:
            self.body_since, self.body_base = self.last_active, 0
        if length >= DIRECT_MIN:
            self._take_buffer(length, align_at)
        if req.expect_continue and not self.queue and not self.busy:
            self.server.send(self.transport, b"HTTP/1.1 100 Continue\r\n\r\n")

    def _refuse(self, problem: tuple[int, str] | None) -> None:
        if problem is not None:
            self._fail(*problem)
            raise httptools.HttpParserCallbackError(problem[1])

    def _take_buffer(self, length: int, align_at: int) -> None:
        try:
            self.big, self.filled = self.server.buffers.take(length, align_at), 0
        except (MemoryError, OSError) as exc:  # no address space left for it now
            self._refuse((503, f"cannot hold a {length} byte body now ({exc}); retry later"))

    def on_body(self, chunk: bytes) -> None:
        assert self.req is not None
        if self.big is not None:  # sized by its Content-Length, which the parser enforces
            end = self.filled + len(chunk)
            self.big[self.filled:end] = chunk
            self.filled = end
            self._hold(len(chunk))
            return
        n = len(chunk)
        self.body_bytes += n
        if self.body_bytes > self.server.max_body_bytes:
            self._too_large(self.body_bytes)
            raise httptools.HttpParserCallbackError("body too large")
        req = self.req
        req.body.append(chunk)
        req.held += n  # _hold, inline: this runs for every request with a body
        budget = self.budget
        budget.used += n
        if budget.used >= budget.limit and not self.paused & _BUDGET and budget.over(self):
            self._pause(_BUDGET)

    def _hold(self, n: int) -> None:
        """Count ``n`` body bytes of the current request against the budget; past it, stop
        reading until there is room (unless this body leads: ``BodyBudget``)."""
        assert self.req is not None
        self.req.held += n
        budget = self.budget
        budget.used += n
        if budget.used >= budget.limit and not self.paused & _BUDGET and budget.over(self):
            self._pause(_BUDGET)

    def budget_resumed(self) -> None:
        """Room in the budget, or this body may lead (``BodyBudget``): read again."""
        self.last_active = time.monotonic()
        if self.body_since is not None:  # the rate rule counts from here
            self.body_since, self.body_base = self.last_active, self._received()
        self._resume(_BUDGET)

    def _received(self) -> int:
        return self.filled if self.big is not None else self.body_bytes

    def on_message_complete(self) -> None:
        req, self.req = self.req, None
        assert req is not None
        if self.body_since is not None:
            self.body_since = None
            if self.budget.leader is self:
                self.budget.done(self)
        if self.big is not None:
            req.body, self.big = [self.big], None
        self.queue.append(req)
        if len(self.queue) >= MAX_PIPELINED:
            self._pause(_PIPELINE)
        if not self.busy:
            self._next()

    def _pause(self, why: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= why

    def _resume(self, why: int) -> None:
        if self.paused & why:
            self.paused &= ~why
            if not self.paused and not self.closing:
                self.transport.resume_reading()

    def _release(self, req: _Request) -> None:
        """The request is answered (or dropped): its body bytes leave the budget."""
        held, req.held = req.held, 0
        budget = self.budget
        budget.used -= held  # BodyBudget.give, inline: this runs for every request with a body
        if budget.waiters:
            budget.wake()

    def _drop_unanswered(self) -> None:
        """The connection is closing: requests not yet running will not be."""
        for req in self.queue:
            self._release(req)
        self.queue.clear()
        if self.req is not None:
            self._release(self.req)
        self.body_since = None
        self.budget.forget(self)

    # -- running requests ---------------------------------------------------------------------
    def _next(self) -> None:
        fast = self.server.fast
        while not self.closing and self.queue:
            if len(self.queue) == MAX_PIPELINED:
                self._resume(_PIPELINE)
            req = self.queue.popleft()
            if fast is not None and req.method == "POST" and self._answer_fast(fast, req):
                if req.held:
                    self._release(req)
                if not req.keep_alive:
                    self._close()
                continue
            self.busy = True
            self.loop.create_task(self._run(req))
            return

    def _answer_fast(self, fast: FastHandler, req: _Request) -> bool:
        """Let the server's ``fast`` handler answer ``req`` synchronously, with no task, scope
        or messages; False when it declines (the ASGI app then gets the request unchanged)."""
        body = req.body[0] if len(req.body) == 1 else b"".join(req.body)
        try:
            answer = fast(req.url, req.headers, body)
        except Exception:
            log.exception("unhandled error in the fast handler")
            answer = (500, b'{"error": "internal error"}', JSON)
        if answer is None:
            return False
        status, payload, headers = answer
        self._write_whole(req, status, headers, payload)
        return True

    def _write_whole(self, req: _Request, status: int, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> None:
        """A whole response in one write (``headers`` has no content-length)."""
        head = _status_line(status)
        fields = _JSON_FIELDS if headers is JSON else b"".join(
            k + b": " + v + b"\r\n" for k, v in headers)
        self.server.send(self.transport, b"%sdate: %s\r\n%scontent-length: %d\r\n%s\r\n%s" % (
            head, self.server.date, fields, len(body),
            b"" if req.keep_alive else b"connection: close\r\n", body))

    async def _run(self, req: _Request) -> None:
        raw_path, _, query = req.url.partition(b"?")
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": req.version, "method": req.method, "scheme": "http",
            "path": path, "raw_path": raw_path, "query_string": query, "root_path": "",
            "headers": req.headers, "client": self.client, "server": self.sockname,
        }
        # The body as it arrived, one message per part: the app joins them once, where it
        # wants them (V2 binary tensors land aligned, app.read_body), with no copy here first.
        parts: deque[bytes | memoryview] = deque(req.body) if req.body else deque([b""])
        response: dict[str, Any] = {}

        async def receive() -> dict[str, Any]:
            if parts:
                body = parts.popleft()
                return {"type": "http.request", "body": body, "more_body": bool(parts)}
            await self.disconnected
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if self.closing:
                return
            kind = message["type"]
            if kind == "http.response.start":
                response["status"] = message["status"]
                response["headers"] = message.get("headers", [])
            elif kind == "http.response.body":
                if not self.can_write.is_set():
                    await self.can_write.wait()
                self._write(req, response, message.get("body", b""),
                            message.get("more_body", False))

        try:
            await self.server.app(scope, receive, send)
        except Exception:
            log.exception("unhandled error in the app")
            if "sent" not in response and not self.closing:
                self._write(req, {"status": 500, "headers": [
                    (b"content-type", b"application/json")]},
                    b'{"error": "internal error"}', False)
        finally:
            body, req.body = req.body, []
            parts.clear()
            if req.held >= RELEASE_OFF_LOOP:  # unmapping 32 MB takes the loop ~10 ms
                with contextlib.suppress(RuntimeError):  # (no executor while stopping)
                    self.loop.run_in_executor(None, _drop, body)
            del body
            if req.held:
                self._release(req)
        if not response.get("done") and not self.closing:
            self._close()  # the app did not finish its response
        self.busy = False
        if req.keep_alive and not self.closing:
            self._next()
        elif not self.closing:
            self._close()

    def _write(self, req: _Request, response: dict[str, Any], body: bytes, more: bool) -> None:
        """The response head with the first body part, then the rest (chunked if unsized)."""
        if response.get("done"):
            return
        head_only = req.method == "HEAD"
        if "sent" not in response:
            response["sent"] = True
            status = response.get("status", 500)
            headers = response["headers"]
            sized = any(k.lower() == b"content-length" for k, _ in headers)
            response["chunked"] = chunked = more and not sized
            if not (sized or more or head_only):  # the common case: one whole response
                self._write_whole(req, status, headers, body)
            else:
                parts = [_status_line(status), b"date: ", self.server.date, b"\r\n"]
                for k, v in headers:
                    parts += (k, b": ", v, b"\r\n")
                if not sized and not more:
                    parts.append(b"content-length: %d\r\n" % len(body))
                if chunked:
                    parts.append(b"transfer-encoding: chunked\r\n")
                if not req.keep_alive:
                    parts.append(b"connection: close\r\n")
                parts.append(b"\r\n")
                if not head_only:
                    parts.append(b"%x\r\n%s\r\n" % (len(body), body) if chunked and body
                                 else body)
                self.server.send(self.transport, b"".join(parts))
        elif not head_only and body:
            self.server.send(self.transport, b"%x\r\n%s\r\n" % (len(body), body)
                             if response["chunked"] else body)
        if not more:
            response["done"] = True
            if response["chunked"] and not head_only:
                self.server.send(self.transport, b"0\r\n\r\n")

    def _too_large(self, size: int) -> None:
        self._fail(413, str(PayloadTooLarge(size, self.server.max_body_bytes)))

    def _fail(self, status: int, message: str) -> None:
        """Answer a request the app never sees, then close the connection. While earlier
        requests of this connection are still being answered, only close: an answer now
        would overtake theirs."""
        if self.closing:
            return
        if not self.busy and not self.queue:
            body = orjson.dumps({"error": message})
            self.server.send(
                self.transport, b"%sdate: %s\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (_status_line(status), self.server.date, len(body), body))
        self._close()

    def _close(self, *, abort: bool = False) -> None:
        self.closing = True
        self._drop_unanswered()
        if self.transport is not None:
            if abort:  # its unsent answers would wait for a reader that never comes
                self.transport.abort()
                return
            self.server.flush()  # what this connection still has in the outbox goes first
            self.transport.close()

    def overdue(self, now: float) -> tuple[int, str] | bool:
        """Whether a deadline has passed at ``now``: (408, why) to answer it, True to close
        it silently, False to leave it (``HttpServer.sweep``, every ``SWEEP_S``)."""
        if self.closing or self.paused & (_PIPELINE | _BUDGET):
            return False  # waiting for the server, not for the client
        limits = self.server.limits
        if self.write_blocked_since is not None:  # it does not read its answers
            return now - self.write_blocked_since > self.server.keep_alive_s
        if self.head_since is not None:
            if now - self.head_since > limits.header_timeout_s or (
                    now - self.last_active > self.server.keep_alive_s):
                return 408, (f"the request head was not complete within "
                             f"{limits.header_timeout_s:g} s")
        elif self.body_since is not None:
            if now - self.last_active > limits.body_idle_timeout_s:
                return 408, f"no body bytes for {limits.body_idle_timeout_s:g} s"
            if limits.body_too_slow(now - self.body_since, self._received() - self.body_base):
                return 408, (f"the body arrives slower than {limits.body_min_bytes_per_s} "
                             "bytes/s")
        elif not self.busy and not self.queue:  # an idle keep-alive connection
            return now - self.last_active > self.server.keep_alive_s
        return False

    def expire(self, why: tuple[int, str] | bool) -> None:
        if isinstance(why, tuple):
            self._fail(*why)
        else:
            self._close(abort=self.write_blocked_since is not None)


class HttpServer:
    def __init__(self, app: App, *, max_body_bytes: int, keep_alive_s: float = 30.0,
                 stop_timeout_s: float = 10.0, align_header: bytes | None = None,
                 fast: FastHandler | None = None, gate: Gate | None = None,
                 limits: HttpLimits | None = None) -> None:
        self.app = app
        self.fast = fast
        self.gate = gate
        self.max_body_bytes = max_body_bytes
        self.limits = limits or HttpLimits()
        self.budget = BodyBudget(self.limits.budget_for(max_body_bytes), read_size=READ_SIZE)
        self.align_header = align_header.lower() if align_header else None
        self.buffers = BufferPool()
        self.read_view = memoryview(bytearray(READ_SIZE))  # shared: see HttpProtocol
        self.keep_alive_s = keep_alive_s
        self.stop_timeout_s = stop_timeout_s
        self.connections: set[HttpProtocol] = set()
        self.date = _date()
        self.outbox: list[tuple[Any, bytes]] = []  # responses of this loop turn, to write
        self.flush_due = False  # a flush is scheduled at the end of this loop turn
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._stop: asyncio.Event | None = None
        self._lifespan: Lifespan | None = None

    def send(self, transport: Any, data: bytes) -> None:
        """Write ``data`` to a connection, coalescing the writes of one event-loop turn.

        The first write of a turn goes out at once (a lone request waits for nothing); the
        rest wait in ``outbox`` until the turn's I/O callbacks are done (or ``OUTBOX_MAX``
        have gathered) and then go out back to back. Each write to a sleeping client wakes
        it (on another core: an inter-processor interrupt, a hypervisor exit in a VM); in a
        burst the client is still awake for most of them. At c=64 on the two-vCPU VM of
        docs/benchmarks.md that took the daemon from ~10,000 to ~16,000 requests a second.
        A connection's bytes keep their order: nothing is written at once while the outbox
        holds any.
        """
        if not self.flush_due:
            self.flush_due = True
            self.loop.call_soon(self._end_of_turn)
            transport.write(data)
            return
        self.outbox.append((transport, data))
        if len(self.outbox) >= OUTBOX_MAX:
            self.flush()

    def flush(self) -> None:
        """Write what waits in the outbox (connections closed meanwhile are skipped)."""
        out, self.outbox = self.outbox, []
        for transport, data in out:
            if not transport.is_closing():
                try:
                    transport.write(data)
                except Exception:  # one broken connection must not cost the others theirs
                    log.exception("writing a response failed")
                    transport.close()

    def _end_of_turn(self) -> None:
        self.flush_due = False
        self.flush()

    def stop(self) -> None:
        """Begin a graceful stop (thread-safe from the loop's thread; signals call this)."""
        if self._stop is not None:
            self._stop.set()

    async def serve(self, sockets: list[socket.socket], *, handle_signals: bool = True) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._lifespan = Lifespan(self.app)
        await self._lifespan.startup()
        servers = []
        for sock in sockets:
            if sock.family == socket.AF_UNIX:
                servers.append(await self.loop.create_unix_server(
                    lambda: HttpProtocol(self), sock=sock))
            else:
                servers.append(await self.loop.create_server(
                    lambda: HttpProtocol(self), sock=sock))
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(sig, self.stop)
        sweeper = self.loop.create_task(self._sweep())
        try:
            await self._stop.wait()
        finally:
            sweeper.cancel()
            for s in servers:
                s.close()
            await self._drain()
            for s in servers:
                with contextlib.suppress(Exception):
                    await s.wait_closed()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self.loop.remove_signal_handler(sig)
            await self._lifespan.shutdown()

    async def _drain(self) -> None:
        """Let requests being answered finish (up to ``stop_timeout_s``), then close all."""
        deadline = time.monotonic() + self.stop_timeout_s
        while any(c.busy or c.queue for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn._close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            self.date = _date()
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """Apply every connection's deadlines as of ``now`` (all judged before any is closed:
        a close can resume a connection that waited for the body budget)."""
        due = [(conn, why) for conn in self.connections if (why := conn.overdue(now))]
        for conn, why in due:
            conn.expire(why)
