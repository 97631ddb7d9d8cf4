"""Dynamic batching per model: requests that arrive while the model is busy are run together.

Greedy: a request that finds the queue empty runs at once; only when others are queued does the
worker wait up to ``max_delay_s`` to fill a batch of ``max_batch_size`` rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Arrays = dict[str, NDArray[Any]]
RunBatch = Callable[[Arrays], Awaitable[Arrays]]


@dataclass
class _Item:
    inputs: Arrays
    rows: int
    future: asyncio.Future[Arrays]


def _signature(inputs: Arrays) -> tuple[Any, ...]:
    return tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(inputs.items()))


class DynamicBatcher:
    def __init__(self, run: RunBatch, *, max_batch_size: int, max_delay_s: float) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()  # None: stop when reached
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.rows = 0

    async def submit(self, inputs: Arrays) -> Arrays:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._loop())
        rows = int(next(iter(inputs.values())).shape[0])
        fut: asyncio.Future[Arrays] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(inputs, rows, fut))
        return await fut

    async def _loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:  # closed: stop once nothing submitted before or since is left
                if self._queue.empty():
                    return
                continue
            batch = [first]
            await self._fill(batch)
            for group in _group(batch):
                await self._run_group(group)

    async def _fill(self, batch: list[_Item]) -> None:
        rows = batch[0].rows
        deadline = asyncio.get_running_loop().time() + self.max_delay_s
        while rows < self.max_batch_size:
            if self._queue.empty():
                if len(batch) == 1 or self.max_delay_s <= 0:
                    return  # greedy: nobody else is waiting
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    return
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    return
            else:
                item = self._queue.get_nowait()
            if item is None:  # the stop marker: back in the queue for _loop, after this batch
                self._queue.put_nowait(None)
                return
            batch.append(item)
            rows += item.rows

    async def _run_group(self, group: list[_Item]) -> None:
        live = [it for it in group if not it.future.done()]
        if not live:
            return
        inputs = {k: np.concatenate([it.inputs[k] for it in live]) if len(live) > 1
                  else live[0].inputs[k] for k in live[0].inputs}
        try:
            outputs = await self._run(inputs)
        except Exception as exc:
            for it in live:
                if not it.future.done():
                    it.future.set_exception(exc)
            return
        self.batches += 1
        start = 0
        for it in live:
            part = {k: v[start:start + it.rows] for k, v in outputs.items()}
            start += it.rows
            if not it.future.done():
                it.future.set_result(part)
        self.rows += start

    def close(self) -> None:
        """Stop once the requests already submitted have run. Cancelling the worker instead
        would leave their futures pending forever (a swap retires the old version's batcher
        while requests for it are still queued)."""
        if self._worker is not None and not self._worker.done():
            self._queue.put_nowait(None)


def _group(batch: list[_Item]) -> list[list[_Item]]:
    """Requests can only be concatenated when every non-batch dimension matches."""
    groups: dict[tuple[Any, ...], list[_Item]] = {}
    for item in batch:
        groups.setdefault(_signature(item.inputs), []).append(item)
    return list(groups.values())
