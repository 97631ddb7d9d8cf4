"""Activations, written in the forms the TFLite lowering fuses: ``max(x, 0)`` -> relu,
``clamp(0, x, 6)`` -> relu6, ``x * clamp(0, x + 3, 6) / 6`` -> hard_swish."""

from __future__ import annotations

from typing import Any

import numpy as np

from converters.tflite.emitter import Emitter, Value, attrs
from converters.tflite.ops.base import OpDef


def _x(e: Emitter, node: Any) -> Value:
    return e.get(node.input[0])


def _binary_splat(e: Emitter, op: str, ssa: str, shape: tuple[int, ...], value: float) -> str:
    return e.b.op(op, [(ssa, shape), (e.b.splat(value, shape), shape)], shape)


def _clamp(e: Emitter, ssa: str, shape: tuple[int, ...], lo: float, hi: float) -> str:
    if lo == -np.inf:
        return _binary_splat(e, "minimum", ssa, shape, hi)
    if hi == np.inf:
        return _binary_splat(e, "maximum", ssa, shape, lo)
    lo_ssa = e.b.const(np.array(lo, np.float32))
    hi_ssa = e.b.const(np.array(hi, np.float32))
    return e.b.op("clamp", [(lo_ssa, ()), (ssa, shape), (hi_ssa, ())], shape)


def relu(e: Emitter, node: Any) -> None:
    x = _x(e, node)
    e.put(node.output[0], _binary_splat(e, "maximum", e.tensor(x, x.perm), x.physical, 0.0),
          x.perm)


def leaky_relu(e: Emitter, node: Any) -> None:
    x = _x(e, node)
    alpha = float(attrs(node).get("alpha", 0.01))
    ssa, shape = e.tensor(x, x.perm), x.physical
    scaled = _binary_splat(e, "multiply", ssa, shape, alpha)
    zero = e.b.splat(0.0, shape)
    positive = e.b.op("compare", [(ssa, shape), (zero, shape)], shape, element="i1",
                      operand_elements=["f32", "f32"],
                      attrs="comparison_direction = #stablehlo<comparison_direction GT>")
    out = e.b.op("select", [(positive, shape), (ssa, shape), (scaled, shape)], shape,
                 operand_elements=["i1", "f32", "f32"])
    e.put(node.output[0], out, x.perm)


def clip(e: Emitter, node: Any) -> None:
    x = _x(e, node)
    a = attrs(node)
    lo, hi = float(a.get("min", -np.inf)), float(a.get("max", np.inf))
    if len(node.input) > 1 and node.input[1]:
        lo = float(_scalar(e, node.input[1]))
    if len(node.input) > 2 and node.input[2]:
        hi = float(_scalar(e, node.input[2]))
    e.put(node.output[0], _clamp(e, e.tensor(x, x.perm), x.physical, lo, hi), x.perm)


def _scalar(e: Emitter, name: str) -> float:
    value = e.const(name)
    if value is None:
        from converters.errors import ConversionError

        raise ConversionError(f"Clip bound {name!r} is computed at run time; TFLite needs it "
                              "constant")
    return float(np.asarray(value).reshape(()))


def hard_sigmoid(e: Emitter, node: Any) -> None:
    x = _x(e, node)
    a = attrs(node)
    ssa, shape = e.tensor(x, x.perm), x.physical
    y = _binary_splat(e, "multiply", ssa, shape, float(a.get("alpha", 0.2)))
    y = _binary_splat(e, "add", y, shape, float(a.get("beta", 0.5)))
    e.put(node.output[0], _clamp(e, y, shape, 0.0, 1.0), x.perm)


def hard_swish(e: Emitter, node: Any) -> None:
    x = _x(e, node)
    ssa, shape = e.tensor(x, x.perm), x.physical
    gate = _clamp(e, _binary_splat(e, "add", ssa, shape, 3.0), shape, 0.0, 6.0)
    y = e.b.op("multiply", [(ssa, shape), (gate, shape)], shape)
    e.put(node.output[0], _binary_splat(e, "divide", y, shape, 6.0), x.perm)


def _unary(op: str) -> Any:
    def emit(e: Emitter, node: Any) -> None:
        e.unary(op, _x(e, node), node.output[0])
    return emit


def identity(e: Emitter, node: Any) -> None:
    e.put_value(node.output[0], _x(e, node))


OPS = {
    "Relu": OpDef(relu),
    "LeakyRelu": OpDef(leaky_relu),
    "Clip": OpDef(clip),
    "Sigmoid": OpDef(_unary("logistic")),
    "Tanh": OpDef(_unary("tanh")),
    "HardSigmoid": OpDef(hard_sigmoid),
    "HardSwish": OpDef(hard_swish),
    "Identity": OpDef(identity),
}
