"""The retained ``reported`` state: what this device runs, from its store and swap records."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.protocol import messages as m
from edge_runtime.runtime import Runtime
from edge_runtime.swap import records

if TYPE_CHECKING:
    from edge_runtime.agent.device import AgentSettings


def build_reported(rt: Runtime, generation: int, session: int, s: AgentSettings) -> m.Reported:
    active = {a.name: a for a in rt.store.actives()}
    installed: dict[str, list[str]] = {}
    for model in rt.store.installed():
        installed.setdefault(model.name, []).append(model.version)
    models = {}
    for name in sorted(set(installed) | set(active)):
        ref = active.get(name)
        last = records.recent(rt.store.db, name, limit=1)
        rec = last[0] if last else None
        models[name] = m.ModelReport(
            active=ref.version if ref else None, previous=ref.previous if ref else None,
            installed=tuple(installed.get(name, [])),
            state=rec.state.value if rec else "idle",
            deployment=rec.deployment if rec else None, reason=rec.reason if rec else "")
    return m.Reported(generation, session, models, s.tags, s.group, s.profile)
