"""What the agent dropped, counted by kind and reason (shown in the daemon's status).

A refused desired state or a malformed message is logged once, as a warning. Chunks that are
not wanted are routine after a re-request (late copies) and are what a flood looks like, so
those are logged at the 1st, 2nd, 4th, 8th, ... drop of each reason only.
"""

from __future__ import annotations

import logging

from edge_runtime.agent.chunks import ChunkDrop
from edge_runtime.protocol.messages import MessageInvalid
from edge_runtime.protocol.signed import DesiredRefused


class Drops:
    def __init__(self, device: str, log: logging.Logger) -> None:
        self.device = device
        self.log = log
        self.counts: dict[str, int] = {}

    def _count(self, key: str) -> int:
        n = self.counts.get(key, 0) + 1
        self.counts[key] = n
        return n

    def invalid(self, topic: str, kind: str, exc: MessageInvalid) -> None:
        """A malformed message, or a desired state that failed its checks."""
        reason = exc.refusal.value if isinstance(exc, DesiredRefused) else "invalid"
        self._count(f"{kind}.{reason}")
        self.log.warning("%s: dropped %s (%s)", self.device, topic, exc)

    def chunk(self, reason: ChunkDrop, sha256: str, index: int) -> None:
        n = self._count(f"artifact/chunk.{reason.value}")
        if n & (n - 1) == 0:
            self.log.info("%s: dropped artifact chunk %s/%d (%s; %d so far)", self.device,
                          sha256[:12], index, reason.value, n)

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
