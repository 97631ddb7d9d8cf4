"""The daemon's own health: its supervised background tasks and the faults it survived, for
``/metrics`` and ``edge-runtime status``.

Supervisors register with `watch`; other components (the fleet agent) contribute their status
through `attach`; anything that fails and is retried counts itself with `fault`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from edge_runtime.monitor.prometheus import Gauge
from edge_runtime.supervise import Supervisor

Status = Callable[[], dict[str, Any]]


class ServiceHealth:
    def __init__(self) -> None:
        self._supervisors: list[Supervisor] = []
        self._parts: dict[str, Status] = {}
        self._faults: Counter[str] = Counter()
        self._lock = threading.Lock()  # faults are counted on worker threads too

    def watch(self, supervisor: Supervisor) -> None:
        if supervisor not in self._supervisors:
            self._supervisors.append(supervisor)

    def attach(self, name: str, status: Status) -> None:
        """A component's own status (with ``tasks`` and ``drops`` when it has them)."""
        self._parts[name] = status

    def fault(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self._faults[kind] += n

    def faults(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._faults.items()))

    def snapshot(self) -> dict[str, Any]:
        tasks: dict[str, Any] = {}
        for sup in self._supervisors:
            tasks.update(sup.snapshot())
        parts = {}
        for name, status in self._parts.items():
            part = status()
            tasks.update(part.get("tasks", {}))
            parts[name] = part
        return {"tasks": dict(sorted(tasks.items())), "faults": self.faults(), **parts}

    def gauges(self) -> list[Gauge]:
        snap = self.snapshot()
        tasks = snap["tasks"]
        out = [Gauge("edge_task_restarts_total", "Restarts of a supervised background task "
                     "after an unexpected exception.", int(t["restarts"]), {"task": name},
                     kind="counter") for name, t in tasks.items()]
        out += [Gauge("edge_task_running", "Whether a supervised background task is running.",
                      1 if t["running"] else 0, {"task": name}) for name, t in tasks.items()]
        out += [Gauge("edge_faults_total", "Failures survived and retried (e.g. a telemetry "
                      "flush that raised).", n, {"kind": kind}, kind="counter")
                for kind, n in snap["faults"].items()]
        for name, part in snap.items():
            if isinstance(part, dict) and isinstance(part.get("drops"), dict):
                out += [Gauge("edge_messages_dropped_total", "Inbound messages dropped, by "
                              "component and reason.", int(n), {"component": name,
                                                                 "reason": reason},
                              kind="counter") for reason, n in part["drops"].items()]
        return out
