"""Gemm and MatMul as ``dot_general`` (+ bias add): the lowering makes fully_connected of them."""

from __future__ import annotations

from typing import Any

import numpy as np

from converters.tflite.emitter import Emitter, Value, attrs
from converters.tflite.mlir import Shape, i64s
from converters.tflite.ops.base import OpDef


def _dot(e: Emitter, a: tuple[str, Shape], b: tuple[str, Shape], out: Shape, *,
         batch: int = 0) -> str:
    ra, rb = len(a[1]), len(b[1])
    dims = [f"lhs_contracting_dimensions = [{ra - 1}]",
            f"rhs_contracting_dimensions = [{rb - 2 if batch else 0}]"]
    if batch:
        listed = ", ".join(str(i) for i in range(batch))
        dims = [f"lhs_batching_dimensions = [{listed}]",
                f"rhs_batching_dimensions = [{listed}]", *dims]
    return e.b.op("dot_general", [a, b], out,
                  attrs=f"dot_dimension_numbers = #stablehlo.dot<{', '.join(dims)}>")


def _transposed(e: Emitter, ssa: str, shape: Shape) -> tuple[str, Shape]:
    out = (shape[1], shape[0])
    return e.b.op("transpose", [(ssa, shape)], out, attrs=f"permutation = {i64s([1, 0])}"), out


def gemm(e: Emitter, node: Any) -> None:
    a = attrs(node)
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    x = e.get(node.input[0])
    lhs = (e.tensor(x), x.shape)
    if a.get("transA", 0):
        lhs = _transposed(e, *lhs)
    out = e.shapes[node.output[0]]
    w = e.const(node.input[1])
    if w is not None:  # fold transB and alpha into the constant weights
        w = np.asarray(w, np.float32)
        w = (w.T if a.get("transB", 0) else w) * np.float32(alpha)
        y = _dot(e, lhs, (e.b.const(np.ascontiguousarray(w)), tuple(w.shape)), out)
    else:
        bv = e.get(node.input[1])
        rhs = (e.tensor(bv), bv.shape)
        if a.get("transB", 0):
            rhs = _transposed(e, *rhs)
        y = _dot(e, lhs, rhs, out)
        if alpha != 1.0:
            y = e.b.op("multiply", [(y, out), (e.b.splat(alpha, out), out)], out)
    if len(node.input) > 2 and node.input[2]:
        c = e.get(node.input[2])
        if c.const is not None:
            c = Value(c.shape, const=np.asarray(c.const, np.float32) * np.float32(beta))
            bias = e.operand(c, 2, None, out)
        else:
            bias = e.operand(c, 2, None, out)
            if beta != 1.0:
                bias = e.b.op("multiply", [(bias, out), (e.b.splat(beta, out), out)], out)
        y = e.b.op("add", [(y, out), (bias, out)], out)
    e.put(node.output[0], y)


def matmul(e: Emitter, node: Any) -> None:
    xa, xb = e.get(node.input[0]), e.get(node.input[1])
    out = e.shapes[node.output[0]]
    a_shape = (1, *xa.shape) if xa.rank == 1 else xa.shape
    b_shape = (*xb.shape, 1) if xb.rank == 1 else xb.shape
    a = (e.reshape(e.tensor(xa), xa.shape, a_shape), a_shape)
    b = (e.reshape(e.tensor(xb), xb.shape, b_shape), b_shape)
    if len(b_shape) == 2:
        y_shape = (*a_shape[:-1], b_shape[1])
        y = _dot(e, a, b, y_shape)
    else:  # batched: broadcast both to the output's batch dims
        batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
        a = _batched(e, a, batch)
        b = _batched(e, b, batch)
        y_shape = (*batch, a_shape[-2], b_shape[-1])
        y = _dot(e, a, b, y_shape, batch=len(batch))
    e.put(node.output[0], e.reshape(y, y_shape, out))


def _batched(e: Emitter, v: tuple[str, Shape], batch: Shape) -> tuple[str, Shape]:
    ssa, shape = v
    full = (*batch, *shape[-2:])
    return e.broadcast(ssa, shape, full), full


OPS = {
    "Gemm": OpDef(gemm),
    "MatMul": OpDef(matmul),
}
