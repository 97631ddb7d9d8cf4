"""What one client may hold of the HTTP server: deadlines per connection, and one memory
budget for request bodies shared by all connections.

A request body counts against the budget byte by byte as it arrives (not by its declared
Content-Length: a client declaring 32 MB and sending one byte holds one byte), and until its
answer has been sent. A connection whose body bytes find the budget spent stops being read;
it is read again, first come first served, as other requests finish. Health checks and other
requests without a body never wait for it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from edge_runtime.settings import ServeSettings


@dataclass(frozen=True)
class HttpLimits:
    #: Bytes of request bodies held at once, across connections (0 = twice the body limit).
    body_memory_bytes: int = 0
    #: A request head must be complete this long after its first byte.
    header_timeout_s: float = 10.0
    #: A request body may pause this long between bytes.
    body_idle_timeout_s: float = 10.0
    #: After its first ``body_idle_timeout_s``, a body must average at least this rate.
    body_min_bytes_per_s: int = 1024

    @classmethod
    def of(cls, settings: ServeSettings) -> HttpLimits:
        return cls(settings.body_memory_bytes, settings.header_timeout_s,
                   settings.body_idle_timeout_s, settings.body_min_bytes_per_s)

    def budget_for(self, max_body_bytes: int) -> int:
        return self.body_memory_bytes or 2 * max_body_bytes

    def body_too_slow(self, elapsed_s: float, received: int) -> bool:
        """Whether a body receiving ``received`` bytes in ``elapsed_s`` since its head is
        below the minimum rate (which applies after the first ``body_idle_timeout_s``)."""
        grace = self.body_idle_timeout_s
        return bool(self.body_min_bytes_per_s) and elapsed_s > grace and (
            received < self.body_min_bytes_per_s * (elapsed_s - grace))


class Reader(Protocol):
    def budget_resumed(self) -> None: ...


class BodyBudget:
    """Body bytes held across connections, and the connections waiting for room.

    The server adds bytes to ``used`` as they arrive (they are read already: nothing is
    refused) and calls ``over`` when a read reached the limit. Past the limit one body goes
    on regardless, the *leader* (the first to meet the full budget) until it is complete;
    the others stop reading and wait. So bodies that fill the budget together cannot wait for
    each other forever, and memory peaks at the limit plus one body. ``give`` wakes waiters
    in order, as many as the room lets read one buffer each (``read_size``).
    """

    def __init__(self, limit: int, *, read_size: int) -> None:
        self.limit = limit
        self.read_size = read_size
        self.used = 0
        self.peak = 0  # the most ``used`` has been past the limit
        self.leader: Reader | None = None
        self.waiters: deque[Reader] = deque()  # stopped for room, first come first

    @property
    def free(self) -> int:
        return self.limit - self.used

    def over(self, reader: Reader) -> bool:
        """A read of ``reader`` took ``used`` to the limit or past it: whether it must stop
        reading (it then waits to be woken by ``budget_resumed``)."""
        self.peak = max(self.peak, self.used)
        if self.leader is None or self.leader is reader:
            self.leader = reader
            return False
        self.waiters.append(reader)
        return True

    def done(self, reader: Reader) -> None:
        """The body of ``reader`` is complete, or dropped. With no leader and the budget
        full, the first waiter is woken to lead next (if it then sends nothing, the server's
        deadlines close it, and that wakes the next one)."""
        if self.leader is reader:
            self.leader = None
        if self.leader is None and self.waiters and self.used >= self.limit:
            self.waiters.popleft().budget_resumed()

    def give(self, n: int) -> None:
        self.used -= n
        if self.waiters:
            self.wake()

    def wake(self) -> None:
        """Wake waiters, first come first, as many as the room lets read one buffer each."""
        room = self.free
        while self.waiters and room > 0:
            room -= self.read_size
            self.waiters.popleft().budget_resumed()

    def forget(self, reader: Reader) -> None:
        """A closed connection stops waiting (and leading)."""
        if reader in self.waiters:
            self.waiters.remove(reader)
        self.done(reader)

    @property
    def waiting(self) -> int:
        return len(self.waiters)
