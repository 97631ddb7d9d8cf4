"""Model sources: an ONNX file, a scikit-learn estimator, a PyTorch module. Each becomes fp32 ONNX.

Loading a joblib/pickle file executes code from that file: it happens only here, on the build
machine, with a warning; devices only ever receive ONNX/TFLite inside signed packages.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters.errors import SourceError
from converters.quiet import quiet

DEFAULT_OPSET = 17


@dataclass(frozen=True)
class Source:
    """An fp32 ONNX model and where it came from."""

    model: Any  # onnx.ModelProto
    kind: str  # onnx | sklearn | torch
    sha256: str
    description: str

    def to_manifest(self) -> dict[str, Any]:
        return {"kind": self.kind, "sha256": self.sha256, "description": self.description}


def from_onnx_file(path: str | Path) -> Source:
    import onnx

    path = Path(path)
    if not path.is_file():
        raise SourceError(path, "no such file")
    raw = path.read_bytes()
    try:
        model = onnx.load_from_string(raw)
    except Exception as exc:
        raise SourceError(path, f"not an ONNX model ({type(exc).__name__})") from exc
    if not len(model.graph.node) or not len(model.graph.output):
        raise SourceError(path, "not an ONNX model (empty graph)")
    return Source(model, "onnx", hashlib.sha256(raw).hexdigest(), path.name)


def load_pickled_estimator(path: str | Path) -> Any:
    """Unpickle a scikit-learn estimator. This runs code from the file: trusted files only."""
    import joblib

    path = Path(path)
    if not path.is_file():
        raise SourceError(path, "no such file")
    print(
        f"warning: unpickling {path} executes code from it; this happens only on the build "
        "machine, never on a device",
        file=sys.stderr,
    )
    try:
        return joblib.load(path)
    except Exception as exc:
        raise SourceError(path, f"not a joblib/pickle file ({type(exc).__name__}: {exc})") from exc


def from_sklearn(
    estimator: Any, *, n_features: int | None = None, description: str = "", file_sha: str = ""
) -> Source:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    if not hasattr(estimator, "predict"):
        raise SourceError(description or type(estimator).__name__, "not a scikit-learn estimator")
    n = n_features or getattr(estimator, "n_features_in_", None)
    if not n:
        raise SourceError(description, "estimator is not fitted (no n_features_in_)")
    try:
        model = to_onnx(
            estimator,
            initial_types=[("input", FloatTensorType([None, int(n)]))],
            options={"zipmap": False} if hasattr(estimator, "predict_proba") else None,
            target_opset={"": DEFAULT_OPSET, "ai.onnx.ml": 3},
        )
    except Exception as exc:
        raise SourceError(description or type(estimator).__name__,
                          f"skl2onnx cannot convert it ({exc})") from exc
    sha = file_sha or hashlib.sha256(model.SerializeToString()).hexdigest()
    return Source(model, "sklearn", sha, description or type(estimator).__name__)


def load_torch_factory(spec: str) -> Any:
    """``package.module:factory`` -> the nn.Module the factory returns (in eval mode)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SourceError(spec, "expected MODULE:FACTORY, e.g. mypkg.models:build")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
        module = factory()
    except Exception as exc:
        raise SourceError(spec, f"cannot build the module ({type(exc).__name__}: {exc})") from exc
    if not hasattr(module, "state_dict") or not callable(module):
        raise SourceError(spec, "the factory did not return a torch.nn.Module")
    return module.eval()


def from_torch(module: Any, input_shape: tuple[int, ...], *, description: str = "") -> Source:
    """Export with torch.onnx (dynamo exporter, single file) and a dynamic batch dimension."""
    import onnx

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        try:
            _export(module, input_shape, out)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise SourceError(description or "torch module",
                              f"torch.onnx.export failed ({type(exc).__name__}: {first})") from exc
        model = onnx.load(str(out))
    return Source(model, "torch", digest.hexdigest(), description or type(module).__name__)


def _export(module: Any, input_shape: tuple[int, ...], out: Path) -> None:
    import torch

    with quiet():  # the exporter's internals warn and log about their own APIs
        torch.onnx.export(
            module, (torch.zeros(*input_shape),), str(out), dynamo=True, external_data=False,
            input_names=["input"], output_names=["output"], opset_version=DEFAULT_OPSET,
            dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
        )


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError as exc:
        raise SourceError(text, "input shape must look like 1,3,224,224") from exc
    if not shape or any(d <= 0 for d in shape):
        raise SourceError(text, "input shape must be positive integers, e.g. 1,3,224,224")
    return shape
