"""Tiny ONNX graphs built with onnx.helper, and a check of their TFLite export against
onnxruntime."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def graph(nodes: list[Any], inputs: dict[str, tuple[int | str, ...]], outputs: list[str], *,
          inits: dict[str, NDArray[Any]] | None = None, opset: int = 17) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def run_onnx(model: Any, feeds: dict[str, NDArray[Any]]) -> list[NDArray[Any]]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(sess.run(None, feeds))


def run_tflite(content: bytes, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=content).get_signature_runner()
    return dict(runner(**feeds))


def op_names(content: bytes) -> list[str]:
    from converters.tflite.validate import op_names as names

    return names(content)


def check(model: Any, feeds: dict[str, NDArray[Any]], *, atol: float = 1e-4,
          batch: int | None = None) -> bytes:
    from converters.tflite.export import to_tflite

    first = next(iter(feeds.values()))
    content = to_tflite(model, batch=batch or first.shape[0])
    want = run_onnx(model, feeds)
    got = run_tflite(content, feeds)
    for name, ref in zip([o.name for o in model.graph.output], want, strict=True):
        assert got[name].shape == ref.shape, (name, got[name].shape, ref.shape)
        np.testing.assert_allclose(got[name], ref, atol=atol, rtol=1e-4, err_msg=name)
    return content


def rand(*shape: int, seed: int = 0) -> NDArray[np.float32]:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
