"""`edge-runtime serve` as a systemd Type=notify service, against a fake NOTIFY_SOCKET: READY=1
once the port answers, WATCHDOG=1 every half WATCHDOG_USEC, none while the process is stopped
(SIGSTOP longer than the watchdog) and again after SIGCONT, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_runtime.daemon import RunInfo
from tests.integration.conftest import DaemonFactory

WATCHDOG_USEC = 400_000  # pings every 0.2 s


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    yield sock
    sock.close()


def receive(sock: socket.socket, timeout: float = 30.0) -> str:
    sock.settimeout(timeout)
    return sock.recv(4096).decode()


def waiting(sock: socket.socket) -> list[str]:
    """The datagrams already queued, without waiting for more."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out


def until(sock: socket.socket, prefix: str) -> list[str]:
    """Messages up to and including the first that starts with ``prefix``."""
    seen = [receive(sock)]
    while not seen[-1].startswith(prefix):
        seen.append(receive(sock))
    return seen


def test_ready_watchdog_stall_and_stop(tmp_path: Path, notify: socket.socket,
                                       daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(tmp_path / "store", env={
        "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    d.start(wait_ready=False)
    assert d.proc is not None

    seen = until(notify, "READY=1")
    assert not any(m.startswith("READY") for m in seen[:-1])
    assert seen[-1].startswith("READY=1\nSTATUS=serving 0 model(s) on port ")
    info = RunInfo.read(d.store)
    assert info is not None and info.pid == d.proc.pid
    with urllib.request.urlopen(info.url + "/v2/health/ready", timeout=5) as resp:
        assert resp.status == 200  # the port answered when READY=1 was sent

    pings = [receive(notify) for _ in range(5)]
    assert pings == ["WATCHDOG=1"] * 5

    # A stalled process sends nothing however long past the watchdog; then it pings again.
    d.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(0.3)  # a ping sent just before the stop is in the queue by now
        waiting(notify)
        time.sleep(3 * WATCHDOG_USEC / 1e6)
        stalled = waiting(notify)
    finally:
        d.proc.send_signal(signal.SIGCONT)
    assert stalled == []
    assert receive(notify) == "WATCHDOG=1"

    d.proc.send_signal(signal.SIGTERM)
    rest = until(notify, "STOPPING=1")
    assert set(rest[:-1]) <= {"WATCHDOG=1"} and rest[-1] == "STOPPING=1\nSTATUS=stopping"
    assert d.proc.wait(timeout=30) == 0
    assert not any(m.startswith("READY") for m in waiting(notify))


def test_without_notify_socket_nothing_is_sent(tmp_path: Path,
                                               daemon_factory: DaemonFactory) -> None:
    """Outside systemd the daemon serves as before, and a watchdog without a socket is inert."""
    d = daemon_factory(tmp_path / "store", env={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
    d.start()
    assert d.get("/v2/health/ready")[0] == 200
    assert d.stop() == 0


def test_a_vanished_notify_socket_does_not_stop_serving(tmp_path: Path, notify: socket.socket,
                                                        daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(tmp_path / "store", env={
        "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    d.start(wait_ready=False)
    until(notify, "READY=1")
    notify.close()
    (tmp_path / "notify").unlink()
    time.sleep(4 * WATCHDOG_USEC / 1e6)  # pings fail meanwhile
    d.wait_ready()
    assert d.get("/v2/health/ready")[0] == 200
    assert d.stop() == 0
    assert "sd_notify WATCHDOG failed" in d.log.read_text()
