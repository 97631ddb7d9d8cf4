"""Fleet manager errors; all derive from EdgeRuntimeError so `edgectl` catches one base class.

    EdgeRuntimeError
    └── FleetError
        ├── UnknownModel(name, version)
        ├── NoVersionToReport(name, published)   no device runs the model: name a --version
        ├── UnknownDevice(device)
        ├── BadTarget(text)               a --to selector that is not group:/tag:/device:/all
        ├── RolloutConflict(name)         a rollout of this model is already running
        ├── RolloutNotFound(rollout)
        └── PromoteWorseArm(experiment, arm, verdict)   the arm its own test calls worse
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


class NoVersionToReport(FleetError):
    def __init__(self, name: str, published: tuple[str, ...]) -> None:
        choices = ", ".join(published) or "none published"
        super().__init__(f"no device runs {name} and no device reported drift for it; choose "
                         f"a version with --version ({choices}) or an alias "
                         f"(edgectl models alias {name} production VERSION)")
        self.name = name
        self.published = published


class RolloutConflict(FleetError):
    def __init__(self, name: str, rollout: str) -> None:
        super().__init__(f"rollout {rollout} of {name} is still running (abort or finish it)")
        self.name = name
        self.rollout = rollout


class RolloutNotFound(FleetError):
    def __init__(self, rollout: str) -> None:
        super().__init__(f"no rollout {rollout!r}")
        self.rollout = rollout


class PromoteWorseArm(FleetError):
    def __init__(self, experiment: str, arm: str, verdict: str) -> None:
        super().__init__(f"experiment {experiment}: arm {arm.upper()} is worse by its own test "
                         f"({verdict}); pass --force to promote it anyway")
        self.experiment = experiment
        self.arm = arm
        self.verdict = verdict
