"""The daemon's HTTP/1.1 server over real sockets, with a small ASGI app: keep-alive,
pipelining, chunked bodies, limits, malformed requests, timeouts, Unix sockets, lifespan and a
graceful stop. (The daemon's own endpoints run over it in tests/integration.)"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.api import server as server_mod
from edge_runtime.api.server import FastHandler, HttpServer

LIMIT = 1000


class EchoApp:
    """Answers with the method, path, query, body size and a header, as JSON."""

    def __init__(self) -> None:
        self.lifespan: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        path = scope["path"]
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/slow":
            await asyncio.sleep(0.5)
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"one,", b"two,", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = dict(scope["headers"])
        doc = {"method": scope["method"], "path": path, "query": scope["query_string"].decode(),
               "body": len(body), "sha": hashlib.sha256(body).hexdigest()[:12],
               "x": headers.get(b"x-test", b"").decode(), "client": scope["client"] is not None}
        if b"x-align-at" in headers:  # where the byte at that offset sits in memory
            offset = int(headers[b"x-align-at"])
            doc["aligned"] = np.frombuffer(body, np.uint8)[offset:].ctypes.data % 64 == 0
        body = json.dumps(doc).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class Running:
    def __init__(self, tmp: Path, keep_alive_s: float = 30.0, limit: int = LIMIT,
                 fast: FastHandler | None = None) -> None:
        self.app = EchoApp()
        self.server = HttpServer(self.app, max_body_bytes=limit, keep_alive_s=keep_alive_s,
                                 align_header=b"X-Align-At", fast=fast)
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.uds_path = tmp / "s.sock"
        self.uds = socket.socket(socket.AF_UNIX)
        self.uds.bind(str(self.uds_path))
        self.loop = asyncio.new_event_loop()
        self.clients: list[http.client.HTTPConnection] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # listening (after the lifespan startup)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.01)

    def _run(self) -> None:
        self.loop.run_until_complete(self.server.serve([self.tcp, self.uds],
                                                       handle_signals=False))

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.server.stop)
            self.thread.join(10)
        self.loop.close()

    def conn(self) -> http.client.HTTPConnection:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        self.clients.append(c)
        return c

    def raw(self, data: bytes, *, read_until_close: bool = True) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(data)
            return _read_all(s) if read_until_close else s.recv(65536)


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path)
    yield r
    r.stop()


def test_keep_alive_answers_many_requests_on_one_connection(srv: Running) -> None:
    c = srv.conn()
    for i in range(3):
        c.request("POST", f"/a/{i}?q=1", body=b"x" * i, headers={"X-Test": "yes"})
        r = c.getresponse()
        doc = json.loads(r.read())
        assert r.status == 200 and r.getheader("date")
        assert doc == {"method": "POST", "path": f"/a/{i}", "query": "q=1", "body": i,
                       "sha": hashlib.sha256(b"x" * i).hexdigest()[:12], "x": "yes",
                       "client": True}


def test_pipelined_requests_are_answered_in_order(srv: Running) -> None:
    reqs = b"".join(b"GET /p/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(reqs + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = _read_all(s)
    paths = [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])["path"]
             for part in data.split(b"HTTP/1.1 200 OK")[1:]]
    assert paths == [f"/p/{i}" for i in range(5)] + ["/last"]


def test_percent_encoded_paths_are_decoded(srv: Running) -> None:
    c = srv.conn()
    c.request("GET", "/v2/models/my%20model")
    assert json.loads(c.getresponse().read())["path"] == "/v2/models/my model"


def test_a_chunked_body_reaches_the_app_whole(srv: Running) -> None:
    c = srv.conn()
    c.request("POST", "/c", body=iter([b"ab", b"cde", b"f"]), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    assert json.loads(c.getresponse().read())["body"] == 6


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(srv: Running) -> None:
    data = srv.raw(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (LIMIT + 1))
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head
    assert "1000" in json.loads(body)["error"]


def test_a_chunked_body_over_the_limit_is_refused(srv: Running) -> None:
    chunk = b"%x\r\n%s\r\n" % (600, b"y" * 600)
    data = srv.raw(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + chunk + chunk + b"0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 413 ")


def test_malformed_requests_get_400_and_the_server_keeps_serving(srv: Running) -> None:
    assert srv.raw(b"NOT A REQUEST\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert srv.raw(b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n").startswith(
        b"HTTP/1.1 400 ")
    c = srv.conn()
    c.request("GET", "/after")
    assert c.getresponse().status == 200


def test_oversized_headers_get_431(srv: Running) -> None:
    big = b"X-Big: " + b"a" * (server_mod.MAX_HEADER_BYTES + 10) + b"\r\n"
    assert srv.raw(b"GET / HTTP/1.1\r\n" + big + b"\r\n").startswith(b"HTTP/1.1 431 ")


def test_http_1_0_closes_and_head_has_no_body(srv: Running) -> None:
    data = srv.raw(b"GET /old HTTP/1.0\r\n\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"connection: close" in head and json.loads(body)["path"] == "/old"
    data = srv.raw(b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: " in head and body == b""


def test_expect_100_continue(srv: Running) -> None:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"abc")
        data = _read_all(s)
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["body"] == 3


def test_an_app_error_is_a_500_and_streamed_responses_are_chunked(srv: Running) -> None:
    c = srv.conn()
    c.request("GET", "/boom")
    r = c.getresponse()
    assert r.status == 500 and json.loads(r.read()) == {"error": "internal error"}
    c.close()
    c = srv.conn()
    c.request("GET", "/stream")
    r = c.getresponse()
    assert r.getheader("transfer-encoding") == "chunked" and r.read() == b"one,two,three"


def test_unix_socket(srv: Running) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(srv.uds_path))
        s.sendall(b"GET /uds HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = _read_all(s)
    doc = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert doc["path"] == "/uds" and doc["client"] is False


def test_idle_connections_are_closed(tmp_path: Path) -> None:
    r = Running(tmp_path, keep_alive_s=0.5)
    try:
        with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
            s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.1)
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
            t0 = time.monotonic()
            assert s.recv(100) == b""  # closed by the sweep
            assert time.monotonic() - t0 < 4
        with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
            s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            assert _read_all(s).startswith(b"HTTP/1.1 408 ")  # then closed
    finally:
        r.stop()


def test_graceful_stop_finishes_running_requests(tmp_path: Path) -> None:
    r = Running(tmp_path)
    try:
        c = r.conn()
        c.request("GET", "/slow")
        time.sleep(0.1)
        r.loop.call_soon_threadsafe(r.server.stop)
        resp = c.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["path"] == "/slow"
        r.thread.join(10)
        assert not r.thread.is_alive()
        assert r.app.lifespan == ["lifespan.startup", "lifespan.shutdown"]
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", r.port), timeout=1).close()
    finally:
        r.stop()


def test_large_bodies_are_read_into_place_aligned_and_keep_alive_goes_on(tmp_path: Path) -> None:
    """A sized body of 64 KiB or more is read straight into one buffer: whole, with the byte at
    the align header's offset 64-byte aligned, and the next request on the connection (sent in
    the same write) still parsed."""
    r = Running(tmp_path, limit=1 << 22)
    try:
        rng = np.random.default_rng(0)
        for size, offset in ((server_mod.DIRECT_MIN, 0), (600_003, 37), (1 << 21, 1001)):
            body = rng.bytes(size)
            head = (b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nX-Align-At: %d\r\n"
                    b"\r\n" % (size, offset))
            tail = b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
                data = head + body + tail
                for i in range(0, len(data), 70_001):  # in pieces, split anywhere
                    s.sendall(data[i:i + 70_001])
                reply = _read_all(s)
            first, second = (json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])
                             for part in reply.split(b"HTTP/1.1 200 OK")[1:])
            assert first["body"] == size
            assert first["sha"] == hashlib.sha256(body).hexdigest()[:12]
            assert first["aligned"] is True
            assert second["path"] == "/next"
    finally:
        r.stop()


def test_the_buffer_pool_reuses_only_what_nothing_holds() -> None:
    from edge_runtime.api.http import BufferPool

    pool = BufferPool(keep=2)
    first = pool.take(100_000, 7)
    held = np.frombuffer(first, np.uint8)[7:]  # an array the app kept
    assert held.ctypes.data % 64 == 0
    del first
    second = pool.take(100_000, 0)  # the first is still held: a new buffer
    assert not np.shares_memory(np.frombuffer(second, np.uint8), held)
    del second
    third = pool.take(50_000, 3)  # the second is free again: reused
    assert np.frombuffer(third, np.uint8)[3:].ctypes.data % 64 == 0
    assert len(pool._buffers) == 2
    del held, third
    assert [sys.getrefcount(pool._buffers[i]) for i in range(2)] == [2, 2]  # all free


def fast_echo(url: bytes, headers: list[tuple[bytes, bytes]], body: bytes | memoryview
              ) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
    """Answers POST /fast/... itself (the body reversed), raises on /fast/boom, declines the
    rest (the ASGI app answers)."""
    if not url.startswith(b"/fast/"):
        return None
    if url == b"/fast/boom":
        raise RuntimeError("boom")
    return 201, bytes(body)[::-1], [(b"content-type", b"text/plain"), (b"x-fast", b"1")]


def test_a_fast_handler_answers_inline_and_declines_to_the_app(tmp_path: Path) -> None:
    srv = Running(tmp_path, fast=fast_echo)
    try:
        c = srv.conn()
        c.request("POST", "/fast/a", body=b"abc")
        r = c.getresponse()
        assert (r.status, r.read(), r.getheader("x-fast"), r.getheader("content-length")) == (
            201, b"cba", "1", "3")
        c.request("POST", "/other", body=b"abc")  # declined: the ASGI app, same connection
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["path"] == "/other"
        c.request("GET", "/fast/a")  # only POSTs are offered to it
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["method"] == "GET"
        c.request("POST", "/fast/boom", body=b"x")
        r = c.getresponse()
        assert r.status == 500 and json.loads(r.read()) == {"error": "internal error"}
        c.request("POST", "/fast/after", body=b"12")  # the connection keeps serving
        assert c.getresponse().read() == b"21"
        # pipelined, fast and app answers interleaved: still in request order
        reqs = b"".join(b"POST /%s/%d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d"
                        % (b"fast" if i % 2 else b"slow", i, i) for i in range(6))
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(reqs + b"POST /fast/z HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                             b"Connection: close\r\n\r\nz")
            data = _read_all(s)
        answers = [part.split(b"\r\n\r\n", 1)[1] for part in data.split(b"HTTP/1.1 ")[1:]]
        assert [a[:1] for a in answers] == [b"{", b"1", b"{", b"3", b"{", b"5", b"z"]
        assert [json.loads(a)["path"] for a in answers[0:6:2]] == ["/slow/0", "/slow/2",
                                                                 "/slow/4"]
        assert b"connection: close" in data.split(b"HTTP/1.1 ")[-1]
    finally:
        srv.stop()


class _Transport:
    def __init__(self, log: list[tuple[str, bytes]], name: str) -> None:
        self.log, self.name, self.closed = log, name, False

    def write(self, data: bytes) -> None:
        if self.name == "broken":
            raise RuntimeError("broken pipe")
        self.log.append((self.name, data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class _Loop:
    def __init__(self) -> None:
        self.soon: list[Any] = []

    def call_soon(self, fn: Any) -> None:
        self.soon.append(fn)

    def end_turn(self) -> None:
        todo, self.soon = self.soon, []
        for fn in todo:
            fn()


def test_writes_of_one_loop_turn_are_coalesced_in_order() -> None:
    server = HttpServer(EchoApp(), max_body_bytes=LIMIT)
    loop = _Loop()
    server.loop = loop  # type: ignore[assignment]
    log: list[tuple[str, bytes]] = []
    a, b, gone = _Transport(log, "a"), _Transport(log, "b"), _Transport(log, "gone")
    server.send(a, b"1")  # the turn's first write goes out at once
    assert log == [("a", b"1")]
    server.send(b, b"2")
    server.send(gone, b"x")
    server.send(a, b"3")
    gone.closed = True  # closed before the turn ends: its bytes are dropped
    assert log == [("a", b"1")]
    loop.end_turn()
    assert log == [("a", b"1"), ("b", b"2"), ("a", b"3")]
    server.send(b, b"4")  # a new turn: at once again
    assert log[-1] == ("b", b"4")
    for i in range(server_mod.OUTBOX_MAX):  # a full outbox goes out without waiting
        server.send(a, b"%d" % i)
    assert len(log) == 4 + server_mod.OUTBOX_MAX and not server.outbox
    loop.end_turn()
    assert len(log) == 4 + server_mod.OUTBOX_MAX
    broken = _Transport(log, "broken")  # a write that raises: closed, the others still go
    server.send(a, b"5")
    server.send(broken, b"x")
    server.send(b, b"6")
    loop.end_turn()
    assert log[-2:] == [("a", b"5"), ("b", b"6")] and broken.closed


def test_many_connections_at_once_each_get_their_own_answer(tmp_path: Path) -> None:
    """Requests arriving together are answered in one coalesced burst: no answer lost,
    none on the wrong connection."""
    srv = Running(tmp_path, fast=fast_echo)
    try:
        socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                 for _ in range(50)]
        for rnd in range(3):
            for i, s in enumerate(socks):
                body = b"%d-%d" % (rnd, i)
                s.sendall(b"POST /fast/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                          % (i, len(body), body))
            for i, s in enumerate(socks):
                want = (b"%d-%d" % (rnd, i))[::-1]
                data = b""
                while not data.endswith(want):
                    chunk = s.recv(65536)
                    assert chunk, f"connection {i} closed"
                    data += chunk
                assert data.startswith(b"HTTP/1.1 201") and data.count(b"HTTP/1.1") == 1
        for s in socks:
            s.close()
    finally:
        srv.stop()
