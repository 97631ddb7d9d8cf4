"""Deterministic A/B assignment: SHA-256 of (experiment id, unit id), never Python's ``hash()``.

``hash()`` of a str is salted per process (PYTHONHASHSEED), so ``hash(user) % 100`` puts the
same unit in different arms in the manager, in each device and after every restart. SHA-256
gives the same bucket everywhere, forever, and hashing the experiment id with the unit makes
assignments of different experiments independent (a unit in B of one experiment is not more
likely to be in B of the next). The device can compute its own arm with this same function.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from fleet.stats.errors import InvalidConfig

Arm = Literal["a", "b"]
_SCALE = 100.0 / 2**64


def bucket(experiment_id: str, unit_id: str) -> float:
    """A uniform position in [0, 100) for this unit in this experiment."""
    # NUL cannot occur in ids we accept, so ("ab", "c") and ("a", "bc") hash differently.
    if "\0" in experiment_id or "\0" in unit_id:
        raise InvalidConfig("id", "experiment and unit ids must not contain NUL")
    digest = hashlib.sha256(f"{experiment_id}\0{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * _SCALE


def assign(experiment_id: str, unit_id: str, *, split: float = 50.0) -> Arm:
    """Arm of a unit (a device id or a request id): "b" for ``split`` percent of units.

    Raising ``split`` only moves units from a to b (buckets are fixed), so ramping a canary
    from 5% to 50% keeps the first 5% in b.
    """
    if not 0.0 <= split <= 100.0:
        raise InvalidConfig("split", f"must be a percentage in [0, 100], got {split}")
    return "b" if bucket(experiment_id, unit_id) < split else "a"
