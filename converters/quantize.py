"""ONNX precisions: fp16 (onnxconverter-common), int8 dynamic and int8 static QDQ (onnxruntime)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.data import Dataset
from converters.errors import CandidateFailed
from converters.onnx_model import opset
from converters.quiet import quiet

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Dynamic Conv quantization is 5-14x slower than fp32 on x86: MatMul/Gemm only by default.
DEFAULT_DYNAMIC_OPS = ("MatMul", "Gemm")
PER_CHANNEL_MIN_OPSET = 13


@dataclass(frozen=True)
class QuantOptions:
    dynamic_ops: tuple[str, ...] = DEFAULT_DYNAMIC_OPS
    calibration_method: str = "minmax"
    per_channel: bool = False
    calibration_samples: int = 256
    skip_symbolic_shape: bool = False
    static_ops: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_manifest(self, precision: str) -> dict[str, Any]:
        if precision == "int8-dynamic":
            return {"op_types": list(self.dynamic_ops)}
        if precision == "int8-static":
            return {"calibration_method": self.calibration_method,
                    "per_channel": self.per_channel,
                    "calibration_samples": self.calibration_samples,
                    "quant_format": "QDQ"}
        if precision == "fp16":
            return {"keep_io_types": True}
        return {}


def to_fp16(model: Any) -> Any:
    from onnxconverter_common import float16

    try:
        with quiet():  # warns "number will be truncated" once per tiny weight
            converted = float16.convert_float_to_float16(_drop_noop_casts(model),
                                                             keep_io_types=True)
    except Exception as exc:
        raise CandidateFailed("fp16", f"onnxconverter-common failed ({exc})") from exc
    return _raw_initializers(converted)


def _raw_initializers(model: Any) -> Any:
    """fp16 tensors written as int32_data cost a varint per value: store them as raw bytes."""
    from onnx import numpy_helper

    for i, tensor in enumerate(model.graph.initializer):
        if not tensor.HasField("raw_data"):
            model.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
    return model


def _drop_noop_casts(model: Any) -> Any:
    """Remove Cast(to=float) applied to a float graph input (skl2onnx emits one). The fp16
    converter drops such a cast without inserting its own input cast, leaving float32 to meet
    float16 weights. Without the no-op cast it inserts the input cast properly."""
    import onnx
    from onnx import TensorProto

    model = onnx.ModelProto.FromString(model.SerializeToString())
    float_inputs = {i.name for i in model.graph.input
                    if i.type.tensor_type.elem_type == TensorProto.FLOAT}
    outputs = {o.name for o in model.graph.output}
    for node in list(model.graph.node):
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if (node.op_type != "Cast" or to != TensorProto.FLOAT or node.input[0] not in float_inputs
                or node.output[0] in outputs):
            continue
        for other in model.graph.node:
            other.input[:] = [node.input[0] if x == node.output[0] else x for x in other.input]
        model.graph.node.remove(node)
    return model


def _upgraded(model: Any, min_opset: int) -> Any:
    """Per-channel quantization on opset < 13 can produce an invalid graph: upgrade first."""
    import onnx

    if opset(model) >= min_opset:
        return model
    try:
        return onnx.version_converter.convert_version(model, min_opset)
    except Exception as exc:
        raise CandidateFailed("int8", f"cannot upgrade opset {opset(model)} -> {min_opset} "
                              f"({exc})") from exc


def to_int8_dynamic(model: Any, opts: QuantOptions) -> Any:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        try:
            with quiet():
                quantize_dynamic(src, dst, op_types_to_quantize=list(opts.dynamic_ops),
                                 weight_type=QuantType.QInt8, per_channel=opts.per_channel)
        except Exception as exc:
            raise CandidateFailed("int8-dynamic", f"quantize_dynamic failed ({exc})") from exc
        return onnx.load(dst)


def _bias_workaround(opts: QuantOptions) -> dict[str, Any]:
    """onnxruntime's per-channel weight-scale adjustment for int32 bias indexes a 2-D bias as if
    it were 1-D and crashes (seen with skl2onnx MLPs, ORT 1.32): skip that adjustment there."""
    return {"QDQDisableWeightAdjustForInt32Bias": True} if opts.per_channel else {}


class _Reader:
    """onnxruntime CalibrationDataReader over a Dataset, in small batches."""

    def __init__(self, data: Dataset, batch: int) -> None:
        self._data, self._batch = data, batch
        self._it: Iterator[dict[str, Any]] = self._batches()

    def _batches(self) -> Iterator[dict[str, Any]]:
        for start in range(0, self._data.n, self._batch):
            yield {k: v[start:start + self._batch] for k, v in self._data.inputs.items()}

    def get_next(self) -> dict[str, Any] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._batches()


def to_int8_static(model: Any, calibration: Dataset, opts: QuantOptions, *,
                   batch: int = 1) -> Any:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[opts.calibration_method]
    model = _upgraded(model, PER_CHANNEL_MIN_OPSET) if opts.per_channel else model
    data = calibration.head(opts.calibration_samples)
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("in.onnx", "pre.onnx", "out.onnx"))
        onnx.save(model, src)
        try:
            # On a failed symbolic shape inference onnxruntime saves sym_shape_infer_temp.onnx
            # into the working directory: let that land in the temporary one.
            with quiet(), contextlib.chdir(tmp):
                quant_pre_process(src, pre, skip_symbolic_shape=opts.skip_symbolic_shape)
        except Exception as exc:
            hint = "" if opts.skip_symbolic_shape else " (try --skip-symbolic-shape)"
            raise CandidateFailed("int8-static", f"quant_pre_process failed: {exc}{hint}") from exc
        try:
            with quiet():
                quantize_static(
                    pre, dst, _Reader(data, batch), quant_format=QuantFormat.QDQ,
                    per_channel=opts.per_channel, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=method,
                    op_types_to_quantize=list(opts.static_ops) if opts.static_ops else None,
                    extra_options={"ActivationSymmetric": False, **_bias_workaround(opts),
                                   **opts.extra},
                )
        except Exception as exc:
            raise CandidateFailed("int8-static", f"quantize_static failed ({exc})") from exc
        return onnx.load(dst)
