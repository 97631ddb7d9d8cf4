"""Converter errors. All derive from ``EdgeRuntimeError`` so the CLI catches one base class.

    EdgeRuntimeError
    └── ConversionError
        ├── SourceError(source)           not a model / cannot load the source
        ├── UnsupportedOps(ops)           ops onnxruntime cannot run, all named at once
        ├── DataError(path)               calibration/validation data unusable (shape, dtype, count)
        ├── CalibrationRequired           int8-static without calibration data
        ├── CandidateFailed(precision)    a converted model failed to load or run
        └── NoCandidateWithinBudget       `auto` found nothing inside the accuracy budget
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from edge_runtime.errors import EdgeRuntimeError


class ConversionError(EdgeRuntimeError):
    """Base of converter errors."""


class SourceError(ConversionError):
    def __init__(self, source: str | Path, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = str(source)
        self.reason = reason


class UnsupportedOps(ConversionError):
    def __init__(self, ops: Iterable[str], *, target: str = "onnxruntime") -> None:
        self.ops = sorted(set(ops))
        self.target = target
        super().__init__(f"{target} cannot run these ops: {', '.join(self.ops)}")


class DataError(ConversionError):
    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class CalibrationRequired(ConversionError):
    def __init__(self, precision: str) -> None:
        super().__init__(f"precision {precision} needs calibration data (--calibration-data FILE)")
        self.precision = precision


class CandidateFailed(ConversionError):
    def __init__(self, precision: str, reason: str) -> None:
        super().__init__(f"the {precision} model does not load or run: {reason}")
        self.precision = precision
        self.reason = reason


class NoCandidateWithinBudget(ConversionError):
    def __init__(self, budget: str, tried: Iterable[str]) -> None:
        self.tried = list(tried)
        super().__init__(f"no candidate meets the accuracy budget ({budget}); tried {self.tried}")
