"""The settings a serving daemon runs with, after the profile, config, env and flags: one dict
(`edge-runtime status --json`, ``settings``) and one line (logged by `serve` at start), so what
is on (batching, cache) and how many threads run on how many CPUs is never a guess."""

from __future__ import annotations

from typing import Any

from edge_runtime.host import usable_cpus
from edge_runtime.settings import ServeSettings


def effective_settings(settings: ServeSettings, *, cpus: int | None = None) -> dict[str, Any]:
    """``cpus``: the CPUs this process may use (default: measured now)."""
    s = settings
    return {
        "profile": s.profile,
        "cpus": usable_cpus() if cpus is None else cpus,
        "threads": s.intra_op_threads,
        "batching": s.batching,
        "max_batch_size": s.max_batch_size,
        "max_queue_delay_ms": s.max_queue_delay_ms,
        "cache_entries": s.cache_entries,
        "http_server": s.http_server,
        "monitoring": s.monitoring,
        "drift": s.drift,
        "telemetry_interval_s": s.telemetry_interval_s,
    }


def settings_line(doc: dict[str, Any]) -> str:
    """``effective_settings`` as one ``key=value`` line."""
    batching = (f"{doc['max_batch_size']}x{doc['max_queue_delay_ms']:g}ms" if doc["batching"]
                else "off")
    return " ".join([
        f"profile={doc['profile'] or 'none'}",
        f"cpus={doc['cpus']}",
        f"threads={doc['threads'] if doc['threads'] else 'backend-default'}",
        f"batching={batching}",
        f"cache={doc['cache_entries'] or 'off'}",
        f"http={doc['http_server']}",
        f"monitoring={'on' if doc['monitoring'] else 'off'}",
        f"drift={'on' if doc['drift'] else 'off'}",
        f"telemetry={doc['telemetry_interval_s']:g}s",
    ])
