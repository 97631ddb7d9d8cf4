"""A prepared ONNX graph -> one StableHLO function, channels-last inside.

Every ONNX tensor becomes a ``Value``: its ONNX (logical) shape, the SSA name holding it, and the
permutation ``perm`` that its physical layout applies to the logical one (``None``: as ONNX).
Convolutions and pools produce NHWC values (``perm = (0, 2, 3, 1)``); element-wise ops keep the
layout they are given; ONNX Transpose only changes ``perm``. A transpose is emitted only where an
op needs a layout its input does not have, and one that moves only size-1 dimensions is a reshape.
So a conv net has a transpose after its input and, at most, one before its dense head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from converters.errors import ConversionError
from converters.tflite import mlir
from converters.tflite.mlir import Builder, Shape

NHWC = (0, 2, 3, 1)


def channels_last(rank: int) -> Shape:
    return (0, *range(2, rank), 1)


def inverse(perm: Shape) -> Shape:
    out = [0] * len(perm)
    for i, p in enumerate(perm):
        out[p] = i
    return tuple(out)


@dataclass(frozen=True)
class Value:
    shape: Shape  # logical (ONNX) shape
    ssa: str = ""
    perm: Shape | None = None  # physical = transpose(logical, perm)
    const: NDArray[Any] | None = None

    @property
    def physical(self) -> Shape:
        return self.shape if self.perm is None else tuple(self.shape[p] for p in self.perm)

    @property
    def rank(self) -> int:
        return len(self.shape)


class Emitter:
    def __init__(self, shapes: dict[str, Shape], constants: dict[str, NDArray[Any]], *,
                 opset: int = 17) -> None:
        self.b = Builder()
        self.opset = opset
        self.shapes = shapes
        self.values: dict[str, Value] = {
            name: Value(tuple(int(d) for d in array.shape), const=array)
            for name, array in constants.items()}
        self._materialized: dict[tuple[int, Shape | None], str] = {}

    # -- values -------------------------------------------------------------------------------
    def get(self, name: str) -> Value:
        try:
            return self.values[name]
        except KeyError:
            raise ConversionError(f"tensor {name!r} is used before it is defined") from None

    def const(self, name: str) -> NDArray[Any] | None:
        if not name:
            return None
        return self.get(name).const

    def put(self, name: str, ssa: str, perm: Shape | None = None) -> None:
        shape = self.shapes[name]
        self.values[name] = Value(shape, ssa, None if perm == tuple(range(len(shape))) else perm)

    def put_value(self, name: str, value: Value) -> None:
        self.values[name] = value

    def put_const(self, name: str, array: NDArray[Any]) -> None:
        self.values[name] = Value(tuple(int(d) for d in array.shape), const=array)

    def tensor(self, v: Value, perm: Shape | None = None) -> str:
        """The SSA name of ``v`` in layout ``perm`` (None: the ONNX layout)."""
        if v.const is not None:
            key = (id(v.const), perm)
            if key not in self._materialized:
                array = np.asarray(v.const, np.float32)
                self._materialized[key] = self.b.const(
                    array if perm is None else array.transpose(perm))
            return self._materialized[key]
        return self.relayout(v, perm).ssa

    def relayout(self, v: Value, perm: Shape | None) -> Value:
        ident = tuple(range(v.rank))
        src, dst = v.perm or ident, perm or ident
        if src == dst:
            return v
        t = tuple(inverse(src)[d] for d in dst)
        target = Value(v.shape, "", None if dst == ident else dst)
        moving = [i for i in t if v.physical[i] != 1]
        if moving == sorted(moving):  # only size-1 dims move: memory order is unchanged
            ssa = self.reshape(v.ssa, v.physical, target.physical)
        else:
            ssa = self.b.op("transpose", [(v.ssa, v.physical)], target.physical,
                            attrs=f"permutation = {mlir.i64s(t)}")
        return Value(v.shape, ssa, target.perm)

    # -- common ops ---------------------------------------------------------------------------
    def reshape(self, ssa: str, shape: Shape, to: Shape) -> str:
        if shape == to:
            return ssa
        return self.b.op("reshape", [(ssa, shape)], to)

    def broadcast(self, ssa: str, shape: Shape, to: Shape) -> str:
        """Numpy-style broadcast of a same-rank (or lower-rank, right-aligned) operand."""
        if shape == to:
            return ssa
        dims = list(range(len(to) - len(shape), len(to)))
        return self.b.op("broadcast_in_dim", [(ssa, shape)], to,
                         attrs=f"broadcast_dimensions = {mlir.i64s(dims)}")

    def operand(self, v: Value, rank: int, perm: Shape | None, to: Shape) -> str:
        """``v`` numpy-broadcast to logical rank ``rank``, laid out in ``perm``, broadcast to
        the physical shape ``to``. Constants stay small: broadcasting happens in the graph."""
        if v.const is not None:
            array = np.asarray(v.const, np.float32).reshape((1,) * (rank - v.rank) + v.shape)
            if perm is not None:
                array = array.transpose(perm)
            return self.broadcast(self.b.const(array), tuple(array.shape), to)
        if v.rank < rank:
            plain = self.tensor(v)
            shape = (1,) * (rank - v.rank) + v.shape
            v = Value(shape, self.reshape(plain, v.shape, shape))
        moved = self.relayout(v, perm)
        return self.broadcast(moved.ssa, moved.physical, to)

    def layout_for(self, values: list[Value], rank: int) -> Shape | None:
        """The layout an n-ary element-wise op works in: that of its first laid-out input."""
        for v in values:
            if v.const is None and v.rank == rank and v.perm is not None:
                return v.perm
        return None

    def elementwise(self, op: str, inputs: list[Value], out: str) -> None:
        shape = self.shapes[out]
        perm = self.layout_for(inputs, len(shape))
        phys = shape if perm is None else tuple(shape[p] for p in perm)
        operands = [(self.operand(v, len(shape), perm, phys), phys) for v in inputs]
        self.put(out, self.b.op(op, operands, phys), perm)

    def unary(self, op: str, x: Value, out: str) -> None:
        self.put(out, self.b.op(op, [(self.tensor(x, x.perm), x.physical)], x.physical), x.perm)

    def physical_axis(self, v: Value, axis: int) -> int:
        axis = axis % v.rank if v.rank else 0
        return axis if v.perm is None else v.perm.index(axis)

    def reduce(self, op: str, init: float, v: Value, axes: list[int]) -> tuple[str, Shape]:
        """Reduce ``v`` over physical ``axes``; returns the result and its physical shape."""
        shape = tuple(d for i, d in enumerate(v.physical) if i not in axes)
        init_ssa = self.b.const(np.array(init, np.float32))
        ssa = self.b.op("reduce", [(self.tensor(v, v.perm), v.physical), (init_ssa, ())], shape,
                        region=mlir.scalar_region(op),
                        attrs=f"dimensions = {mlir.i64s(sorted(axes))}")
        return ssa, shape


def attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def text(a: Any) -> Any:
    return a.decode() if isinstance(a, bytes) else a
