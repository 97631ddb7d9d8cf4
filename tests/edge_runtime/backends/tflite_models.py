"""Test-only: build tiny .tflite files without TensorFlow, through litert-converter.

A StableHLO module (MLIR text) is lowered to TFL ops and exported as a flatbuffer. The model is
``y = x @ w + b`` with a dynamic batch dimension and, optionally, a second output ``z = y * y``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def _dense(a: NDArray[np.float32]) -> str:
    # Hex form: exact float32 bits, no float-literal formatting to get wrong.
    dims = "x".join(map(str, a.shape))
    return f'dense<"0x{a.astype("<f4").tobytes().hex().upper()}"> : tensor<{dims}xf32>'


def _module(w: NDArray[np.float32], b: NDArray[np.float32], *, with_z: bool, named: bool) -> str:
    n_in, n_out = w.shape
    x, y = f"tensor<?x{n_in}xf32>", f"tensor<?x{n_out}xf32>"
    results = f"{y}, {y}" if with_z else y
    names = "y,z" if with_z else "y"
    attrs = f' attributes {{tf.entry_function = {{inputs = "x", outputs = "{names}"}}}}'
    z = f"    %z = stablehlo.multiply %r, %r : {y}\n" if with_z else ""
    ret = "%r, %z" if with_z else "%r"
    return f"""module {{
  func.func @main(%x: {x}) -> ({results}){attrs if named else ""} {{
    %w = stablehlo.constant {_dense(w)}
    %b = stablehlo.constant {_dense(b.reshape(1, n_out))}
    %d = stablehlo.dot_general %x, %w, contracting_dims = [1] x [0] : ({x}, tensor<{n_in}x{n_out}xf32>) -> {y}
    %r = stablehlo.add %d, %b : ({y}, tensor<1x{n_out}xf32>) -> {y}
{z}    return {ret} : {results}
  }}
}}
"""  # noqa: E501


def dense_tflite(w: NDArray[np.float32], b: NDArray[np.float32], *, with_z: bool = False,
                 signature: bool = True, named: bool = True) -> bytes:
    """A .tflite computing ``x @ w + b`` (and ``z``); ``signature`` adds "serving_default".

    Without a signature the tensors are called x/y/z when ``named``, else arg0/tfl.* names.
    """
    from litert_converter.mlir import ir, passmanager
    from litert_converter.mlir._mlir_libs import converter_api_ext as api

    ctx = ir.Context()
    api.prepare_mlir_context(ctx)
    with ctx, ir.Location.unknown():
        module: Any = ir.Module.parse(_module(w, b, with_z=with_z, named=named))
        api.run_convert_to_tfl_passes(module, passmanager.PassManager(), api.ConvertToTFLConfig())
        if signature:
            outputs = ["y", "z"] if with_z else ["y"]
            api.set_signature(module.operation, "serving_default", ["x"], outputs)
        return bytes(api.export_flatbuffer_to_bytes(module.operation))
