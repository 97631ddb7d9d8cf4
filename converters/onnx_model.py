"""Helpers on ONNX models: tensor specs, op checks, sessions."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from converters.errors import CandidateFailed, SourceError, UnsupportedOps
from edge_runtime.manifest import TensorSpec

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
    "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool",
    "tensor(string)": "string",
}
_KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
_NOT_IMPLEMENTED = re.compile(r"Could not find an implementation for (\w+)")
_NO_OP = re.compile(r"No Op registered for (\w+)")


def numpy_dtype(dtype: str) -> np.dtype[Any]:
    return np.dtype(object) if dtype == "string" else np.dtype(dtype)


def _spec(arg: Any) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise SourceError(arg.name, f"tensor type {arg.type} is not supported (maps/sequences)")
    shape = tuple(d if isinstance(d, int) else (d or "batch") for d in (arg.shape or []))
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape)


def specs(session: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    return (tuple(_spec(a) for a in session.get_inputs()),
            tuple(_spec(a) for a in session.get_outputs()))


def unknown_ops(model: Any) -> list[str]:
    """Ops that no registered ONNX schema (or onnxruntime contrib domain) defines."""
    import onnx

    bad = []
    opsets = {o.domain: o.version for o in model.opset_import}
    for node in _all_nodes(model.graph):
        if node.domain not in _KNOWN_DOMAINS:
            bad.append(f"{node.domain}.{node.op_type}")
        elif node.domain != "com.microsoft" and not onnx.defs.has(
            node.op_type, max(opsets.get(node.domain, 1), 1), node.domain
        ):
            bad.append(node.op_type)
    return bad


def _all_nodes(graph: Any) -> list[Any]:
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.g is not None and len(attr.g.node):
                nodes.extend(_all_nodes(attr.g))
    return nodes


def session(model_bytes: bytes, *, threads: int = 1, label: str = "fp32") -> Any:
    """An onnxruntime session; unsupported ops become UnsupportedOps, other failures
    CandidateFailed."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        text = str(exc)
        ops = _NOT_IMPLEMENTED.findall(text) + _NO_OP.findall(text)
        if ops:
            raise UnsupportedOps(ops) from exc
        raise CandidateFailed(label, text.splitlines()[0][:300]) from exc


def run(sess: Any, feeds: dict[str, np.ndarray[Any, Any]], label: str) -> dict[str, Any]:
    try:
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds), strict=True))
    except Exception as exc:
        raise CandidateFailed(label, str(exc).splitlines()[0][:300]) from exc


def opset(model: Any) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 0
