"""systemd's notify protocol (sd_notify(3)) without libsystemd, for a ``Type=notify`` unit.

Each message is one datagram of ``KEY=value`` lines to the ``AF_UNIX`` socket named by
``NOTIFY_SOCKET`` (an absolute path, or ``@name`` in the abstract namespace). The daemon says
``READY=1`` once its HTTP port answers, ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` from the
event loop itself (a coroutine, not a thread: a loop stalled past ``WatchdogSec=`` stops the
pings and systemd restarts the service) and ``STOPPING=1`` when it begins to shut down.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op. A message that cannot be sent (the
socket is gone, the receiver's queue is full) is counted and logged once per run of failures;
it never raises and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from edge_runtime.settings import SystemdSettings

__all__ = ["Notifier", "http_answers"]

log = logging.getLogger("edge_runtime.sdnotify")
STATUS_MAX = 200  # systemctl status shows one line
PROBE_EVERY_S = 0.02
PROBE_TIMEOUT_S = 2.0


def _address(name: str | None) -> str | bytes | None:
    """The socket address of NOTIFY_SOCKET, or None when unset or unusable."""
    if not name:
        return None
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    if name.startswith("/") and len(name.encode()) < 108:  # sun_path holds 108 bytes
        return name
    log.warning("NOTIFY_SOCKET=%r is neither an absolute path nor @abstract: ignored", name)
    return None


class Notifier:
    """``Notifier(SystemdSettings.from_env())``; ``ready()``, ``watchdog()``, ``stopping()``."""

    def __init__(self, settings: SystemdSettings, *, pid: int | None = None) -> None:
        self._address = _address(settings.notify_socket)
        self._sock: socket.socket | None = None
        pid = os.getpid() if pid is None else pid
        mine = settings.watchdog_pid is None or settings.watchdog_pid == pid
        usec = settings.watchdog_usec if self._address is not None and mine else 0
        #: Seconds between WATCHDOG=1 pings (half the watchdog timeout); None: no watchdog.
        self.watchdog_s: float | None = usec / 2e6 if usec > 0 else None
        self.sent = 0
        self.failures = 0
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str) -> bool:
        """One message of ``KEY=value`` lines (``send(READY="1", STATUS="...")``); whether it
        went out."""
        if self._address is None:
            return False
        text = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                                           | socket.SOCK_NONBLOCK)
            self._sock.sendto(text.encode(), self._address)
        except OSError as exc:
            self.failures += 1
            if not self._failing:
                log.warning("sd_notify %s failed (%s); %d failure(s) so far",
                            ",".join(fields), exc, self.failures)
            self._failing = True
            return False
        if self._failing:
            log.info("sd_notify works again")
            self._failing = False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING="1", STATUS=status)

    async def watchdog_loop(self) -> None:
        """Ping every ``watchdog_s`` for as long as the event loop runs this (supervised)."""
        if self.watchdog_s is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(self.watchdog_s)

    async def ready_when_answering(self, host: str, port: int, status: str) -> None:
        """READY=1 once ``GET /v2/health/ready`` on the port answers 200."""
        if self._address is None:
            return
        while not await http_answers(host, port):
            await asyncio.sleep(PROBE_EVERY_S)
        self.ready(status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(value: str) -> str:
    return " ".join(str(value).split())[:STATUS_MAX]


async def http_answers(host: str, port: int) -> bool:
    """Whether the daemon's own HTTP port answers its readiness check with 200 now."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(target, port),
                                                PROBE_TIMEOUT_S)
        writer.write(b"GET /v2/health/ready HTTP/1.1\r\nHost: localhost\r\n"
                     b"Connection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
    return line.split(b" ")[1:2] == [b"200"]
