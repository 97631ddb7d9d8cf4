"""Fleet manager errors; all derive from EdgeRuntimeError so `edgectl` catches one base class.

    EdgeRuntimeError
    └── FleetError
        ├── UnknownModel(name, version)
        ├── UnknownDevice(device)
        ├── BadTarget(text)               a --to selector that is not group:/tag:/device:/all
        ├── RolloutConflict(name)         a rollout of this model is already running
        └── RolloutNotFound(rollout)
"""

from __future__ import annotations

from edge_runtime.errors import EdgeRuntimeError


class FleetError(EdgeRuntimeError):
    """Base of fleet errors."""


class UnknownModel(FleetError):
    def __init__(self, name: str, version: str | None = None) -> None:
        super().__init__(f"model {name}{' ' + version if version else ''} is not in the registry")
        self.name = name
        self.version = version


class UnknownDevice(FleetError):
    def __init__(self, device: str) -> None:
        super().__init__(f"device {device!r} is not in the inventory")
        self.device = device


class BadTarget(FleetError):
    def __init__(self, text: str) -> None:
        super().__init__(f"target {text!r} must be all, group:NAME, tag:NAME or device:ID")
        self.text = text


class RolloutConflict(FleetError):
    def __init__(self, name: str, rollout: str) -> None:
        super().__init__(f"rollout {rollout} of {name} is still running (abort or finish it)")
        self.name = name
        self.rollout = rollout


class RolloutNotFound(FleetError):
    def __init__(self, rollout: str) -> None:
        super().__init__(f"no rollout {rollout!r}")
        self.rollout = rollout
