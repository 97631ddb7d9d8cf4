"""StableHLO MLIR text -> .tflite flatbuffer through litert-converter (no TensorFlow).

litert-converter's C++ passes log through absl straight to file descriptor 2; that chatter is
kept off the user's terminal (and shown only when lowering fails).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from converters.errors import ConversionError

SIGNATURE = "serving_default"


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Redirect fd 2 to a temp file for the block; the list gets its text afterwards."""
    text: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text.append(tmp.read().decode(errors="replace"))


def lower(mlir_text: str, inputs: Sequence[str], outputs: Sequence[str]) -> bytes:
    """Lower to TFL ops (fusing bias/activations), add the signature, export the flatbuffer."""
    with _captured_stderr() as log:
        try:
            return _lower(mlir_text, inputs, outputs)
        except Exception as exc:
            error = exc
    detail = _first_error(str(error), "".join(log))
    raise ConversionError(f"TFLite lowering failed: {detail}") from error


def _lower(mlir_text: str, inputs: Sequence[str], outputs: Sequence[str]) -> bytes:
    from litert_converter.mlir import ir, passmanager
    from litert_converter.mlir._mlir_libs import converter_api_ext as api

    ctx = ir.Context()
    api.prepare_mlir_context(ctx)
    with ctx, ir.Location.unknown():
        module: Any = ir.Module.parse(mlir_text)
        api.run_convert_to_tfl_passes(module, passmanager.PassManager(), api.ConvertToTFLConfig())
        api.set_signature(module.operation, SIGNATURE, list(inputs), list(outputs))
        return bytes(api.export_flatbuffer_to_bytes(module.operation))


def _first_error(message: str, log: str) -> str:
    for line in (*message.splitlines(), *log.splitlines()):
        if "error" in line.lower():
            return line.strip()[:400]
    return (message.strip().splitlines() or ["unknown error"])[0][:400]
