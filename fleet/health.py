"""The manager's counters and task health, saved in its database for `edgectl manager status`.

Counters (messages, duplicates, drops by topic kind and reason) are kept over the life of the
database: a restarted manager carries them on from what the last one saved. Task health (runs,
restarts, last error) is the running process's. The document is one row of ``meta``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.protocol.schema import Defect
from edge_runtime.store.db import Database

HEALTH_KEY = "manager_health"


@dataclass
class IngestCounts:
    messages: int = 0
    batches: int = 0
    duplicates: int = 0
    drops: Counter[tuple[str, str]] = field(default_factory=Counter)  # (topic kind, reason)
    since: float = field(default_factory=time.time)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def drop(self, kind: str, defect: Defect) -> None:
        self.drops[(kind, defect.value)] += 1

    def as_dict(self) -> dict[str, Any]:
        by_kind: dict[str, dict[str, int]] = {}
        for (kind, reason), n in sorted(self.drops.items()):
            by_kind.setdefault(kind, {})[reason] = n
        return {"since": self.since, "messages": self.messages, "batches": self.batches,
                "duplicates": self.duplicates, "dropped": self.dropped, "drops": by_kind}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> IngestCounts:
        drops: Counter[tuple[str, str]] = Counter()
        for kind, reasons in doc.get("drops", {}).items():
            for reason, n in reasons.items():
                drops[(kind, reason)] = int(n)
        return cls(int(doc.get("messages", 0)), int(doc.get("batches", 0)),
                   int(doc.get("duplicates", 0)), drops, float(doc.get("since", time.time())))


def load(db: Database) -> dict[str, Any] | None:
    """The last saved document, or None when no manager has saved one."""
    rows = db.query("SELECT value FROM meta WHERE key = ?", (HEALTH_KEY,))
    if not rows:
        return None
    try:
        doc = json.loads(rows[0][0])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def load_counts(db: Database) -> IngestCounts:
    """The counters to carry on from (fresh ones when the saved document is unusable)."""
    doc = load(db)
    try:
        return IngestCounts.from_dict(doc["counts"]) if doc else IngestCounts()
    except (KeyError, TypeError, ValueError, AttributeError):
        return IngestCounts()


def save(db: Database, *, counts: IngestCounts, tasks: dict[str, dict[str, object]],
         started_at: float, enrollment: str, extra: dict[str, Any] | None = None) -> None:
    doc = {"pid": os.getpid(), "host": os.uname().nodename, "started_at": started_at,
           "updated_at": time.time(), "enrollment": enrollment, "counts": counts.as_dict(),
           "tasks": tasks, **(extra or {})}
    with db.transaction() as cur:
        cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (HEALTH_KEY, json.dumps(doc)))
