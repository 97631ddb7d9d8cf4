"""Pools and means: ``reduce_window`` on NHWC (-> max_pool_2d / average_pool_2d) and ``reduce``
over the physical axes of whatever layout the input has (-> mean)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from converters.errors import ConversionError
from converters.tflite import mlir
from converters.tflite.emitter import NHWC, Emitter, Value, attrs, text
from converters.tflite.ops.base import OpDef

SPATIAL = 2


def check(node: Any) -> str | None:
    a = attrs(node)
    if len(a.get("kernel_shape", [])) != SPATIAL:
        return f"{node.op_type}(non-2D)"
    if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
        return "MaxPool(with Indices)"
    if node.op_type == "AveragePool" and any(d != 1 for d in a.get("dilations", [1, 1])):
        return "AveragePool(dilations)"
    return None


def _window(node: Any, in_hw: tuple[int, ...], out_hw: tuple[int, ...]
            ) -> tuple[list[int], list[int], list[int], list[tuple[int, int]], list[int]]:
    """kernel, strides, dilations, (low, high) pads incl. ceil_mode's extra, and given highs."""
    a = attrs(node)
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides", [1, 1]))
    dilations = list(a.get("dilations", [1, 1]))
    auto = text(a.get("auto_pad", "NOTSET"))
    pads = list(a.get("pads", [0] * 2 * SPATIAL))
    lows, highs = pads[:SPATIAL], pads[SPATIAL:]
    out = []
    for i in range(SPATIAL):
        eff = (kernel[i] - 1) * dilations[i] + 1
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            total = max((out_hw[i] - 1) * strides[i] + eff - in_hw[i], 0)
            small = total // 2
            lows[i] = small if auto == "SAME_UPPER" else total - small
            highs[i] = total - lows[i]
        elif auto == "VALID":
            lows[i] = highs[i] = 0
        need = (out_hw[i] - 1) * strides[i] + eff - in_hw[i] - lows[i]  # ceil_mode overhang
        out.append((lows[i], max(highs[i], need)))
    return kernel, strides, dilations, out, highs


def _reduce_window(e: Emitter, op: str, init: float, x: Value, out: tuple[int, ...], *,
                   kernel: list[int], strides: list[int], dilations: list[int],
                   pads: list[tuple[int, int]]) -> str:
    init_ssa = e.b.const(np.array(init, np.float32))
    padding = [[0, 0], *[list(p) for p in pads], [0, 0]]
    attr = ", ".join([
        f"padding = {mlir.pads(padding)}",
        f"window_dilations = {mlir.i64s([1, *dilations, 1])}",
        f"window_dimensions = {mlir.i64s([1, *kernel, 1])}",
        f"window_strides = {mlir.i64s([1, *strides, 1])}",
    ])
    return e.b.op("reduce_window", [(x.ssa, x.physical), (init_ssa, ())], out,
                  region=mlir.scalar_region(op), attrs=attr)


def max_pool(e: Emitter, node: Any) -> None:
    x = e.relayout(e.get(node.input[0]), NHWC)
    shape = e.shapes[node.output[0]]
    phys = tuple(shape[p] for p in NHWC)
    kernel, strides, dilations, pads, _ = _window(node, x.physical[1:3], phys[1:3])
    ssa = _reduce_window(e, "maximum", -np.inf, x, phys, kernel=kernel, strides=strides,
                         dilations=dilations, pads=pads)
    e.put(node.output[0], ssa, NHWC)


def average_pool(e: Emitter, node: Any) -> None:
    """tfl.average_pool_2d (VALID) on the zero-padded input, rescaled where ONNX averages fewer
    elements. (The lowering's own reduce_window-add pattern mixes up layouts.)"""
    x = e.relayout(e.get(node.input[0]), NHWC)
    shape = e.shapes[node.output[0]]
    phys = tuple(shape[p] for p in NHWC)
    kernel, strides, dilations, pads, highs = _window(node, x.physical[1:3], phys[1:3])
    ssa, padded = x.ssa, x.physical
    if any(p != (0, 0) for p in pads):
        padded = (padded[0], *(d + lo + hi for d, (lo, hi) in zip(padded[1:3], pads,
                                                                    strict=True)), padded[3])
        zero = e.b.const(np.array(0.0, np.float32))
        low, high = [0, *(p[0] for p in pads), 0], [0, *(p[1] for p in pads), 0]
        ssa = e.b.op("pad", [(ssa, x.physical), (zero, ())], padded,
                     attrs=f"edge_padding_high = {mlir.i64s(high)}, edge_padding_low = "
                     f"{mlir.i64s(low)}, interior_padding = {mlir.i64s([0] * 4)}")
    ssa = e.b.tfl("average_pool_2d", [(ssa, padded)], phys,
                  f"filter_height = {kernel[0]} : i32, filter_width = {kernel[1]} : i32, "
                  'fused_activation_function = "NONE", padding = "VALID", '
                  f"stride_h = {strides[0]} : i32, stride_w = {strides[1]} : i32")
    include_pad = bool(attrs(node).get("count_include_pad", 0))
    count = _counts(x.physical[1:3], phys[1:3], kernel=kernel, strides=strides,
                    dilations=dilations, pads=pads, highs=highs, include_pad=include_pad)
    window = kernel[0] * kernel[1]
    if np.any(count != window):
        scale = (window / count).reshape(1, *phys[1:3], 1).astype(np.float32)
        wide = e.broadcast(e.b.const(scale), tuple(scale.shape), phys)
        ssa = e.b.op("multiply", [(ssa, phys), (wide, phys)], phys)
    e.put(node.output[0], ssa, NHWC)


def _counts(in_hw: tuple[int, ...], out_hw: tuple[int, ...], *, kernel: list[int],
            strides: list[int], dilations: list[int], pads: list[tuple[int, int]],
            highs: list[int], include_pad: bool) -> NDArray[Any]:
    """How many elements each output averages, as ONNX counts them."""
    per_axis = []
    for i in range(SPATIAL):
        lo = pads[i][0]
        valid_hi = in_hw[i] + (highs[i] if include_pad else 0)
        valid_lo = -lo if include_pad else 0
        starts = np.arange(out_hw[i]) * strides[i] - lo
        taps = starts[:, None] + np.arange(kernel[i])[None, :] * dilations[i]
        per_axis.append(((taps >= valid_lo) & (taps < valid_hi)).sum(axis=1))
    return np.outer(per_axis[0], per_axis[1])


def _mean(e: Emitter, x: Value, axes: list[int], keepdims: bool, out_name: str) -> None:
    phys_axes = sorted(e.physical_axis(x, a) for a in axes)
    total, reduced = e.reduce("add", 0.0, x, phys_axes)
    count = float(np.prod([x.physical[j] for j in phys_axes]))
    mean = e.b.op("divide", [(total, reduced), (e.b.splat(count, reduced), reduced)], reduced)
    if keepdims:
        kept = tuple(1 if j in phys_axes else d for j, d in enumerate(x.physical))
        e.put(out_name, e.reshape(mean, reduced, kept), x.perm)
        return
    logical_axes = {a % x.rank for a in axes}
    if x.perm is None:
        e.put(out_name, mean)
        return
    rest = [p for p in x.perm if p not in logical_axes]  # logical axes in physical order
    rank = {a: i for i, a in enumerate(sorted(rest))}
    e.put(out_name, mean, tuple(rank[a] for a in rest))


def global_average_pool(e: Emitter, node: Any) -> None:
    x = e.get(node.input[0])
    _mean(e, x, list(range(2, x.rank)), True, node.output[0])


def reduce_mean(e: Emitter, node: Any) -> None:
    x = e.get(node.input[0])
    a = attrs(node)
    axes = a.get("axes")
    if len(node.input) > 1 and node.input[1]:
        value = e.const(node.input[1])
        if value is None:
            raise ConversionError("ReduceMean axes computed at run time cannot be exported")
        axes = [int(v) for v in np.asarray(value).reshape(-1)]
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            e.put_value(node.output[0], x)
            return
        axes = list(range(x.rank))
    _mean(e, x, [int(v) % x.rank for v in axes], bool(a.get("keepdims", 1)), node.output[0])


OPS = {
    "MaxPool": OpDef(max_pool, check),
    "AveragePool": OpDef(average_pool, check),
    "GlobalAveragePool": OpDef(global_average_pool),
    "ReduceMean": OpDef(reduce_mean),
}
