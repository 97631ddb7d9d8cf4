"""Each supported op: a tiny ONNX graph, exported to TFLite, against onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from onnx import helper

from tests.converters.tflite.helpers import check, graph, op_names, rand

pytestmark = [pytest.mark.tflite, pytest.mark.convert]

IMG = ("N", 4, 8, 8)


@dataclass
class Case:
    id: str
    nodes: list[Any]
    inputs: dict[str, tuple[int | str, ...]] = field(default_factory=lambda: {"x": IMG})
    inits: dict[str, Any] = field(default_factory=dict)
    batch: int = 1
    opset: int = 17
    outputs: tuple[str, ...] = ("y",)


def node(op: str, ins: list[str], out: str = "y", **kw: Any) -> Any:
    return helper.make_node(op, ins, [out], **kw)


def conv(**kw: Any) -> list[Any]:
    return [node("Conv", ["x", "w", "b"], **kw)]


def unary(op: str, **kw: Any) -> Case:
    return Case(op if not kw else f"{op}-{'-'.join(map(str, kw.values()))}",
                [node("Conv", ["x", "w"], "c", pads=[1, 1, 1, 1]), node(op, ["c"], **kw)],
                inits={"w": rand(6, 4, 3, 3, seed=1) * 0.5})


CASES = [
    Case("Conv-pads", conv(pads=[1, 1, 1, 1]), inits={"w": rand(8, 4, 3, 3), "b": rand(8)}),
    Case("Conv-stride-asym-pads", conv(pads=[0, 1, 2, 1], strides=[2, 2]),
         inits={"w": rand(8, 4, 3, 3), "b": rand(8)}),
    Case("Conv-dilation", conv(dilations=[2, 2], pads=[2, 2, 2, 2]),
         inits={"w": rand(8, 4, 3, 3), "b": rand(8)}),
    Case("Conv-same-upper", conv(auto_pad="SAME_UPPER", strides=[2, 2]),
         inits={"w": rand(8, 4, 3, 3), "b": rand(8)}),
    Case("Conv-depthwise", conv(group=4, pads=[1, 1, 1, 1]),
         inits={"w": rand(4, 1, 3, 3), "b": rand(4)}),
    Case("Conv-depthwise-mult2", conv(group=4, strides=[2, 2]),
         inits={"w": rand(8, 1, 3, 3), "b": rand(8)}),
    Case("Conv-grouped", conv(group=2, pads=[1, 1, 1, 1]),
         inits={"w": rand(6, 2, 3, 3), "b": rand(6)}),
    Case("Conv-batch3", conv(), inits={"w": rand(5, 4, 1, 1), "b": rand(5)}, batch=3),
    Case("ConvTranspose-stride2", [node("ConvTranspose", ["x", "w", "b"], strides=[2, 2],
                                        pads=[1, 1, 1, 1], output_padding=[1, 1])],
         inits={"w": rand(4, 3, 3, 3), "b": rand(3)}),
    Case("ConvTranspose-grouped", [node("ConvTranspose", ["x", "w"], group=2, strides=[2, 2])],
         inits={"w": rand(4, 2, 2, 2)}),
    Case("MaxPool", [node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])]),
    Case("MaxPool-pads-ceil", [node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2],
                                    pads=[1, 1, 1, 1], ceil_mode=1)]),
    Case("AveragePool", [node("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2])]),
    Case("AveragePool-pads", [node("AveragePool", ["x"], kernel_shape=[3, 3],
                                   pads=[1, 1, 1, 1])]),
    Case("AveragePool-pads-include", [node("AveragePool", ["x"], kernel_shape=[3, 3],
                                           pads=[1, 1, 1, 1], count_include_pad=1)]),
    Case("GlobalAveragePool", [node("GlobalAveragePool", ["x"])]),
    unary("Relu"),
    unary("LeakyRelu", alpha=0.1),
    unary("Sigmoid"),
    unary("HardSigmoid", alpha=0.3, beta=0.4),
    unary("HardSwish"),
    unary("Tanh"),
    Case("Clip-relu6", [node("Conv", ["x", "w"], "c"), node("Clip", ["c", "lo", "hi"])],
         inits={"w": rand(6, 4, 1, 1, seed=2) * 4, "lo": np.float32(0), "hi": np.float32(6)}),
    Case("Clip-min-only", [node("Clip", ["x", "lo", ""])], inits={"lo": np.float32(-0.5)}),
    Case("Clip-opset6", [node("Clip", ["x"], min=-1.0, max=1.0)], opset=6),
    Case("Add-channel-const", [node("Conv", ["x", "w"], "c"), node("Add", ["c", "k"])],
         inits={"w": rand(6, 4, 1, 1), "k": rand(6, 1, 1)}),
    Case("Sub-scalar-first", [node("Sub", ["k", "x"])], inits={"k": np.float32(2.0)}),
    Case("Mul-two-inputs", [node("Mul", ["x", "z"])], inputs={"x": IMG, "z": ("N", 4, 1, 8)}),
    Case("Div-nhwc-by-plain", [node("MaxPool", ["x"], "p", kernel_shape=[1, 1]),
                               node("Div", ["p", "z"])],
         inputs={"x": IMG, "z": ("N", 4, 8, 8)}),
    Case("Gemm", [node("Gemm", ["x", "w", "b"], transB=1, alpha=0.5, beta=2.0)],
         inputs={"x": ("N", 16)}, inits={"w": rand(10, 16), "b": rand(10)}),
    Case("Gemm-batch4", [node("Gemm", ["x", "w", "b"])], inputs={"x": ("N", 16)},
         inits={"w": rand(16, 10), "b": rand(10)}, batch=4),
    Case("Gemm-two-inputs", [node("Gemm", ["x", "z"], transA=1)],
         inputs={"x": (16, 3), "z": (16, 5)}, batch=16),
    Case("MatMul-2d", [node("MatMul", ["x", "w"])], inputs={"x": ("N", 16)},
         inits={"w": rand(16, 7)}),
    Case("MatMul-3d", [node("MatMul", ["x", "w"])], inputs={"x": ("N", 5, 16)},
         inits={"w": rand(16, 7)}),
    Case("MatMul-batched", [node("MatMul", ["x", "z"])],
         inputs={"x": ("N", 2, 5, 6), "z": ("N", 2, 6, 3)}),
    Case("BatchNormalization", [node("BatchNormalization", ["x", "s", "b", "m", "v"])],
         inits={"s": rand(4) + 2, "b": rand(4), "m": rand(4), "v": np.abs(rand(4)) + 0.5}),
    Case("Conv-BatchNormalization-folded", [
        node("Conv", ["x", "w"], "c"), node("BatchNormalization", ["c", "s", "b", "m", "v"])],
         inits={"w": rand(4, 4, 3, 3), "s": rand(4) + 2, "b": rand(4), "m": rand(4),
                "v": np.abs(rand(4)) + 0.5}),
    Case("Reshape", [node("Reshape", ["x", "s"])], inits={"s": np.array([0, -1], np.int64)}),
    Case("Flatten-after-conv", [node("Conv", ["x", "w"], "c"), node("Flatten", ["c"])],
         inits={"w": rand(3, 4, 3, 3)}),
    Case("Squeeze-Unsqueeze", [node("GlobalAveragePool", ["x"], "g"),
                               node("Squeeze", ["g", "a"], "s"),
                               node("Unsqueeze", ["s", "b"])],
         inits={"a": np.array([2, 3], np.int64), "b": np.array([1], np.int64)}),
    Case("Concat-channels", [node("Conv", ["x", "w"], "c"), node("Concat", ["c", "x"], axis=1)],
         inits={"w": rand(3, 4, 1, 1)}),
    Case("Concat-const", [node("Concat", ["x", "k"], axis=2)], inits={"k": rand(1, 4, 2, 8)}),
    Case("Transpose-to-nhwc-and-back", [node("Transpose", ["x"], "t", perm=[0, 2, 3, 1]),
                                        node("Relu", ["t"], "r"),
                                        node("Transpose", ["r"], perm=[0, 3, 1, 2])]),
    Case("Transpose-2d", [node("Transpose", ["x"], perm=[1, 0])], inputs={"x": (3, 5)}, batch=3),
    Case("Pad-constant", [node("Pad", ["x", "p", "v"])],
         inits={"p": np.array([0, 0, 1, 2, 0, 1, 0, 3], np.int64), "v": np.float32(0.5)}),
    Case("Pad-after-conv", [node("Conv", ["x", "w"], "c"), node("Pad", ["c", "p"])],
         inits={"w": rand(3, 4, 1, 1), "p": np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64)}),
    Case("ReduceMean-spatial", [node("ReduceMean", ["x", "a"], keepdims=0)],
         inits={"a": np.array([2, 3], np.int64)}, opset=18),
    Case("ReduceMean-keepdims-attr", [node("ReduceMean", ["x"], axes=[1], keepdims=1)],
         opset=13),
    Case("Softmax", [node("Gemm", ["x", "w"], "g"), node("Softmax", ["g"])],
         inputs={"x": ("N", 16)}, inits={"w": rand(16, 10)}),
    Case("Softmax-channels-nhwc", [node("Conv", ["x", "w"], "c"), node("Softmax", ["c"], axis=1)],
         inits={"w": rand(5, 4, 1, 1)}),
    Case("Softmax-opset11-flatten", [node("Softmax", ["x"], axis=1)], opset=11),
    Case("Resize-nearest", [node("Resize", ["x", "", "s"], mode="nearest")],
         inits={"s": np.array([1, 1, 2, 3], np.float32)}),
    Case("Resize-nearest-asymmetric", [node("Resize", ["x", "", "", "z"], mode="nearest",
                                            coordinate_transformation_mode="asymmetric",
                                            nearest_mode="floor")],
         inits={"z": np.array([1, 4, 16, 16], np.int64)}),
    Case("Resize-bilinear", [node("Resize", ["x", "", "s"], mode="linear")],
         inits={"s": np.array([1, 1, 2, 2], np.float32)}),
    Case("Resize-bilinear-align-corners", [node("Resize", ["x", "", "", "z"], mode="linear",
                                                coordinate_transformation_mode="align_corners")],
         inits={"z": np.array([1, 4, 13, 11], np.int64)}),
    Case("Identity", [node("Identity", ["x"], "i"), node("Relu", ["i"])]),
    Case("Constant", [helper.make_node("Constant", [], ["k"], value_float=1.5),
                      node("Mul", ["x", "k"])]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_op_matches_onnxruntime(case: Case) -> None:
    model = graph(case.nodes, case.inputs, list(case.outputs), inits=case.inits, opset=case.opset)
    feeds = {}
    for i, (name, shape) in enumerate(case.inputs.items()):
        dims = [case.batch if isinstance(d, str) else d for d in shape]
        feeds[name] = rand(*dims, seed=10 + i)
    check(model, feeds, batch=case.batch)


def test_conv_relu_fuses_and_keeps_nhwc() -> None:
    model = graph([node("Conv", ["x", "w", "b"], "c", pads=[1, 1, 1, 1]),
                   node("Relu", ["c"], "r"),
                   node("Conv", ["r", "w2"], "c2", group=6, pads=[1, 1, 1, 1]),
                   node("Clip", ["c2", "lo", "hi"], "y")], {"x": IMG}, ["y"],
                  inits={"w": rand(6, 4, 3, 3), "b": rand(6), "w2": rand(6, 1, 3, 3),
                         "lo": np.float32(0), "hi": np.float32(6)})
    content = check(model, {"x": rand(1, 4, 8, 8)})
    assert op_names(content) == ["TRANSPOSE", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE"]
