"""Shape ops. Reshapes work on the ONNX layout (their output shape comes from the probe run);
Transpose only relabels the layout; Concat and Pad work in their input's layout."""

from __future__ import annotations

from typing import Any

import numpy as np

from converters.errors import ConversionError
from converters.tflite.emitter import Emitter, Value, attrs, inverse, text
from converters.tflite.mlir import i64s
from converters.tflite.ops.base import OpDef


def reshape(e: Emitter, node: Any) -> None:
    """Reshape, Flatten, Squeeze, Unsqueeze: the probe run knows the output shape."""
    x = e.get(node.input[0])
    out = e.shapes[node.output[0]]
    if x.const is not None:
        e.put_const(node.output[0], np.asarray(x.const).reshape(out))
        return
    e.put(node.output[0], e.reshape(e.tensor(x), x.shape, out))


def transpose(e: Emitter, node: Any) -> None:
    """No op emitted: the output is the same physical tensor with another logical order."""
    x = e.get(node.input[0])
    q = tuple(attrs(node).get("perm", range(x.rank - 1, -1, -1)))
    if x.const is not None:
        e.put_const(node.output[0], np.asarray(x.const).transpose(q))
        return
    p = x.perm or tuple(range(x.rank))
    q_inv = inverse(q)
    perm = tuple(q_inv[p[j]] for j in range(x.rank))
    e.put(node.output[0], x.ssa, perm)


def concat(e: Emitter, node: Any) -> None:
    parts = [e.get(n) for n in node.input if n]
    out = e.shapes[node.output[0]]
    axis = int(attrs(node)["axis"]) % len(out)
    perm = e.layout_for(parts, len(out))
    j = axis if perm is None else perm.index(axis)
    operands = []
    for v in parts:
        moved = v if v.const is not None else e.relayout(v, perm)
        phys = v.shape if perm is None else tuple(v.shape[p] for p in perm)
        operands.append((e.tensor(moved, perm), phys))
    phys_out = out if perm is None else tuple(out[p] for p in perm)
    e.put(node.output[0], e.b.op("concatenate", operands, phys_out,
                                 attrs=f"dimension = {j} : i64"), perm)


def check_pad(node: Any) -> str | None:
    mode = text(attrs(node).get("mode", "constant"))
    return None if mode == "constant" else f"Pad(mode={mode})"


def pad(e: Emitter, node: Any) -> None:
    x = e.get(node.input[0])
    a = attrs(node)
    pads = a.get("pads")
    if len(node.input) > 1 and node.input[1]:
        pads = _const_ints(e, node.input[1], "pads")
    value = 0.0
    if len(node.input) > 2 and node.input[2]:
        value = float(np.asarray(_const(e, node.input[2], "constant_value")).reshape(()))
    elif "value" in a:
        value = float(a["value"])
    axes = list(range(x.rank))
    if len(node.input) > 3 and node.input[3]:
        axes = [v % x.rank for v in _const_ints(e, node.input[3], "axes")]
    pads = list(pads or [])
    lows, highs = [0] * x.rank, [0] * x.rank
    for i, axis in enumerate(axes):
        lows[axis], highs[axis] = int(pads[i]), int(pads[i + len(axes)])
    order = x.perm or tuple(range(x.rank))
    lo = [lows[p] for p in order]
    hi = [highs[p] for p in order]
    out = e.shapes[node.output[0]]
    phys = tuple(out[p] for p in order)
    fill = e.b.const(np.array(value, np.float32))
    attr = (f"edge_padding_high = {i64s(hi)}, edge_padding_low = {i64s(lo)}, "
            f"interior_padding = {i64s([0] * x.rank)}")
    ssa = e.b.op("pad", [(e.tensor(x, x.perm), x.physical), (fill, ())], phys, attrs=attr)
    e.put(node.output[0], ssa, x.perm)


def _const(e: Emitter, name: str, what: str) -> Any:
    value = e.const(name)
    if value is None:
        raise ConversionError(f"Pad {what} computed at run time cannot be exported")
    return value


def _const_ints(e: Emitter, name: str, what: str) -> list[int]:
    return [int(v) for v in np.asarray(_const(e, name, what)).reshape(-1)]


def constant(e: Emitter, node: Any) -> None:
    from onnx import numpy_helper

    a = attrs(node)
    if "value" in a:
        array = numpy_helper.to_array(a["value"])
    elif "value_float" in a:
        array = np.array(a["value_float"], np.float32)
    elif "value_floats" in a:
        array = np.array(a["value_floats"], np.float32)
    elif "value_int" in a:
        array = np.array(a["value_int"], np.int64)
    elif "value_ints" in a:
        array = np.array(a["value_ints"], np.int64)
    else:
        raise ConversionError(f"Constant {node.output[0]!r}: unsupported value attribute")
    e.put_value(node.output[0], Value(tuple(array.shape), const=array))


OPS = {
    "Reshape": OpDef(reshape),
    "Flatten": OpDef(reshape),
    "Squeeze": OpDef(reshape),
    "Unsqueeze": OpDef(reshape),
    "Transpose": OpDef(transpose),
    "Concat": OpDef(concat),
    "Pad": OpDef(pad, check_pad),
    "Constant": OpDef(constant),
}
