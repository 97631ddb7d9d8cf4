"""The sd_notify protocol against a datagram socket the test binds (a fake NOTIFY_SOCKET): message
format, abstract namespace, the watchdog period and owner, failures that never raise, and pings
that come from the event loop itself (a blocked loop sends none)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_runtime.sdnotify import Notifier, http_answers
from edge_runtime.settings import SystemdSettings

Make = Callable[[SystemdSettings], Notifier]


@pytest.fixture
def make() -> Iterator[Make]:
    """Notifier(settings), its socket closed after the test."""
    made: list[Notifier] = []

    def factory(settings: SystemdSettings) -> Notifier:
        made.append(Notifier(settings))
        return made[-1]

    yield factory
    for n in made:
        n.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    """Every datagram waiting now, without waiting for more."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(5)


def test_messages_are_key_value_lines(receiver: tuple[socket.socket, str], make: Make) -> None:
    sock, path = receiver
    n = make(SystemdSettings(notify_socket=path))
    assert n.enabled and n.watchdog_s is None
    assert n.ready("serving 2 model(s)\non port 8080")
    assert n.watchdog()
    assert n.stopping()
    assert [sock.recv(4096).decode() for _ in range(3)] == [
        "READY=1\nSTATUS=serving 2 model(s) on port 8080", "WATCHDOG=1",
        "STOPPING=1\nSTATUS=stopping"]
    assert n.sent == 3 and n.failures == 0


def test_abstract_namespace(make: Make) -> None:
    name = f"edge-runtime-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert make(SystemdSettings(notify_socket="@" + name)).ready("up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_settings_from_the_environment() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000",
           "WATCHDOG_PID": "42"}
    assert SystemdSettings.from_env(env) == SystemdSettings("/run/systemd/notify", 30_000_000, 42)
    assert SystemdSettings.from_env({}) == SystemdSettings()
    broken = SystemdSettings.from_env({"WATCHDOG_USEC": "soon", "WATCHDOG_PID": "x",
                                       "NOTIFY_SOCKET": ""})
    assert broken == SystemdSettings()
    assert SystemdSettings.from_env({"WATCHDOG_USEC": "-5"}).watchdog_usec == 0


def test_watchdog_period_and_owner(receiver: tuple[socket.socket, str], make: Make) -> None:
    _sock, path = receiver
    me = os.getpid()
    assert make(SystemdSettings(path, 30_000_000)).watchdog_s == 15.0
    assert make(SystemdSettings(path, 30_000_000, me)).watchdog_s == 15.0
    assert make(SystemdSettings(path, 30_000_000, me + 1)).watchdog_s is None  # not ours
    assert make(SystemdSettings(None, 30_000_000)).watchdog_s is None  # nowhere to send


@pytest.mark.parametrize("name", [None, "", "relative/notify", "/" + "x" * 120])
def test_unusable_socket_names_turn_it_off(name: str | None, make: Make) -> None:
    n = make(SystemdSettings(notify_socket=name, watchdog_usec=1_000_000))
    assert not n.enabled and n.watchdog_s is None
    assert not n.ready("up") and not n.watchdog() and not n.stopping()
    assert n.failures == 0


def test_a_missing_socket_is_counted_never_raised(tmp_path: Path, make: Make,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    n = make(SystemdSettings(notify_socket=str(tmp_path / "gone")))
    for _ in range(5):
        assert not n.watchdog()
    assert n.failures == 5 and n.sent == 0
    warnings = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(warnings) == 1  # once per run of failures
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "gone"))
        assert n.watchdog() and sock.recv(100) == b"WATCHDOG=1"
    assert not n.watchdog()  # gone again: a new run of failures, logged again
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 2


def test_a_full_receiver_queue_does_not_block(receiver: tuple[socket.socket, str],
                                              make: Make) -> None:
    _sock, path = receiver
    n = make(SystemdSettings(notify_socket=path))
    results = [n.send(STATUS="x" * 150) for _ in range(5000)]  # nobody reads
    assert results[0] and not all(results) and n.failures == results.count(False)


def test_pings_come_from_the_event_loop(receiver: tuple[socket.socket, str], make: Make) -> None:
    """While the loop is blocked no ping goes out, however long; once it runs again they do."""
    sock, path = receiver
    n = make(SystemdSettings(notify_socket=path, watchdog_usec=40_000))  # every 20 ms

    async def main() -> tuple[int, int, int]:
        task = asyncio.get_running_loop().create_task(n.watchdog_loop())
        while n.sent < 3:
            await asyncio.sleep(0.005)
        before = len(drain(sock))
        time.sleep(0.5)  # the loop is stalled: 25 periods
        during = len(drain(sock))
        sent = n.sent
        while n.sent < sent + 3:
            await asyncio.sleep(0.005)
        task.cancel()
        return before, during, len(drain(sock))

    before, during, after = asyncio.run(main())
    assert before >= 3 and during == 0 and after >= 3


def test_ready_waits_for_the_port_to_answer(receiver: tuple[socket.socket, str],
                                            make: Make) -> None:
    sock, path = receiver
    n = make(SystemdSettings(notify_socket=path))

    async def main() -> list[str]:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]  # bound, not yet listening: refuses connections
        waiter = asyncio.get_running_loop().create_task(
            n.ready_when_answering("0.0.0.0", port, "up"))
        await asyncio.sleep(0.2)
        early = drain(sock)
        assert not await http_answers("127.0.0.1", port)

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            writer.close()

        server = await asyncio.start_server(answer, sock=listener)
        await asyncio.wait_for(waiter, 10)
        server.close()
        return early

    assert asyncio.run(main()) == []
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"
