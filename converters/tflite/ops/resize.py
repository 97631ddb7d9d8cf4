"""Resize on NHWC. Nearest with integer factors is a broadcast (exact, no gather); bilinear is
tfl.resize_bilinear, whose half_pixel_centers / align_corners modes are ONNX's half_pixel /
align_corners."""

from __future__ import annotations

from typing import Any

from converters.tflite import mlir
from converters.tflite.emitter import NHWC, Emitter, attrs, text
from converters.tflite.ops.base import OpDef

# (coordinate_transformation_mode, nearest_mode) pairs that pick floor(out / factor) when the
# factor is an integer.
_NEAREST_FLOOR = {("asymmetric", "floor"), ("tf_half_pixel_for_nn", "floor"),
                  ("half_pixel", "round_prefer_floor"), ("half_pixel", "round_prefer_ceil"),
                  ("pytorch_half_pixel", "round_prefer_floor"),
                  ("pytorch_half_pixel", "round_prefer_ceil")}
_LINEAR = {"half_pixel": False, "pytorch_half_pixel": False, "align_corners": True}


def _modes(node: Any) -> tuple[str, str, str]:
    a = attrs(node)
    return (text(a.get("mode", "nearest")),
            text(a.get("coordinate_transformation_mode", "half_pixel")),
            text(a.get("nearest_mode", "round_prefer_floor")))


def check(node: Any) -> str | None:
    mode, coord, nearest = _modes(node)
    if attrs(node).get("antialias", 0):
        return "Resize(antialias=1)"
    if mode == "nearest" and (coord, nearest) not in _NEAREST_FLOOR:
        return f"Resize(nearest, {coord}, {nearest})"
    if mode == "linear" and coord not in _LINEAR:
        return f"Resize(linear, {coord})"
    if mode not in ("nearest", "linear"):
        return f"Resize({mode})"
    return None


def resize(e: Emitter, node: Any) -> None:
    from converters.errors import UnsupportedOps

    x = e.get(node.input[0])
    out = e.shapes[node.output[0]]
    if x.rank != 4 or out[:2] != x.shape[:2]:
        raise UnsupportedOps(["Resize(not 2-D spatial)"], target="tflite")
    x = e.relayout(x, NHWC)
    phys = tuple(out[p] for p in NHWC)
    mode, coord, _ = _modes(node)
    if mode == "nearest":
        n, h, w, c = x.physical
        oh, ow = phys[1:3]
        if oh % h or ow % w:
            raise UnsupportedOps([f"Resize(nearest, factor {oh}/{h}x{ow}/{w})"], target="tflite")
        split = (n, h, 1, w, 1, c)
        wide = (n, h, oh // h, w, ow // w, c)
        ssa = e.broadcast(e.reshape(x.ssa, x.physical, split), split, wide)
        e.put(node.output[0], e.reshape(ssa, wide, phys), NHWC)
        return
    e.put(node.output[0], _bilinear(e, x.ssa, x.physical, phys, _LINEAR[coord]), NHWC)


def _bilinear(e: Emitter, ssa: str, shape: mlir.Shape, out: mlir.Shape,
              align_corners: bool) -> str:
    """tfl.resize_bilinear itself: StableHLO has no resize op, and the lowering leaves TFL ops
    that are already in the module as they are."""
    size = e.b.fresh()
    e.b.raw(f'{size} = "tfl.pseudo_const"() <{{value = dense<[{out[1]}, {out[2]}]> : '
            f"tensor<2xi32>}}> : () -> tensor<2xi32>")
    result = e.b.fresh()
    flags = ("true, half_pixel_centers = false" if align_corners
             else "false, half_pixel_centers = true")
    e.b.raw(f'{result} = "tfl.resize_bilinear"({ssa}, {size}) <{{align_corners = {flags}}}> : '
            f"({mlir.ttype(shape)}, tensor<2xi32>) -> {mlir.ttype(out)}")
    return result


OPS = {"Resize": OpDef(resize, check)}
