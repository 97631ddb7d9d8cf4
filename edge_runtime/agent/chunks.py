"""The agent's one outstanding artifact request, and the gate every inbound chunk passes.

A chunk is taken only when it belongs to the artifact being downloaded, its index is in the
window last requested and not yet answered, and its size is the one that index must have; it is
then checked and written at once, so nothing is queued: what a device holds in memory for
chunks is the one message being handled, whatever a broker or an impostor sends. Everything
else is dropped with a ``ChunkDrop`` reason for the caller to count.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum

from edge_runtime.agent.download import PartialDownload
from edge_runtime.errors import IntegrityError
from edge_runtime.protocol.messages import ArtifactChunk


class ChunkDrop(enum.Enum):
    UNSOLICITED = "unsolicited"  # no download under way, or another artifact
    OUTSIDE_WINDOW = "outside_window"  # not an index of the outstanding request
    WRONG_SIZE = "wrong_size"
    CORRUPT = "corrupt"  # the right size, but not the bytes of its sha256


class ChunkWindow:
    def __init__(self) -> None:
        self._dl: PartialDownload | None = None
        self._pending: set[int] = set()
        self._error: Exception | None = None
        self._changed = asyncio.Event()

    @property
    def pending(self) -> frozenset[int]:
        return frozenset(self._pending)

    def open(self, dl: PartialDownload, indices: list[int]) -> None:
        """Expect these chunks of ``dl`` (replacing any earlier window)."""
        if dl is not self._dl:
            self._error = None
        self._dl = dl
        self._pending = set(indices) - dl.done
        self._changed.clear()

    def close(self) -> None:
        self._dl, self._pending, self._error = None, set(), None

    def offer(self, chunk: ArtifactChunk) -> ChunkDrop | None:
        """Write the chunk if it is wanted; otherwise the reason it was dropped."""
        dl = self._dl
        if dl is None or chunk.sha256 != dl.artifact.sha256:
            return ChunkDrop.UNSOLICITED
        if chunk.index not in self._pending:
            return ChunkDrop.OUTSIDE_WINDOW
        a = dl.artifact
        if len(chunk.data) != min(a.chunk_size, a.size - chunk.index * a.chunk_size):
            return ChunkDrop.WRONG_SIZE
        # one copy per index and request: a corrupt one is asked for again in the next window
        self._pending.discard(chunk.index)
        try:
            written = dl.write(chunk.index, chunk.data)
        except (IntegrityError, OSError) as exc:  # too many corrupt copies; a full disk
            self._error = exc
            written = False
        if not self._pending or self._error is not None:
            self._changed.set()
        return None if written else ChunkDrop.CORRUPT

    async def wait(self, timeout: float) -> None:
        """Until every chunk of the window is written or ``timeout`` passes; raises what
        writing a chunk raised (the download has failed)."""
        if self._pending and self._error is None:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
