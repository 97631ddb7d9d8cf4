"""Converter errors. All derive from ``EdgeRuntimeError`` so the CLI catches one base class.

    EdgeRuntimeError
    └── ConversionError
        ├── SourceError(source)           not a model / cannot load the source
        ├── UnsupportedOps(ops, target)   ops the target (onnxruntime, tflite) cannot run, all
        │                                 named at once
        ├── DynamicShape(input, axis)     a dimension the TFLite export cannot fix (not the batch)
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
    def __init__(self, ops: Iterable[str], *, target: str = "onnxruntime", note: str = "") -> None:
        self.ops = sorted(set(ops))
        self.target = target
        self.note = note
        super().__init__(f"{target} cannot run these ops: {', '.join(self.ops)}"
                         + (f" ({note})" if note else ""))


class DynamicShape(ConversionError):
    def __init__(self, name: str, axis: int, dim: str) -> None:
        super().__init__(f"input {name!r} has a dynamic dimension {dim!r} at axis {axis}: the "
                         "TFLite export fixes only the batch (axis 0); export the model with "
                         "static shapes")
        self.name = name
        self.axis = axis
        self.dim = dim


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
