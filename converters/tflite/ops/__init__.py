"""ONNX op -> StableHLO emitters, one module per op family. ``OPS`` maps an ONNX op type to its
emitter and, where some attribute values cannot be converted, a check naming the variant."""

from __future__ import annotations

from typing import Any

from converters.tflite.ops import activation, arith, conv, dense, pool, resize, shape
from converters.tflite.ops.base import OpDef

OPS: dict[str, OpDef] = {
    **activation.OPS, **arith.OPS, **conv.OPS, **dense.OPS, **pool.OPS, **resize.OPS,
    **shape.OPS}


def problem(node: Any) -> str | None:
    """What the TFLite export cannot convert about ``node`` (its op, or op variant), or None."""
    if node.domain not in ("", "ai.onnx"):
        return f"{node.domain}.{node.op_type}"
    op = OPS.get(node.op_type)
    if op is None:
        return str(node.op_type)
    return op.check(node) if op.check is not None else None
