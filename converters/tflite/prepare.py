"""Before emitting: refuse what TFLite cannot hold, fix the batch dimension, let onnxruntime's
basic optimisation fold shape chains and BatchNorm into Conv, and record every tensor's shape."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from converters.errors import ConversionError, DynamicShape, UnsupportedOps
from converters.quiet import quiet
from converters.tflite.mlir import Shape

ML_DOMAIN = "ai.onnx.ml"
ML_NOTE = ("these are ONNX-ML ops (scikit-learn models convert to them); TFLite has no such ops "
           "and cannot hold the model: package it as ONNX (--to onnx), or train the model as a "
           "neural network (e.g. in PyTorch) for TFLite")


@dataclass(frozen=True)
class Prepared:
    model: Any  # onnx.ModelProto, optimised, batch fixed
    shapes: dict[str, Shape]  # every graph input and node output
    constants: dict[str, NDArray[Any]]
    inputs: list[str]
    outputs: list[str]


def check_ml(model: Any) -> None:
    ml = sorted({f"{ML_DOMAIN}.{n.op_type}" for n in model.graph.node if n.domain == ML_DOMAIN})
    if ml:
        raise UnsupportedOps(ml, target="tflite", note=ML_NOTE)


def prepare(model: Any, *, batch: int = 1,
            problems: Callable[[Any], str | None] | None = None) -> Prepared:
    """``problems(node)`` names the unsupported op (or op variant) a node is, or None."""
    import onnx

    check_ml(model)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    _fix_batch(model, batch)
    model = _optimise(model)
    if problems is not None:
        bad = [p for p in map(problems, model.graph.node) if p]
        if bad:
            raise UnsupportedOps(bad, target="tflite")
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in constants]
    shapes = _shapes(model, inputs, batch)
    return Prepared(model, shapes, constants, inputs, [o.name for o in model.graph.output])


def _fix_batch(model: Any, batch: int) -> None:
    from onnx import TensorProto

    initialisers = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initialisers:
            continue
        tt = inp.type.tensor_type
        if tt.elem_type != TensorProto.FLOAT:
            raise ConversionError(f"input {inp.name!r} is not float32: the TFLite export takes "
                                  "float32 inputs only")
        for axis, dim in enumerate(tt.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if axis == 0:
                dim.dim_value = batch
            else:
                raise DynamicShape(inp.name, axis, dim.dim_param or "?")


def _optimise(model: Any) -> Any:
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        try:
            with quiet():
                ort.InferenceSession(model.SerializeToString(), opts,
                                     providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise ConversionError(f"onnxruntime cannot optimise the model: {first}") from exc
        return onnx.load(opts.optimized_model_filepath)


def _shapes(model: Any, inputs: list[str], batch: int) -> dict[str, Shape]:
    """Run the fixed-batch model once with every tensor as an output: exact static shapes."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto.FromString(model.SerializeToString())
    have = {o.name for o in probe.graph.output}
    names = [o for n in probe.graph.node for o in n.output if o and o not in have]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    feeds = {}
    for arg in sess.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in arg.shape]
        feeds[arg.name] = np.zeros(shape, np.float32)
    out_names = [o.name for o in sess.get_outputs()]
    results = sess.run(out_names, feeds)
    shapes = {n: tuple(int(d) for d in feeds[n].shape) for n in inputs}
    shapes.update({n: tuple(int(d) for d in r.shape) for n, r in zip(out_names, results,
                                                                    strict=True)})
    return shapes
