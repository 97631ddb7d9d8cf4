"""Loaded models and the active version of each name: load the new one, smoke-test it, flip the
reference, and only then unload the old one (blue-green inside one process)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.backends import Backend, BackendOptions, LoadedModel, get_backend
from edge_runtime.errors import EdgeRuntimeError, ModelNotFound, ModelNotReady, SwapError
from edge_runtime.manifest import TensorSpec
from edge_runtime.protocol.assignment import assign
from edge_runtime.store.models import InstalledModel

# A request whose inference is estimated to take longer than this runs in a worker thread, not
# inline on the event loop (a slow model or a large batch must not stall health checks and
# small requests). The estimate is linear in input elements, from two smoke inferences: one
# at batch 1 and one at ``SCALE_BATCH`` (``_inline_elements``).
INLINE_MAX_SECONDS = 0.002
SCALE_BATCH = 64


@dataclass
class ServedModel:
    installed: InstalledModel
    runtime: LoadedModel
    smoke_seconds: float
    inline_elements: int = 0  # requests of up to this many input elements run inline
    _inflight: int = 0
    _draining: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _idle: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._idle = threading.Condition(self._lock)

    @property
    def name(self) -> str:
        return self.installed.name

    @property
    def version(self) -> str:
        return self.installed.version

    @property
    def inline(self) -> bool:
        """Whether a request as small as the smoke inference may run on the event loop."""
        return self.smoke_seconds <= INLINE_MAX_SECONDS

    def inline_for(self, elements: int) -> bool:
        """Whether a request of ``elements`` input elements may run on the event loop."""
        return elements <= self.inline_elements

    def predict(self, inputs: Mapping[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        # Hot path: the plain lock, and a notify only while unload() is waiting.
        lock = self._lock
        with lock:
            self._inflight += 1
        try:
            return self.runtime.predict(inputs)
        finally:
            with lock:
                self._inflight -= 1
                if self._inflight == 0 and self._draining:
                    self._idle.notify_all()

    def try_hold(self) -> bool:
        """Count a request in flight from when it picks this version (it may wait in a batch
        queue or for a worker before ``predict``), so ``unload`` waits for it; False once
        ``unload`` has begun. Pair with ``release``."""
        with self._lock:
            if self._draining:
                return False
            self._inflight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._inflight -= 1
            if self._inflight == 0 and self._draining:
                self._idle.notify_all()

    def unload(self, timeout: float = 30.0) -> None:
        """Wait for in-flight requests on this version, then free it."""
        with self._idle:
            self._draining = True
            self._idle.wait_for(lambda: self._inflight == 0, timeout=timeout)
        self.runtime.unload()


@dataclass(frozen=True)
class Split:
    """A request-level A/B experiment: ``percent`` of units go to ``b``. A request without a
    unit id is its own unit (a random one)."""

    experiment: str
    b: ServedModel
    percent: float

    def route(self, a: ServedModel, unit: str | None) -> ServedModel:
        unit = unit if unit is not None else uuid.uuid4().hex
        return self.b if assign(self.experiment, unit, split=self.percent) == "b" else a


def smoke_inputs(specs: tuple[TensorSpec, ...], batch: int = 1) -> dict[str, NDArray[Any]]:
    """Zeros shaped from the manifest signature: a dynamic first dimension (the batch) is
    ``batch``, other dynamic dimensions 1."""
    out = {}
    for spec in specs:
        shape = tuple(d if isinstance(d, int) else batch if i == 0 else 1
                      for i, d in enumerate(spec.shape))
        dtype = np.dtype(object) if spec.dtype == "string" else np.dtype(spec.dtype)
        out[spec.name] = np.full(shape, "") if dtype.kind == "O" else np.zeros(shape, dtype)
    return out


class Registry:
    def __init__(self, *, options: BackendOptions | None = None,
                 backends: Mapping[str, Backend] | None = None) -> None:
        self._options = options or BackendOptions()
        self._backends = backends
        self._active: dict[str, ServedModel] = {}
        self._splits: dict[str, Split] = {}
        self._lock = threading.Lock()

    def load(self, model: InstalledModel) -> ServedModel:
        """Load and smoke-test a version without serving it. Raises SwapError on failure."""
        backend = get_backend(model.manifest.format, registry=self._backends)
        runtime = backend.load(model.model_path, model.manifest, self._options)
        try:
            seconds = self._smoke(model, runtime)
        except BaseException:
            runtime.unload()
            raise
        return ServedModel(model, runtime, seconds,
                           _inline_elements(model.manifest.inputs, runtime, seconds))

    @staticmethod
    def _smoke(model: InstalledModel, runtime: LoadedModel) -> float:
        m = model.manifest
        inputs = smoke_inputs(m.inputs)
        try:
            runtime.predict(inputs)  # warm-up: first runs allocate
            t0 = time.perf_counter()
            outputs = runtime.predict(inputs)
            seconds = time.perf_counter() - t0
        except EdgeRuntimeError as exc:
            raise SwapError(m.name, m.version, f"smoke inference failed: {exc}") from exc
        missing = [o.name for o in m.outputs if o.name not in outputs]
        if missing:
            raise SwapError(m.name, m.version, f"smoke inference did not return {missing}")
        return seconds

    def activate(self, served: ServedModel) -> ServedModel | None:
        """Flip the active reference; returns the version it replaced (still loaded)."""
        with self._lock:
            old = self._active.get(served.name)
            self._active[served.name] = served
        return old

    def deactivate(self, name: str) -> ServedModel | None:
        with self._lock:
            return self._active.pop(name, None)

    def get(self, name: str, version: str | None = None, *, unit: str | None = None
            ) -> ServedModel:
        """The active version; with a request-level A/B split, the unit's arm."""
        served = self._active.get(name)
        if served is None:
            raise ModelNotFound(name, version)
        split = self._splits.get(name) if self._splits else None
        if split is not None:
            if version is None:
                return split.route(served, unit)
            if version == split.b.version:
                return split.b
        if version is not None and version != served.version:
            raise ModelNotReady(name, version)
        return served

    def set_split(self, name: str, split: Split) -> Split | None:
        """Route ``split.percent`` of request units to ``split.b`` (A is the active version)."""
        with self._lock:
            old = self._splits.get(name)
            self._splits[name] = split
        return old

    def clear_split(self, name: str) -> Split | None:
        with self._lock:
            return self._splits.pop(name, None)

    def split(self, name: str) -> Split | None:
        return self._splits.get(name)

    def acquire(self, name: str, version: str | None = None, *, unit: str | None = None
                ) -> ServedModel:
        """``get``, held until the caller's ``release()``. A version is unloaded only after it
        stopped being active, so a retry finds its successor (or ModelNotFound)."""
        for _ in range(3):
            served = self.get(name, version, unit=unit)
            if served.try_hold():
                return served
        raise ModelNotReady(name, version)

    def active(self, name: str) -> ServedModel | None:
        return self._active.get(name)

    def models(self) -> list[ServedModel]:
        with self._lock:
            return sorted(self._active.values(), key=lambda s: s.name)

    def serving(self) -> list[ServedModel]:
        """Every loaded version that takes requests: the active ones and A/B arms."""
        with self._lock:
            return [*self._active.values(), *(s.b for s in self._splits.values())]

    def close(self) -> None:
        with self._lock:
            served, self._active = list(self._active.values()), {}
            served += [s.b for s in self._splits.values()]
            self._splits = {}
        for s in served:
            s.unload(timeout=5.0)


def _elements(inputs: Mapping[str, NDArray[Any]]) -> int:
    return max(1, sum(a.size for a in inputs.values()))


def _best_of(runtime: LoadedModel, inputs: Mapping[str, NDArray[Any]], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        runtime.predict(inputs)
        best = min(best, time.perf_counter() - t0)
    return best


def _inline_elements(specs: tuple[TensorSpec, ...], runtime: LoadedModel, seconds: float
                     ) -> int:
    """The most input elements a request may have and still run on the event loop: the
    per-element cost comes from a second smoke inference at ``SCALE_BATCH`` (a model's fixed
    cost per run would make batch 1 alone overestimate a batch many times over). Without a
    batch dimension, or when that inference fails, scaling batch 1 is the (pessimistic)
    estimate."""
    if seconds > INLINE_MAX_SECONDS:
        return 0
    one = smoke_inputs(specs)
    e1, per_element = _elements(one), max(seconds, 1e-9) / _elements(one)
    if any(s.shape and isinstance(s.shape[0], str) for s in specs):
        many = smoke_inputs(specs, SCALE_BATCH)
        try:
            t1, tn = _best_of(runtime, one), _best_of(runtime, many)
        except Exception:  # the model may not take that batch: keep the pessimistic one
            return int(e1 * INLINE_MAX_SECONDS / max(seconds, 1e-9))
        en = _elements(many)
        # at most 4x better than the batch's average: timer noise must not make it free
        per_element = max((tn - t1) / max(en - e1, 1), tn / en / 4)
        seconds = t1
    return e1 + int((INLINE_MAX_SECONDS - min(seconds, INLINE_MAX_SECONDS)) / per_element)
