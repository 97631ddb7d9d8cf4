"""Deterministic A/B assignment: SHA-256 of (experiment id, unit id), never Python's ``hash()``.

``hash()`` of a str is salted per process (PYTHONHASHSEED), so ``hash(user) % 100`` puts the
same unit in different arms in the manager, in each device and after every restart. SHA-256
gives the same bucket everywhere, forever, and hashing the experiment id with the unit makes
assignments of different experiments independent (a unit in B of one experiment is not more
likely to be in B of the next). The device can compute its own arm with this same function.
"""

from __future__ import annotations

from edge_runtime.protocol import assignment as _shared
from edge_runtime.protocol.assignment import Arm
from fleet.stats.errors import InvalidConfig

__all__ = ["Arm", "assign", "bucket"]


def _check(experiment_id: str, unit_id: str) -> None:
    # NUL separates the two ids inside the hash: an id holding one could collide with another
    if "\0" in experiment_id or "\0" in unit_id:
        raise InvalidConfig("id", "experiment and unit ids must not contain NUL")


def bucket(experiment_id: str, unit_id: str) -> float:
    """A uniform position in [0, 100) for this unit in this experiment."""
    _check(experiment_id, unit_id)
    return _shared.bucket(experiment_id, unit_id)


def assign(experiment_id: str, unit_id: str, *, split: float = 50.0) -> Arm:
    """Arm of a unit (a device id or a request id): "b" for ``split`` percent of units.

    The function devices use too (``edge_runtime.protocol.assignment``), so the manager and every
    device put a unit in the same arm. Raising ``split`` only moves units from a to b (buckets
    are fixed), so ramping from 5% to 50% keeps the first 5% in b.
    """
    if not 0.0 <= split <= 100.0:
        raise InvalidConfig("split", f"must be a percentage in [0, 100], got {split}")
    _check(experiment_id, unit_id)
    return _shared.assign(experiment_id, unit_id, split=split)
