"""Broadcasting arithmetic, inference BatchNormalization and Softmax."""

from __future__ import annotations

from typing import Any

import numpy as np

from converters.tflite.emitter import Emitter, Value, attrs
from converters.tflite.mlir import i64s
from converters.tflite.ops.base import OpDef, inputs


def _binary(op: str) -> Any:
    def emit(e: Emitter, node: Any) -> None:
        e.elementwise(op, inputs(e, node), node.output[0])
    return emit


def batch_norm(e: Emitter, node: Any) -> None:
    """``x * s + t`` with per-channel constants (onnxruntime folds the usual Conv+BN pairs)."""
    x = e.get(node.input[0])
    params = [e.const(n) for n in node.input[1:5]]
    if any(p is None for p in params):
        from converters.errors import ConversionError

        raise ConversionError("BatchNormalization with non-constant statistics cannot be exported")
    scale, bias, mean, var = (np.asarray(p, np.float64) for p in params)
    eps = float(attrs(node).get("epsilon", 1e-5))
    s = (scale / np.sqrt(var + eps)).astype(np.float32)
    t = (bias - mean * s).astype(np.float32)
    channel = (1, -1) + (1,) * (x.rank - 2)
    tmp = f"{node.output[0]}/scaled"
    e.shapes[tmp] = e.shapes[node.output[0]]
    s, t = s.reshape(channel), t.reshape(channel)
    e.elementwise("multiply", [x, Value(s.shape, const=s)], tmp)
    e.elementwise("add", [e.get(tmp), Value(t.shape, const=t)], node.output[0])


def softmax(e: Emitter, node: Any) -> None:
    x = e.get(node.input[0])
    default = -1 if e.opset >= 13 else 1
    axis = int(attrs(node).get("axis", default)) % x.rank
    if e.opset < 13 and axis != x.rank - 1:  # old Softmax: over all axes from `axis` on
        flat = (int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))
        ssa = e.reshape(e.tensor(x), x.shape, flat)
        x, axis = Value(flat, ssa), 1
    j = e.physical_axis(x, axis)
    phys = x.physical
    ssa = e.tensor(x, x.perm)
    top, reduced = e.reduce("maximum", -np.inf, x, [j])
    shifted = e.b.op("subtract", [(ssa, phys), (_back(e, top, reduced, phys, j), phys)], phys)
    exp = e.b.op("exponential", [(shifted, phys)], phys)
    total, _ = e.reduce("add", 0.0, Value(phys, exp), [j])
    out = e.b.op("divide", [(exp, phys), (_back(e, total, reduced, phys, j), phys)], phys)
    out_shape = e.shapes[node.output[0]]
    if out_shape != x.shape:  # undo the old-opset flattening
        out = e.reshape(out, phys, out_shape)
        e.put(node.output[0], out)
        return
    e.put(node.output[0], out, x.perm)


def _back(e: Emitter, ssa: str, shape: tuple[int, ...], to: tuple[int, ...], axis: int) -> str:
    dims = [i for i in range(len(to)) if i != axis]
    return e.b.op("broadcast_in_dim", [(ssa, shape)], to, attrs=f"broadcast_dimensions = "
                  f"{i64s(dims)}")


OPS = {
    "Add": OpDef(_binary("add")),
    "Sub": OpDef(_binary("subtract")),
    "Mul": OpDef(_binary("multiply")),
    "Div": OpDef(_binary("divide")),
    "BatchNormalization": OpDef(batch_norm),
    "Softmax": OpDef(softmax),
}
