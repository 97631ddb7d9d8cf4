"""Errors of the statistics engine; all derive from EdgeRuntimeError, so `edgectl` catches one base.

    EdgeRuntimeError
    └── StatsError
        ├── InvalidConfig(field, reason)     a threshold, split or test setting that cannot work
        └── LayoutMismatch(reason)           histograms that were not counted in the same bins

"Not enough data yet" is an answer (``Decision.NOT_ENOUGH_DATA``, ``Level.INSUFFICIENT``),
never an exception: the fleet asks again later.
"""

from __future__ import annotations

from edge_runtime.errors import EdgeRuntimeError


class StatsError(EdgeRuntimeError):
    """Base of statistics errors."""


class InvalidConfig(StatsError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class LayoutMismatch(StatsError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"histograms do not share bins: {reason}")
        self.reason = reason
