"""Conv and ConvTranspose on NHWC activations with HWIO weights (transposed once, here).

The TFLite lowering turns a grouped convolution with one input channel per group into
depthwise_conv_2d and fuses a following bias add and relu/relu6 into the op.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from converters.errors import ConversionError
from converters.tflite import mlir
from converters.tflite.emitter import NHWC, Emitter, attrs, text
from converters.tflite.ops.base import OpDef

SPATIAL = 2


def check(node: Any) -> str | None:
    a = attrs(node)
    if len(a.get("kernel_shape", [0, 0])) != SPATIAL:
        return f"{node.op_type}(non-2D)"
    return None


def _weights(e: Emitter, node: Any) -> NDArray[Any]:
    w = e.const(node.input[1])
    if w is None:
        raise ConversionError(f"{node.op_type} {node.name or node.output[0]!r}: weights "
                              "computed at run time cannot be exported")
    if w.ndim != SPATIAL + 2:
        raise ConversionError(f"{node.op_type} {node.name!r}: only 2-D convolutions export")
    return np.asarray(w, np.float32)


def _pads(node: Any, in_hw: tuple[int, ...], out_hw: tuple[int, ...], eff_k: list[int],
          strides: list[int]) -> list[tuple[int, int]]:
    """(low, high) padding per spatial dim, with auto_pad resolved."""
    a = attrs(node)
    auto = text(a.get("auto_pad", "NOTSET"))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for i, o, k, s in zip(in_hw, out_hw, eff_k, strides, strict=True):
            total = max((o - 1) * s + k - i, 0)
            small = total // 2
            out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        return out
    if auto == "VALID":
        return [(0, 0)] * SPATIAL
    pads = list(a.get("pads", [0] * 2 * SPATIAL))
    return [(pads[i], pads[i + SPATIAL]) for i in range(SPATIAL)]


def _bias_add(e: Emitter, node: Any, ssa: str, phys: tuple[int, ...]) -> str:
    if len(node.input) < 3 or not node.input[2]:
        return ssa
    bias = e.const(node.input[2])
    if bias is None:
        raise ConversionError(f"{node.op_type} bias computed at run time cannot be exported")
    b = e.b.const(np.asarray(bias, np.float32))
    wide = e.b.op("broadcast_in_dim", [(b, (phys[3],))], phys,
                  attrs=f"broadcast_dimensions = {mlir.i64s([3])}")
    return e.b.op("add", [(ssa, phys), (wide, phys)], phys)


def _convolution(e: Emitter, x: tuple[str, tuple[int, ...]], kernel: NDArray[Any],
                 out: tuple[int, ...], *, strides: list[int], pads: list[tuple[int, int]],
                 dilations: list[int], groups: int, lhs_dilation: list[int] | None = None) -> str:
    w = e.b.const(kernel)
    padding = mlir.pads([list(p) for p in pads])
    attr = ", ".join([
        "batch_group_count = 1 : i64",
        "dimension_numbers = #stablehlo.conv<[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]>",
        f"feature_group_count = {groups} : i64",
        f"lhs_dilation = {mlir.i64s(lhs_dilation or [1, 1])}",
        f"padding = {padding}",
        f"rhs_dilation = {mlir.i64s(dilations)}",
        f"window_strides = {mlir.i64s(strides)}",
    ])
    return e.b.op("convolution", [x, (w, tuple(kernel.shape))], out, attrs=attr)


def conv(e: Emitter, node: Any) -> None:
    a = attrs(node)
    x = e.relayout(e.get(node.input[0]), NHWC)
    w = _weights(e, node)  # O, C/g, kh, kw
    out = e.shapes[node.output[0]]
    phys = tuple(out[p] for p in NHWC)
    strides = list(a.get("strides", [1, 1]))
    dilations = list(a.get("dilations", [1, 1]))
    eff = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], dilations, strict=True)]
    pads = _pads(node, x.physical[1:3], phys[1:3], eff, strides)
    ssa = _convolution(e, (x.ssa, x.physical), w.transpose(2, 3, 1, 0), phys, strides=strides,
                       pads=pads, dilations=dilations, groups=int(a.get("group", 1)))
    e.put(node.output[0], _bias_add(e, node, ssa, phys), NHWC)


def conv_transpose(e: Emitter, node: Any) -> None:
    """A convolution of the stride-dilated input with the flipped kernel, padded fully (the form
    the lowering makes transpose_conv of), then cropped to the ONNX pads and output_padding."""
    a = attrs(node)
    x = e.relayout(e.get(node.input[0]), NHWC)
    w = _weights(e, node)  # C_in, C_out/g, kh, kw
    g = int(a.get("group", 1))
    out = e.shapes[node.output[0]]
    phys = tuple(out[p] for p in NHWC)
    strides = list(a.get("strides", [1, 1]))
    dilations = list(a.get("dilations", [1, 1]))
    c_in, c_out_g, kh, kw = w.shape
    kernel = (w.reshape(g, c_in // g, c_out_g, kh, kw).transpose(3, 4, 1, 0, 2)
              .reshape(kh, kw, c_in // g, g * c_out_g)[::-1, ::-1])
    full = [d * (k - 1) for k, d in zip((kh, kw), dilations, strict=True)]
    sizes = [(x.physical[1 + i] - 1) * strides[i] + full[i] + 1 for i in range(SPATIAL)]
    wide = (phys[0], *sizes, phys[3])
    ssa = _convolution(e, (x.ssa, x.physical), np.ascontiguousarray(kernel), wide,
                       strides=[1, 1], pads=[(f, f) for f in full], dilations=dilations,
                       groups=g, lhs_dilation=strides)
    crops = [_transpose_pads(node, i, sizes[i] - phys[1 + i]) for i in range(SPATIAL)]
    if any(c != (0, 0) for c in crops):
        low = [0, *(-c[0] for c in crops), 0]
        high = [0, *(-c[1] for c in crops), 0]
        fill = e.b.const(np.array(0.0, np.float32))
        ssa = e.b.op("pad", [(ssa, wide), (fill, ())], phys,
                     attrs=f"edge_padding_high = {mlir.i64s(high)}, "
                     f"edge_padding_low = {mlir.i64s(low)}, "
                     f"interior_padding = {mlir.i64s([0] * 4)}")
    e.put(node.output[0], _bias_add(e, node, ssa, phys), NHWC)


def _transpose_pads(node: Any, axis: int, total: int) -> tuple[int, int]:
    """ONNX pads of ConvTranspose (begin, end) for one spatial axis; ``total`` is what the
    output shape implies they add up to (output_padding included, as a negative end pad)."""
    a = attrs(node)
    auto = text(a.get("auto_pad", "NOTSET"))
    if "output_shape" not in a and auto in ("NOTSET", "VALID"):
        begin = int(list(a.get("pads", [0] * 2 * SPATIAL))[axis])
        return begin, total - begin
    if auto == "SAME_UPPER":
        return total // 2, total - total // 2
    return total - total // 2, total // 2


OPS = {
    "Conv": OpDef(conv, check),
    "ConvTranspose": OpDef(conv_transpose, check),
}
