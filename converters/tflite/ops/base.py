"""What an op module exports: ``OPS = {"Relu": OpDef(emit), ...}``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from converters.tflite.emitter import Emitter

Emit = Callable[[Emitter, Any], None]
Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class OpDef:
    emit: Emit
    check: Check | None = None


def inputs(e: Emitter, node: Any) -> list[Any]:
    return [e.get(name) if name else None for name in node.input]
