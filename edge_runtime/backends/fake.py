"""A backend that needs no model file or library: for unit tests and the fleet simulator.

``FakeBackend(fn)`` computes outputs with ``fn``; without one, each output is derived from the
first numeric input so results can be checked (see ``default_outputs``). Errors can be injected at
construction or later by setting ``load_error`` / ``predict_error``, and calls are counted.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from edge_runtime.backends.base import Arrays, BackendOptions
from edge_runtime.errors import EdgeRuntimeError, InferenceFailed, SwapError
from edge_runtime.manifest import Manifest, TensorSpec

PredictFn = Callable[[Arrays], dict[str, NDArray[Any]]]


class FakeBackend:
    def __init__(self, fn: PredictFn | None = None, *, load_error: str | None = None,
                 predict_error: str | None = None, delay_s: float = 0.0,
                 name: str = "fake") -> None:
        self.name = name
        self.fn = fn
        self.load_error = load_error
        self.predict_error = predict_error
        self.delay_s = delay_s
        self.loads = 0
        self.unloads = 0
        self.predicts = 0
        self.last_options: BackendOptions | None = None
        self._lock = threading.Lock()

    @property
    def live(self) -> int:
        """Models loaded and not yet unloaded."""
        return self.loads - self.unloads

    def load(self, model_path: Path, manifest: Manifest, options: BackendOptions) -> FakeModel:
        if self.load_error is not None:
            raise SwapError(manifest.name, manifest.version, self.load_error)
        with self._lock:
            self.loads += 1
            self.last_options = options
        fn = self.fn or (lambda inputs: default_outputs(manifest, inputs))
        return FakeModel(self, manifest, fn)

    def count(self, what: Literal["predicts", "unloads"]) -> None:
        with self._lock:
            if what == "predicts":
                self.predicts += 1
            else:
                self.unloads += 1


class FakeModel:
    def __init__(self, backend: FakeBackend, manifest: Manifest, fn: PredictFn) -> None:
        self._backend = backend
        self._manifest = manifest
        self._fn = fn
        self._loaded = True
        self._lock = threading.Lock()

    def predict(self, inputs: Arrays) -> dict[str, NDArray[Any]]:
        backend, m = self._backend, self._manifest
        backend.count("predicts")
        if backend.delay_s > 0:
            time.sleep(backend.delay_s)
        if not self._loaded:
            raise InferenceFailed(m.name, m.version, "model is unloaded")
        if backend.predict_error is not None:
            raise InferenceFailed(m.name, m.version, backend.predict_error)
        try:
            return self._fn(inputs)
        except EdgeRuntimeError:
            raise
        except Exception as exc:  # a faulty fn behaves like a backend that raised
            raise InferenceFailed(m.name, m.version, f"{type(exc).__name__}: {exc}") from exc

    def unload(self) -> None:
        with self._lock:
            was_loaded, self._loaded = self._loaded, False
        if was_loaded:  # unload is idempotent, like the real backends'
            self._backend.count("unloads")


def default_outputs(manifest: Manifest, inputs: Arrays) -> dict[str, NDArray[Any]]:
    """Deterministic outputs of the manifest's shapes (batch taken from the first input).

    With ``features`` the first numeric input flattened per row: a float output of K values per
    row is a softmax over the first K features (zeros when there are fewer than K); an integer
    output is the argmax of the features; anything else is zeros.
    """
    first = inputs[manifest.inputs[0].name]
    batch = first.shape[0] if first.ndim else 1
    numeric = [a for a in inputs.values() if a.dtype.kind in "biuf" and a.size]
    features = (numeric[0].reshape(batch, -1).astype(np.float64) if numeric
                else np.zeros((batch, 0)))
    return {spec.name: _output(spec, batch, features) for spec in manifest.outputs}


def _output(spec: TensorSpec, batch: int, features: NDArray[np.float64]) -> NDArray[Any]:
    if not spec.shape:
        shape: tuple[int, ...] = ()
    else:
        shape = (batch, *(d if isinstance(d, int) else 1 for d in spec.shape[1:]))
    dtype = np.dtype(object if spec.dtype == "string" else spec.dtype)
    k = math.prod(shape[1:])
    if dtype.kind == "f" and shape and 0 < k <= features.shape[1]:
        head = features[:, :k]
        e = np.exp(head - head.max(axis=1, keepdims=True))
        probs: NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
        return probs.reshape(shape).astype(dtype)
    if dtype.kind in "iu" and shape and features.shape[1]:
        labels = features.argmax(axis=1).reshape((batch,) + (1,) * (len(shape) - 1))
        return np.broadcast_to(labels, shape).astype(dtype)
    if dtype.kind == "O":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=dtype)
