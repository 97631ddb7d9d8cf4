"""The builtin HTTP server against hostile clients, over real sockets: declared-but-unsent
bodies, more body bytes than the memory budget, a gate that refuses before the body,
deadlines for heads, bodies and unread answers (driven by calling the sweep with a later
clock, not by waiting), clients that never read, and request heads httptools lets through."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.api import server as server_mod
from edge_runtime.api.http import BufferPool
from edge_runtime.api.limits import BodyBudget, HttpLimits
from edge_runtime.api.server import FastHandler, Gate, HttpProtocol, HttpServer
from tests.edge_runtime.api.test_server import EchoApp, _read_all, fast_echo

MB = 1 << 20


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Served:
    """An HttpServer on a free loopback port, its loop in a thread."""

    def __init__(self, *, limit: int = 32 * MB, limits: HttpLimits | None = None,
                 gate: Gate | None = None, fast: FastHandler | None = None,
                 keep_alive_s: float = 30.0) -> None:
        self.server = HttpServer(EchoApp(), max_body_bytes=limit, keep_alive_s=keep_alive_s,
                                 gate=gate, fast=fast, limits=limits)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, daemon=True,
                                       args=(self.server.serve([self.sock],
                                                               handle_signals=False),))
        self.thread.start()
        until(lambda: self.server._stop is not None and self._listening())

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop and return its result."""
        async def call() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def sweep(self, later_s: float) -> None:
        """The deadline sweep, as if ``later_s`` seconds had passed."""
        self.on_loop(lambda: self.server.sweep(time.monotonic() + later_s))

    def conns(self) -> list[HttpProtocol]:
        return list(self.on_loop(lambda: list(self.server.connections)))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.stop)
        self.thread.join(10)
        self.loop.close()


def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served()
    yield s
    s.stop()


def post_head(length: int, path: str = "/p", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (
        path.encode(), length, extra)


def answer(s: socket.socket) -> tuple[bytes, Any]:
    data = _read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body) if body else None


# -- memory before authentication -------------------------------------------------------------
def test_declared_but_unsent_bodies_hold_no_memory(served: Served) -> None:
    """40 connections each declaring 32 MB and sending one byte: 40 bytes in the budget and
    a few pages of memory, not 1.3 GB."""
    before = rss_bytes()
    socks = [served.connect() for _ in range(40)]
    for s in socks:
        s.sendall(post_head(32 * MB) + b"x")
    until(lambda: served.on_loop(lambda: served.server.budget.used) == 40)
    grown = rss_bytes() - before
    assert grown < 24 * MB, grown
    assert served.on_loop(lambda: served.server.budget.waiting) == 0
    for s in socks:
        s.close()
    until(lambda: not served.conns())
    assert served.on_loop(lambda: served.server.budget.used) == 0


def test_new_body_buffers_take_memory_only_as_they_are_written() -> None:
    pool = BufferPool()
    before = rss_bytes()
    views = [pool.take(32 * MB, 7) for _ in range(4)]
    assert rss_bytes() - before < 8 * MB
    views[0][: 4 * MB] = b"\1" * (4 * MB)
    assert 3 * MB < rss_bytes() - before < 12 * MB


def test_bodies_beyond_the_budget_wait_and_all_complete() -> None:
    """Six clients sending 600 KB at once against a 1 MB budget: the readers pause and
    resume, every body arrives whole, memory held never passes the budget plus one body
    (the oldest body always goes on), and the budget is empty after."""
    srv = Served(limit=700_000, limits=HttpLimits(body_memory_bytes=1 * MB))
    try:
        bodies = [bytes([i]) * 600_000 for i in range(6)]
        socks = [srv.connect() for _ in bodies]
        threads = [threading.Thread(target=s.sendall, args=(post_head(len(b), extra=(
            b"Connection: close\r\n")) + b,)) for s, b in zip(socks, bodies, strict=True)]
        for t in threads:
            t.start()
        for s, body in zip(socks, bodies, strict=True):
            status, doc = answer(s)
            assert status == b"HTTP/1.1 200 OK"
            assert doc["sha"] == hashlib.sha256(body).hexdigest()[:12]
        for t in threads:
            t.join(10)
        for s in socks:
            s.close()
        budget = srv.server.budget
        assert srv.on_loop(lambda: budget.used) == 0
        assert budget.peak <= budget.limit + 700_000 + server_mod.READ_SIZE
    finally:
        srv.stop()


def test_a_waiting_reader_is_not_closed_by_the_deadlines() -> None:
    """A hog fills most of the budget and stalls; a second body crosses the limit and leads
    (it goes on, then stalls too); a third has to wait. Past every deadline the two stalled
    ones get 408; the waiting one is left alone, read again once their bytes are gone, and
    answered."""
    srv = Served(limit=200_000, limits=HttpLimits(body_memory_bytes=200_000))
    try:
        hog, leader, waiter = srv.connect(), srv.connect(), srv.connect()
        used = lambda: srv.on_loop(lambda: srv.server.budget.used)  # noqa: E731
        hog.sendall(post_head(200_000) + b"h" * 190_000)
        until(lambda: used() == 190_000)
        leader.sendall(post_head(200_000) + b"l" * 20_000)
        until(lambda: used() == 210_000)
        waiter.sendall(post_head(200_000) + b"w" * 100_000)
        until(lambda: srv.on_loop(lambda: srv.server.budget.waiting) == 1)
        srv.sweep(60)
        assert answer(hog)[0].startswith(b"HTTP/1.1 408 ")
        assert answer(leader)[0].startswith(b"HTTP/1.1 408 ")
        waiter.sendall(b"w" * 100_000)
        waiter.shutdown(socket.SHUT_WR)
        status, doc = answer(waiter)
        assert status == b"HTTP/1.1 200 OK" and doc["body"] == 200_000
        for s in (hog, leader, waiter):
            s.close()
    finally:
        srv.stop()


def test_one_body_leads_past_the_limit_and_waiters_wake_in_order() -> None:
    woken: list[str] = []

    class R:
        def __init__(self, name: str) -> None:
            self.name = name

        def budget_resumed(self) -> None:
            woken.append(self.name)

    budget = BodyBudget(100, read_size=40)
    a, b, c = R("a"), R("b"), R("c")
    budget.used = 120
    assert budget.over(a) is False and budget.leader is a  # the first to meet the wall leads
    assert budget.over(a) is False
    assert budget.over(b) is True and budget.over(c) is True  # the others wait
    assert budget.peak == 120
    budget.give(50)  # 30 free: room for one reader's buffer
    assert woken == ["b"] and budget.waiting == 1
    budget.used = 110
    budget.done(a)  # the leader's body is complete and the budget still full: c leads next
    assert woken == ["b", "c"] and budget.leader is None and budget.waiting == 0
    assert budget.over(c) is False and budget.leader is c
    assert budget.over(b) is True
    budget.forget(c)  # a closed connection stops leading: the next waiter may lead
    assert budget.leader is None and woken == ["b", "c", "b"] and budget.waiting == 0
    assert budget.over(a) is False
    assert budget.over(b) is True and budget.over(c) is True
    budget.done(a)  # b is woken to lead ...
    budget.forget(b)  # ... sends nothing and is closed: c is woken in its place
    assert woken == ["b", "c", "b", "b", "c"] and budget.waiting == 0


# -- the gate ---------------------------------------------------------------------------------
def token_gate(url: bytes, headers: list[tuple[bytes, bytes]], client: str | None
               ) -> tuple[int, str] | None:
    return None if (b"x-token", b"good") in headers else (401, "wrong token")


@pytest.mark.parametrize("head", [
    post_head(32 * MB),
    b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    post_head(10, extra=b"Expect: 100-continue\r\n"),
], ids=["sized", "chunked", "expect-continue"])
def test_the_gate_refuses_from_the_head_before_any_body_byte(head: bytes) -> None:
    srv = Served(gate=token_gate)
    try:
        with srv.connect() as s:
            s.sendall(head)  # and nothing more: the answer comes anyway
            status, doc = answer(s)
        assert status == b"HTTP/1.1 401 Unauthorized" and doc == {"error": "wrong token"}
        with srv.connect() as s:
            s.sendall(post_head(100_000, extra=b"X-Token: good\r\nConnection: close\r\n")
                      + b"b" * 100_000)
            assert answer(s)[1]["body"] == 100_000
        with srv.connect() as s:  # small bodies are read: the app checks those
            s.sendall(post_head(3, extra=b"Connection: close\r\n") + b"abc")
            assert answer(s)[0] == b"HTTP/1.1 200 OK"
    finally:
        srv.stop()


# -- deadlines --------------------------------------------------------------------------------
def test_an_unfinished_head_gets_408_after_the_header_deadline(served: Served) -> None:
    with served.connect() as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-A: 1")
        until(lambda: any(c.head_since is not None for c in served.conns()))
        served.sweep(5)  # within the 10 s
        assert served.conns()
        served.sweep(11)
        status, doc = answer(s)
    assert status.startswith(b"HTTP/1.1 408 ") and "head" in doc["error"]


def test_an_idle_body_gets_408_after_the_idle_deadline(served: Served) -> None:
    with served.connect() as s:
        s.sendall(post_head(1000) + b"x" * 10)
        until(lambda: any(c.body_since is not None for c in served.conns()))
        served.sweep(5)
        assert served.conns()
        served.sweep(11)
        status, doc = answer(s)
    assert status.startswith(b"HTTP/1.1 408 ") and "no body bytes" in doc["error"]


@pytest.mark.parametrize(("elapsed", "received", "slow"), [
    (5.0, 0, False),  # within the grace: the idle rule alone applies
    (10.0, 0, False),
    (11.0, 1000, True),  # 1 s past the grace at 1024 B/s needs 1024 bytes
    (11.0, 1024, False),
    (100.0, 50_000, True),  # a 1-byte-a-second client never catches up
    (100.0, 100_000, False),
])
def test_the_body_rate_rule(elapsed: float, received: int, slow: bool) -> None:
    assert HttpLimits().body_too_slow(elapsed, received) is slow
    assert HttpLimits(body_min_bytes_per_s=0).body_too_slow(elapsed, received) is False


def test_idle_keep_alive_connections_are_closed_silently(served: Served) -> None:
    with served.connect() as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        served.sweep(20)
        assert served.conns()
        served.sweep(31)
        assert s.recv(100) == b""


def test_a_client_that_never_reads_stops_being_read_and_is_closed() -> None:
    """It pipelines requests whose answers it never reads: once the socket's send buffer is
    full the server stops reading it (no queue of answers grows), and after keep_alive_s
    of that it is closed."""
    srv = Served(fast=fast_echo)
    try:
        s = srv.connect()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        request = post_head(20_000, "/fast/x") + b"r" * 20_000
        s.setblocking(False)
        pending = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the server stops reading
            pending = pending or request * 50
            try:
                pending = pending[s.send(pending):]
            except BlockingIOError:
                conns = srv.conns()
                if conns and conns[0].paused & server_mod._WRITE:
                    break
                time.sleep(0.01)
        (conn,) = srv.conns()
        assert conn.paused & server_mod._WRITE
        assert srv.on_loop(conn.transport.get_write_buffer_size) < 4 * MB
        srv.sweep(31)
        until(lambda: not srv.conns())
        s.close()
    finally:
        srv.stop()


# -- heads httptools lets through -------------------------------------------------------------
@pytest.mark.parametrize(("request_bytes", "status", "says"), [
    (b"GET /v2\r\n\r\n", 400, "no HTTP version"),
    (b"GET /v2 HTTP/0.9\r\n\r\n", 400, "no HTTP version"),
    (b"GET /v2 HTTP/2.0\r\n\r\n", 505, "HTTP/2.0 is not supported"),
    (b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501,
     "'gzip, chunked' is not supported (only chunked)"),
    (b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400, "Transfer-Encoding"),
])
def test_heads_the_server_does_not_take(served: Served, request_bytes: bytes, status: int,
                                        says: str) -> None:
    with served.connect() as s:
        s.sendall(request_bytes)
        line, doc = answer(s)
    assert line.startswith(b"HTTP/1.1 %d " % status) and says in doc["error"]
    with served.connect() as s:  # and it goes on serving
        s.sendall(b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                  b"3\r\nabc\r\n0\r\n\r\n")
        assert answer(s)[1]["body"] == 3
