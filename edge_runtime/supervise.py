"""Supervised background tasks: a long-lived loop that raises is logged, counted and restarted.

Every background task of the daemon and the manager (ingest, ticks, alert checks, telemetry flush,
artifact serving, agent loops) runs under a `Supervisor`, so one unexpected exception never stops
a service silently. A task that returns normally is done and not restarted; cancellation passes
through. Restarts back off exponentially (``base_s`` doubling up to ``max_s``) and the backoff
resets once a run has lasted ``healthy_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["Supervisor", "TaskHealth"]


@dataclass
class TaskHealth:
    """What a supervised task has been through: shown in /metrics and `status`."""

    restarts: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    running: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"restarts": self.restarts, "last_error": self.last_error,
                "last_error_at": self.last_error_at, "running": self.running}


@dataclass
class Supervisor:
    """Runs named coroutine factories and restarts them after an exception.

    ``sup.spawn("ingest", self._pump)`` takes the factory, not a coroutine, since each restart
    needs a fresh one.
    """

    log: logging.Logger
    base_s: float = 0.1
    max_s: float = 30.0
    healthy_s: float = 60.0
    health: dict[str, TaskHealth] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"task {name!r} is already running")
        self.health.setdefault(name, TaskHealth())
        task = asyncio.get_running_loop().create_task(self._run(name, factory), name=name)
        self._tasks[name] = task
        return task

    async def _run(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        health = self.health[name]
        delay = self.base_s
        while True:
            started = time.monotonic()
            health.running = True
            try:
                await factory()
            except asyncio.CancelledError:
                health.running = False
                raise
            except Exception as exc:
                health.running = False
                health.restarts += 1
                health.last_error = f"{type(exc).__name__}: {exc}"[:500]
                health.last_error_at = time.time()
                if time.monotonic() - started >= self.healthy_s:
                    delay = self.base_s
                self.log.exception("task %s failed (restart %d in %.1f s)", name,
                                   health.restarts, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_s)
                continue
            health.running = False
            return

    @property
    def restarts(self) -> int:
        return sum(h.restarts for h in self.health.values())

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {name: h.as_dict() for name, h in sorted(self.health.items())}

    async def stop(self) -> None:
        """Cancel every task and wait for them to end."""
        tasks = [t for t in self._tasks.values() if not t.done()]
        # Python 3.11's wait_for can swallow a cancellation that lands as its inner wait ends,
        # so a task may go on running: cancel again until every task is done, bounded.
        for _ in range(20):
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=0.25)
            tasks = [t for t in tasks if not t.done()]
        for task in tasks:
            self.log.error("task %s did not stop when cancelled", task.get_name())
        self._tasks.clear()

    def cancel(self) -> None:
        """Cancel every task without waiting (for synchronous shutdown paths)."""
        for task in self._tasks.values():
            task.cancel()
