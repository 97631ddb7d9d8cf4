"""Transport-free inference: the HTTP layer and the in-process API both call this.

validate against the manifest -> response cache -> (dynamic batcher) -> backend -> monitoring.

``infer_async`` keeps the event loop free of large work: a request of ``HEAVY_ELEMENTS`` input
elements or more runs whole (validation and its casts, cache key, inference, drift counting)
in a worker thread; a smaller one runs its inference on the loop only when its estimated time
is within ``INLINE_MAX_SECONDS`` (``ServedModel.inline_for``, from two smoke inferences).
An input the model itself refuses (``InputInvalid`` from the backend) counts as invalid input,
not as a failed inference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from time import perf_counter
from typing import Any, NamedTuple

from numpy.typing import NDArray

from edge_runtime.batching import DynamicBatcher
from edge_runtime.cache import ResponseCache, input_key
from edge_runtime.errors import InferenceFailed, InputInvalid, PayloadInvalid
from edge_runtime.inputs import validate_inputs
from edge_runtime.registry import Registry, ServedModel
from edge_runtime.telemetry import Telemetry

Arrays = dict[str, NDArray[Any]]
HEAVY_ELEMENTS = 256 * 1024  # ~1 MB of float32: a cast or a cache key alone takes ~1 ms


def input_elements(inputs: Mapping[str, NDArray[Any]]) -> int:
    n = 0
    for arr in inputs.values():
        n += arr.size
    return n


class InferResult(NamedTuple):
    name: str
    version: str
    outputs: Arrays


class DataPlane:
    def __init__(self, registry: Registry, telemetry: Telemetry, *,
                 cache: ResponseCache | None = None, max_batch_size: int = 0,
                 max_queue_delay_s: float = 0.001, workers: int = 2) -> None:
        self.registry = registry
        self.telemetry = telemetry
        self.cache = cache
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="infer")
        self._batchers: dict[int, DynamicBatcher] = {}

    def _prepare(self, name: str, version: str | None, inputs: Mapping[str, NDArray[Any]],
                 unit: str | None = None) -> tuple[ServedModel, Arrays]:
        # Held from here, not only while predict runs: a swap must not unload the version
        # while this request waits in a batch queue or for a worker. The caller releases it.
        served = self.registry.acquire(name, version, unit=unit)
        try:
            arrays = validate_inputs(served.installed.manifest.inputs, inputs)
        except InputInvalid:
            served.release()
            self.telemetry.error(served.name, served.version, "invalid_input")
            raise
        return served, arrays

    def _finish(self, served: ServedModel, arrays: Arrays, outputs: Arrays, t0: float,
                key: bytes | None) -> InferResult:
        rows = 1
        for a in arrays.values():
            rows = a.shape[0] if a.ndim else 1
            break
        self.telemetry.observe(served.installed, perf_counter() - t0, rows, arrays, outputs)
        if key is not None and self.cache is not None:
            self.cache.put(key, outputs)
        return InferResult(served.installed.name, served.installed.version, outputs)

    def _cached(self, served: ServedModel, arrays: Arrays) -> tuple[bytes | None, Arrays | None]:
        if self.cache is None:
            return None, None
        key = input_key(served.name, served.version, arrays)
        return key, self.cache.get(key)

    def infer(self, name: str, version: str | None, inputs: Mapping[str, NDArray[Any]],
              *, unit: str | None = None) -> InferResult:
        """Synchronous path (in-process API, batch jobs, small models on the event loop).
        ``unit`` keys an A/B split."""
        served, arrays = self._prepare(name, version, inputs, unit)
        try:
            t0 = perf_counter()
            key = None
            if self.cache is not None:
                key, hit = self._cached(served, arrays)
                if hit is not None:
                    return self._finish(served, arrays, hit, t0, None)
            outputs = self._predict(served, arrays)
            return self._finish(served, arrays, outputs, t0, key)
        finally:
            served.release()

    async def infer_async(self, name: str, version: str | None,
                          inputs: Mapping[str, NDArray[Any]], *, unit: str | None = None
                          ) -> InferResult:
        elements = input_elements(inputs)
        if elements >= HEAVY_ELEMENTS:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, partial(self.infer, name, version, inputs, unit=unit))
        served, arrays = self._prepare(name, version, inputs, unit)
        try:
            t0 = perf_counter()
            key, hit = self._cached(served, arrays)
            if hit is not None:
                return self._finish(served, arrays, hit, t0, None)
            if self.max_batch_size > 1:
                outputs = await self._batcher(served).submit(arrays)
            elif served.inline_for(elements):
                outputs = self._predict(served, arrays)
            else:
                outputs = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._predict, served, arrays)
            return self._finish(served, arrays, outputs, t0, key)
        finally:
            served.release()

    def _predict(self, served: ServedModel, arrays: Arrays) -> Arrays:
        """Run a version the caller holds (``_prepare``), so no second in-flight count."""
        try:
            return served.runtime.predict(arrays)
        except PayloadInvalid:  # the model refused this input (a shape its graph cannot take)
            self.telemetry.error(served.name, served.version, "invalid_input")
            raise
        except InferenceFailed:
            self.telemetry.error(served.name, served.version, "inference")
            raise
        except Exception as exc:  # a backend bug must not take the daemon down
            self.telemetry.error(served.name, served.version, "inference")
            raise InferenceFailed(served.name, served.version, f"{type(exc).__name__}: {exc}"
                                  ) from exc

    def _batcher(self, served: ServedModel) -> DynamicBatcher:
        batcher = self._batchers.get(id(served))
        if batcher is None:
            for key in [k for k, b in self._batchers.items()
                        if k not in {id(s) for s in self.registry.serving()}]:
                self._batchers.pop(key).close()

            async def run(arrays: Arrays) -> Arrays:
                if served.inline_for(input_elements(arrays)):
                    return self._predict(served, arrays)
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._pool, self._predict, served, arrays)

            batcher = DynamicBatcher(run, max_batch_size=self.max_batch_size,
                                     max_delay_s=self.max_queue_delay_s)
            self._batchers[id(served)] = batcher
        return batcher

    def close(self) -> None:
        for b in self._batchers.values():
            b.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
