"""The TFLite target of the conversion pipeline: fp32 export, int8 variants, loading for
validation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from converters.data import Dataset
from converters.errors import ConversionError

if TYPE_CHECKING:
    from converters.pipeline import ConvertRequest, Target


def fp32(model: Any, req: ConvertRequest) -> bytes:
    from converters.tflite.export import to_tflite

    return to_tflite(model, batch=req.tflite_batch)


def build(precision: str, _model: Any, fp32_bytes: bytes, calib: Dataset | None,
          req: ConvertRequest) -> bytes:
    from converters.tflite.quantize import PRECISIONS, quantize

    if precision not in PRECISIONS:
        raise ConversionError(f"unknown TFLite precision {precision!r} (use fp32, "
                              f"{', '.join(PRECISIONS)} or auto)")
    return quantize(precision, fp32_bytes, calib, batch=req.tflite_batch,
                    calibration_samples=req.quant.calibration_samples)


def session(content: bytes, threads: int, label: str) -> Any:
    from converters.tflite.validate import TfliteSession

    return TfliteSession(content, threads=threads, label=label)


def quantization(precision: str, req: ConvertRequest) -> dict[str, Any]:
    if precision == "fp32":
        return {}
    recipe = {"int8-weight-only": "weight_only_wi8_afp32 (conv_2d per-tensor)",
              "int8-dynamic": "dynamic_wi8_afp32", "int8-static": "static_wi8_ai8"}[precision]
    out: dict[str, Any] = {"tool": "ai-edge-quantizer", "recipe": recipe, "float_io": True}
    if precision == "int8-static":
        out.update(calibration="min_max", calibration_samples=req.quant.calibration_samples)
    return out


def _target() -> Target:
    from converters.pipeline import Target

    return Target("tflite", "model.tflite", fp32=fp32, build=build, session=session,
                  libraries=("litert-converter", "ai-edge-quantizer", "ai-edge-litert"),
                  quantization=quantization)


TFLITE_TARGET = _target()
