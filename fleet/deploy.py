"""Blue-green deployments (every targeted device at once) and the standing assignments a device
gets when it first appears (the latest deployment, or completed rollout, whose target matches)."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING

from edge_runtime.store.db import Database
from fleet.desired import DesiredStates
from fleet.inventory import Device, Target

if TYPE_CHECKING:
    from fleet.core import Fleet


def deploy(fleet: Fleet, name: str, version: str, target: Target, *,
           probation: dict[str, float] | None = None) -> tuple[str, list[str]]:
    """Assign the version to every device the target selects now (and, as a standing
    deployment, to matching devices that appear later)."""
    db, desired = fleet.db, fleet.desired
    mv = fleet.registry.resolve(name, version)
    devices = [d.id for d in fleet.inventory.devices(target)]
    did = f"dep-{uuid.uuid4().hex[:10]}"
    with db.transaction() as cur:
        cur.execute("INSERT INTO deployments VALUES (?, 'deploy', ?, ?, ?, ?, ?)",
                    (did, name, mv.version, str(target), time.time(),
                     json.dumps({"probation": probation or {}})))
        desired.assign(cur, devices, name, mv.version, did)
    return did, devices


def standing(db: Database, desired: DesiredStates, device: Device) -> bool:
    """Give a newly seen device what its target already runs. True when anything changed."""
    rows = db.query(
        "SELECT d.id, d.name, d.version, d.target FROM deployments d "
        "LEFT JOIN rollouts r ON r.id = d.id "
        "WHERE d.kind = 'deploy' OR r.state = 'completed' ORDER BY d.created_at")
    latest: dict[str, tuple[str, str]] = {}
    for row in rows:
        if Target.parse(row["target"]).matches(device):
            latest[row["name"]] = (row["version"], row["id"])
    have = {r["name"] for r in db.query("SELECT name FROM assignments WHERE device = ?",
                                        (device.id,))}
    todo = {n: v for n, v in latest.items() if n not in have}
    if not todo:
        return False
    with db.transaction() as cur:
        for name, (version, did) in todo.items():
            desired.assign(cur, [device.id], name, version, did)
    return True
