"""The ASGI lifespan protocol as the builtin server drives it, for apps that take it (others
are left alone)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("edge_runtime.server")


class Lifespan:
    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async def send(message: dict[str, Any]) -> None:
            if message["type"].startswith("lifespan.startup"):
                self.started.set()
            elif message["type"].startswith("lifespan.shutdown"):
                self.stopped.set()

        try:
            await self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, self.inbox.get,
                           send)
        except Exception:  # an app without lifespan support
            log.debug("the app does not take lifespan events", exc_info=True)
        finally:
            self.started.set()
            self.stopped.set()

    async def startup(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        await self.started.wait()

    async def shutdown(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopped.wait(), 10.0)
