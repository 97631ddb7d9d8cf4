"""Device inventory: presence (with session numbers), what each device reports, and targets.

A device is in the inventory once registered (`register`, `edgectl devices add`) or, with open
enrollment, once it has sent a valid message; the manager decides which (``ManagerSettings
.enrollment``) before it calls the ``on_*`` methods."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from edge_runtime.protocol import messages as m
from edge_runtime.protocol.topics import check_id
from edge_runtime.store.db import Database
from fleet.errors import BadTarget, UnknownDevice


@dataclass(frozen=True)
class Target:
    kind: str  # all | group | tag | device
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> Target:
        if text == "all":
            return cls("all")
        kind, _, value = text.partition(":")
        if kind not in ("group", "tag", "device") or not value:
            raise BadTarget(text)
        return cls(kind, value)

    def __str__(self) -> str:
        return self.kind if self.kind == "all" else f"{self.kind}:{self.value}"

    def matches(self, device: Device) -> bool:
        return self.selects(device.id, device.group, device.tags)

    def selects(self, device: str, group: str | None, tags: tuple[str, ...]) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "group":
            return group == self.value
        if self.kind == "tag":
            return self.value in tags
        return device == self.value


@dataclass(frozen=True)
class Device:
    id: str
    status: str
    session: int
    first_seen: float
    last_seen: float
    tags: tuple[str, ...]
    group: str | None
    profile: str | None
    reported: dict[str, Any] | None
    reported_generation: int

    def active(self, name: str) -> str | None:
        model = (self.reported or {}).get("models", {}).get(name)
        return model.get("active") if model else None


def _row(r: Any) -> Device:
    return Device(r["id"], r["status"], r["session"], r["first_seen"], r["last_seen"],
                  tuple(json.loads(r["tags"])), r["grp"], r["profile"],
                  json.loads(r["reported"]) if r["reported"] else None, r["reported_generation"])


class Inventory:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._known: set[str] = set()  # ids seen in the table (rows are never removed)

    def register(self, device: str, *, group: str | None = None,
                 tags: tuple[str, ...] = ()) -> bool:
        """Enroll a device before it connects (`edgectl devices add`); False when it already
        is. Its own reports replace the group and tags given here."""
        check_id("device", device)
        for tag in tags:
            check_id("tag", tag)
        if group is not None:
            check_id("group", group)
        with self.db.transaction() as cur:
            return bool(cur.execute(
                "INSERT INTO devices (id, first_seen, last_seen, grp, tags) VALUES "
                "(?, 0, 0, ?, ?) ON CONFLICT(id) DO NOTHING",
                (device, group, json.dumps(list(tags)))).rowcount)

    def known(self, cur: Any, device: str) -> bool:
        """Whether the device is in the inventory (registered, or enrolled earlier)."""
        if device in self._known:
            return True
        if cur.execute("SELECT 1 FROM devices WHERE id = ?", (device,)).fetchone() is None:
            return False
        self._known.add(device)
        return True

    @staticmethod
    def _touch(cur: Any, device: str, now: float) -> None:
        """Refresh last_seen, inserting the device if it is new (enrollment was decided by the
        caller); a registered device that was never seen gets its first_seen now."""
        cur.execute("INSERT INTO devices (id, first_seen, last_seen) VALUES (?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen),"
                    " first_seen = CASE WHEN first_seen = 0 THEN excluded.first_seen "
                    "ELSE first_seen END", (device, now, now))

    def on_status(self, cur: Any, device: str, status: m.Status) -> bool:
        """Apply a presence message unless it comes from an older session (a stale will)."""
        now = time.time()
        self._touch(cur, device, now)
        row = cur.execute("SELECT session FROM devices WHERE id = ?", (device,)).fetchone()
        if status.session < row[0]:
            return False
        cur.execute("UPDATE devices SET status = ?, session = ? WHERE id = ?",
                    (status.state, status.session, device))
        return True

    def on_heartbeat(self, cur: Any, device: str, hb: m.Heartbeat) -> None:
        self._touch(cur, device, time.time())
        cur.execute("UPDATE devices SET status = 'online' WHERE id = ? AND session <= ?",
                    (device, hb.session))

    def on_reported(self, cur: Any, device: str, rep: m.Reported) -> bool:
        """Store the reported state (as decoded: only what the schema defines); True when the
        device is new (first report)."""
        now = time.time()
        new = cur.execute("SELECT reported FROM devices WHERE id = ?", (device,)).fetchone()
        self._touch(cur, device, now)
        cur.execute("UPDATE devices SET tags = ?, grp = ?, profile = ?, reported = ?, "
                    "reported_generation = ? WHERE id = ?",
                    (json.dumps(list(rep.tags)), rep.group, rep.profile,
                     m.encode(rep).decode(), rep.generation, device))
        return new is None or new[0] is None

    def devices(self, target: Target | None = None) -> list[Device]:
        devices = [_row(r) for r in self.db.query("SELECT * FROM devices ORDER BY id")]
        return [d for d in devices if target is None or target.matches(d)]

    def ids(self, target: Target) -> list[str]:
        """Ids of the devices the target selects, without decoding what each one reports
        (what the rollout tick needs, every tick)."""
        rows = self.db.query("SELECT id, grp, tags FROM devices ORDER BY id")
        return [r["id"] for r in rows
                if target.selects(r["id"], r["grp"], tuple(json.loads(r["tags"]))
                                  if target.kind == "tag" else ())]

    def get(self, device: str) -> Device:
        rows = self.db.query("SELECT * FROM devices WHERE id = ?", (device,))
        if not rows:
            raise UnknownDevice(device)
        return _row(rows[0])
