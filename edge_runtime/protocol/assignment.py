"""Deterministic A/B assignment shared by devices and the fleet: SHA-256 of (experiment id, unit
id), never Python's ``hash()`` (salted per process, so the same unit would land in different arms
in every process and after every restart)."""

from __future__ import annotations

import hashlib
from typing import Literal

Arm = Literal["a", "b"]
_SCALE = 100.0 / 2**64


def bucket(experiment_id: str, unit_id: str) -> float:
    """A uniform position in [0, 100) for this unit in this experiment."""
    # NUL separates the ids so ("ab", "c") and ("a", "bc") hash differently
    digest = hashlib.sha256(f"{experiment_id}\0{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * _SCALE


def assign(experiment_id: str, unit_id: str, *, split: float = 50.0) -> Arm:
    """"b" for ``split`` percent of units; raising the split only moves units from a to b."""
    if not 0.0 <= split <= 100.0:
        raise ValueError(f"split must be a percentage in [0, 100], got {split}")
    return "b" if bucket(experiment_id, unit_id) < split else "a"
