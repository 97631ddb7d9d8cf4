"""What `edge-runtime models` and `edge-runtime status` show, from a Runtime (in the daemon) or
from the store alone (no daemon running).

The text and ``--json`` print the same document, so every number (``throughput_rps``: requests
over the time the window covers, ``MetricsWindow.snapshot``) has one definition; /metrics has
counters only and leaves rates to Prometheus."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from edge_runtime.effective import effective_settings
from edge_runtime.runtime import Runtime
from edge_runtime.store.models import ModelStore
from edge_runtime.store.telemetry import TelemetryStore
from edge_runtime.swap import records

WINDOWS = (60.0, 300.0, 900.0)


def models_table(rt: Runtime | ModelStore) -> list[dict[str, Any]]:
    store = rt.store if isinstance(rt, Runtime) else rt
    active = {a.name: a for a in store.actives()}
    loaded = ({s.name: s.version for s in rt.registry.models()} if isinstance(rt, Runtime)
              else {})
    rows = []
    for m in store.installed():
        ref = active.get(m.name)
        rows.append({
            "name": m.name, "version": m.version, "format": m.manifest.format,
            "precision": m.manifest.precision, "signed_by": m.signed_by,
            "active": bool(ref and ref.version == m.version),
            "previous": bool(ref and ref.previous == m.version),
            "loaded": loaded.get(m.name) == m.version,
            "installed_at": m.installed_at,
        })
    return rows


def status_doc(rt: Runtime) -> dict[str, Any]:
    metrics = rt.telemetry.metrics
    windows = {}
    for seconds in WINDOWS:
        snaps = metrics.snapshot_all(seconds)
        windows[f"{int(seconds)}s"] = [
            {"model": k[0], "version": k[1], "requests": s.requests, "errors": s.errors,
             "error_rate": s.error_rate, "throughput_rps": s.throughput_rps,
             "p50_ms": _ms(s.p50), "p95_ms": _ms(s.p95), "p99_ms": _ms(s.p99)}
            for k, s in snaps.items()]
    return {"source": "daemon", "settings": effective_settings(rt.settings),
            "models": models_table(rt), "windows": windows,
            "feedback": feedback_rows(rt.feedback.totals().items()),
            "storage": TelemetryStore(rt.store.db).counts(),
            "health": rt.telemetry.health.snapshot(),
            "swaps": [{"kind": r.kind, "name": r.name, "version": r.version,
                       "state": r.state.value, "reason": r.reason}
                      for r in records.recent(rt.store.db, limit=5)]}


def feedback_rows(counts: Iterable[tuple[tuple[str, str], tuple[int, int]]]
                  ) -> list[dict[str, Any]]:
    """Label feedback per model version: labels received, how many were predicted, accuracy."""
    return [{"model": k[0], "version": k[1], "labels": n, "correct": correct,
             "accuracy": correct / n if n else None} for k, (n, correct) in counts]


def _stored_feedback(tel: TelemetryStore, since: float) -> list[dict[str, Any]]:
    per: dict[tuple[str, str], tuple[int, int]] = {}
    for row in tel.recent("feedback", since=since):
        n, correct = per.get((row["model"], row["version"]), (0, 0))
        per[(row["model"], row["version"])] = (n + int(row["payload"]["n"]),
                                               correct + int(row["payload"]["correct"]))
    return feedback_rows(sorted(per.items()))


def offline_status(store: ModelStore, since_s: float = 900.0) -> dict[str, Any]:
    """From persisted telemetry: the daemon is not running."""
    tel = TelemetryStore(store.db)
    rows = tel.recent("metrics", since=time.time() - since_s)
    per: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        p = row["payload"]
        agg = per.setdefault((row["model"], row["version"]), {"requests": 0, "errors": {}})
        agg["requests"] += p["requests"]
        for kind, n in p["errors"].items():
            agg["errors"][kind] = agg["errors"].get(kind, 0) + n
    return {"source": "store (daemon not running)", "models": models_table(store),
            "windows": {f"{int(since_s)}s": [{"model": k[0], "version": k[1], **v}
                                              for k, v in sorted(per.items())]},
            "feedback": _stored_feedback(tel, time.time() - since_s),
            "storage": tel.counts()}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0
