"""ONNX model -> .tflite bytes: prepare (batch, optimisation, shapes), emit StableHLO, lower."""

from __future__ import annotations

from typing import Any

from converters.errors import ConversionError
from converters.onnx_model import opset
from converters.tflite import mlir
from converters.tflite.emitter import Emitter
from converters.tflite.lower import lower
from converters.tflite.ops import OPS, problem
from converters.tflite.prepare import Prepared, prepare


def to_mlir(prepared: Prepared, *, opset_version: int = 17) -> str:
    e = Emitter(dict(prepared.shapes), prepared.constants, opset=opset_version)
    args = []
    for i, name in enumerate(prepared.inputs):
        e.put(name, f"%arg{i}")
        args.append(prepared.shapes[name])
    for node in prepared.model.graph.node:
        OPS[node.op_type].emit(e, node)
        for out in node.output:
            if out and out in e.values and e.values[out].shape != prepared.shapes[out]:
                raise ConversionError(f"{node.op_type} {out!r}: emitted shape "
                                      f"{e.values[out].shape}, onnxruntime says "
                                      f"{prepared.shapes[out]}")
    results = []
    for name in prepared.outputs:
        v = e.get(name)
        results.append((e.tensor(v), v.shape))
    return mlir.module(args, results, e.b.lines, (prepared.inputs, prepared.outputs))


def to_tflite(model: Any, *, batch: int = 1) -> bytes:
    """The fp32 TFLite flatbuffer of an ONNX model, with a fixed batch dimension and a
    "serving_default" signature named after the ONNX inputs and outputs."""
    prepared = prepare(model, batch=batch, problems=problem)
    text = to_mlir(prepared, opset_version=opset(prepared.model))
    return lower(text, prepared.inputs, prepared.outputs)
