"""StableHLO MLIR text in the generic op form: types, constants and one op per line.

The generic form (``"stablehlo.add"(%a, %b) : (T, T) -> T``) is verbose but uniform, so every op
is written the same way and the parser checks each result type against our shape bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

Shape = tuple[int, ...]

_ELEMENT = {np.dtype(np.float32): "f32", np.dtype(np.int32): "i32", np.dtype(np.int64): "i64",
            np.dtype(np.bool_): "i1"}


def ttype(shape: Sequence[int], element: str = "f32") -> str:
    dims = "".join(f"{d}x" for d in shape)
    return f"tensor<{dims}{element}>"


def i64s(values: Sequence[int]) -> str:
    """A dense i64 array attribute: ``array<i64: 1, 2>``."""
    return "array<i64" + (": " + ", ".join(str(int(v)) for v in values) if values else "") + ">"


def pads(rows: Sequence[Sequence[int]]) -> str:
    """A (low, high) padding attribute: ``dense<[[0, 0], [1, 1]]> : tensor<2x2xi64>``."""
    body = ", ".join(f"[{int(lo)}, {int(hi)}]" for lo, hi in rows)
    return f"dense<[{body}]> : tensor<{len(rows)}x2xi64>"


def dense(array: NDArray[Any]) -> str:
    """A ``dense<...> : tensor<...>`` literal; float32 as hex so no bit is lost in formatting."""
    element = _ELEMENT[array.dtype]
    if element == "f32":
        body = f'"0x{array.astype("<f4").tobytes().hex().upper()}"'
    elif array.ndim == 0:
        body = str(array.item()).lower()
    else:
        body = np.array2string(array, separator=", ", threshold=1 << 30,
                               max_line_width=1 << 30).replace("\n", "").lower()
    return f"dense<{body}> : {ttype(array.shape, element)}"


class Builder:
    """Collects the lines of one function body and names SSA values."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._n = 0

    def fresh(self) -> str:
        self._n += 1
        return f"%v{self._n}"

    def op(self, name: str, operands: Sequence[tuple[str, Shape]], result: Shape, *,
           attrs: str = "", region: str = "", element: str = "f32",
           operand_elements: Sequence[str] | None = None) -> str:
        """Emit ``name`` on ``(ssa, shape)`` operands; returns the result's SSA name."""
        out = self.fresh()
        elements = operand_elements or [element] * len(operands)
        args = ", ".join(ssa for ssa, _ in operands)
        types = ", ".join(ttype(s, el) for (_, s), el in zip(operands, elements, strict=True))
        region_text = f" ({{\n{region}\n}})" if region else ""
        attr_text = f" {{{attrs}}}" if attrs else ""
        self.lines.append(f'    {out} = "stablehlo.{name}"({args}){region_text}{attr_text} : '
                          f"({types}) -> {ttype(result, element)}")
        return out

    def tfl(self, name: str, operands: Sequence[tuple[str, Shape]], result: Shape,
            props: str) -> str:
        """A TFL op written directly, for what StableHLO cannot say or the lowering gets wrong;
        the lowering keeps TFL ops as they are."""
        out = self.fresh()
        args = ", ".join(ssa for ssa, _ in operands)
        types = ", ".join(ttype(s) for _, s in operands)
        self.lines.append(f'    {out} = "tfl.{name}"({args}) <{{{props}}}> : ({types}) -> '
                          f"{ttype(result)}")
        return out

    def const(self, array: NDArray[Any]) -> str:
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        out = self.fresh()
        self.lines.append(f"    {out} = stablehlo.constant {dense(array)}")
        return out

    def splat(self, value: float, shape: Shape) -> str:
        return self.const(np.full(shape, value, np.float32))

    def raw(self, line: str) -> None:
        self.lines.append(f"    {line}")


def scalar_region(op: str) -> str:
    """The body of a reduce / reduce_window: ``op`` on two f32 scalars."""
    s = ttype(())
    return (f"  ^bb0(%a: {s}, %b: {s}):\n"
            f'    %r = "stablehlo.{op}"(%a, %b) : ({s}, {s}) -> {s}\n'
            f'    "stablehlo.return"(%r) : ({s}) -> ()')


def module(args: Sequence[Shape], results: Sequence[tuple[str, Shape]], body: list[str],
           names: tuple[Sequence[str], Sequence[str]]) -> str:
    """``func.func @main`` with the given body, returning ``results`` (ssa, shape)."""
    params = ", ".join(f"%arg{i}: {ttype(s)}" for i, s in enumerate(args))
    out_types = ", ".join(ttype(s) for _, s in results)
    entry = ""
    if not any("," in n or '"' in n for n in (*names[0], *names[1])):
        entry = (f' attributes {{tf.entry_function = {{inputs = "{",".join(names[0])}", '
                 f'outputs = "{",".join(names[1])}"}}}}')
    ret = ", ".join(ssa for ssa, _ in results)
    return (f"module {{\n  func.func @main({params}) -> ({out_types}){entry} {{\n"
            + "\n".join(body)
            + f"\n    return {ret} : {out_types}\n  }}\n}}\n")
