"""The in-process runtime: store + registry + swaps + monitoring + data plane, no HTTP.

    with Runtime("edge-store", trusted_keys=["keys/release.pub"]) as rt:
        rt.install("digits-3.edgepkg"); rt.activate("digits", "3")
        outputs = rt.predict("digits", {"input": x})

The daemon wraps one of these in an HTTP server.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.backends import Backend, BackendOptions
from edge_runtime.cache import ResponseCache
from edge_runtime.dataplane import DataPlane, InferResult
from edge_runtime.errors import PayloadInvalid, SwapError
from edge_runtime.feedback import FeedbackBook
from edge_runtime.registry import Registry
from edge_runtime.settings import ServeSettings
from edge_runtime.signing import TrustStore
from edge_runtime.store.models import ModelStore
from edge_runtime.store.telemetry import Limits, TelemetryStore
from edge_runtime.swap.machine import State, SwapRecord
from edge_runtime.swap.runner import SwapRunner
from edge_runtime.telemetry import Telemetry

log = logging.getLogger("edge_runtime")


def _kill_at(state: str | None) -> Any:
    def hook(record: SwapRecord) -> None:
        if state is not None and record.state.value == state:
            log.error("fault injection: SIGKILL in state %s", state)
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


def _log_change(record: SwapRecord) -> None:
    log.info("swap %s %s %s -> %s %s", record.kind, record.name, record.version,
             record.state.value, record.reason)


def _raise_failed(record: SwapRecord) -> SwapRecord:
    if record.state is State.FAILED:
        raise SwapError(record.name, record.version, f"{record.kind} failed: {record.reason}")
    return record


class Runtime:
    def __init__(self, store: str | Path | None = None, *, settings: ServeSettings | None = None,
                 trusted_keys: tuple[str | Path, ...] = (), allow_unsigned: bool | None = None,
                 options: BackendOptions | None = None,
                 backends: Mapping[str, Backend] | None = None, restore: bool = True) -> None:
        s = settings or ServeSettings()
        if store is not None:
            s = s.with_(store=Path(store))
        if trusted_keys:
            s = s.with_(trusted_keys=tuple(Path(k) for k in trusted_keys))
        if allow_unsigned is not None:
            s = s.with_(allow_unsigned=allow_unsigned)
        self.settings = s
        self.store = ModelStore(s.store, trust=TrustStore.load(s.trusted_keys),
                                allow_unsigned=s.allow_unsigned)
        self.registry = Registry(options=options, backends=backends)
        self.feedback = FeedbackBook()
        self.telemetry = Telemetry(
            TelemetryStore(self.store.db, Limits(s.telemetry_max_rows, s.telemetry_max_bytes,
                                                 s.telemetry_retention_s)),
            monitoring=s.monitoring, drift=s.drift, feedback=self.feedback,
            drift_max_rows_per_s=s.drift_max_rows_per_s, drift_max_cpu=s.drift_max_cpu)
        self.dataplane = DataPlane(
            self.registry, self.telemetry,
            cache=ResponseCache(s.cache_entries) if s.cache_entries > 0 else None,
            max_batch_size=s.max_batch_size, max_queue_delay_s=s.max_queue_delay_ms / 1000.0)
        self.swaps = SwapRunner(self.store, self.registry, on_change=_log_change,
                                after_save=_kill_at(s.fault_kill_at))
        if restore:
            self.start()

    def start(self) -> list[str]:
        """Finish interrupted swaps, then load every active version."""
        self.swaps.recover()
        return self.swaps.restore_active()

    # -- model management -------------------------------------------------------------------
    def install(self, package: str | Path) -> SwapRecord:
        return _raise_failed(self.swaps.install(package))

    def activate(self, name: str, version: str) -> SwapRecord:
        return _raise_failed(self.swaps.activate(name, version))

    def rollback(self, name: str) -> SwapRecord:
        return _raise_failed(self.swaps.rollback(name))

    # -- inference --------------------------------------------------------------------------
    def infer(self, name: str, inputs: Mapping[str, Any] | NDArray[Any],
              version: str | None = None) -> InferResult:
        return self.dataplane.infer(name, version, self._named(name, version, inputs))

    def predict(self, name: str, inputs: Mapping[str, Any] | NDArray[Any],
                version: str | None = None) -> dict[str, NDArray[Any]]:
        """Run the active (or given) version; a bare array feeds a single-input model."""
        return self.infer(name, inputs, version).outputs

    def _named(self, name: str, version: str | None, inputs: Mapping[str, Any] | NDArray[Any]
               ) -> dict[str, NDArray[Any]]:
        if isinstance(inputs, Mapping):
            return {k: np.asarray(v) for k, v in inputs.items()}
        specs = self.registry.get(name, version).installed.manifest.inputs
        if len(specs) != 1:
            raise PayloadInvalid(f"model {name} has {len(specs)} inputs: pass a dict by name")
        return {specs[0].name: np.asarray(inputs)}

    def flush(self) -> int:
        return self.telemetry.flush()

    def close(self) -> None:
        self.flush()
        self.dataplane.close()
        self.registry.close()
        self.store.db.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
