"""Source -> candidates (fp32, fp16, int8) -> validation -> choice -> signed package.

The target format is ONNX (onnxruntime quantization) or TFLite (``converters.tflite``); both are
validated against the fp32 ONNX source run by onnxruntime, and packaged the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from converters import data as datamod
from converters import onnx_model, quantize
from converters.errors import CalibrationRequired, ConversionError, UnsupportedOps
from converters.sources import Source
from converters.validate import Budget, CandidateReport, is_class_output, measure, within_budget
from edge_runtime import __version__
from edge_runtime.manifest import Manifest, TensorSpec, validate_name
from edge_runtime.package import REFERENCE_STATS, VALIDATION, sha256_bytes, write_package
from edge_runtime.refstats import compute_reference_stats
from edge_runtime.signing import Signer

ONNX_PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")
TFLITE_PRECISIONS = ("fp32", "int8-weight-only", "int8-dynamic", "int8-static")
PRECISIONS = {"onnx": ONNX_PRECISIONS, "tflite": TFLITE_PRECISIONS}
TARGETS = tuple(PRECISIONS)
AUTO = "auto"
Log = Callable[[str], None]


@dataclass(frozen=True)
class ConvertRequest:
    name: str
    version: str
    precision: str
    out_dir: Path
    signer: Signer | None
    calibration: Path | None = None
    validation: Path | None = None
    label_column: str | None = None
    quant: quantize.QuantOptions = field(default_factory=quantize.QuantOptions)
    budget: Budget = field(default_factory=Budget)
    batch_n: int = 32
    validation_samples: int = 1000
    threads: int = 1
    auto_candidates: tuple[str, ...] = ONNX_PRECISIONS
    target: str = "onnx"  # onnx | tflite
    tflite_batch: int = 1  # the batch dimension a TFLite export fixes


@dataclass(frozen=True)
class ConvertResult:
    package: Path
    manifest: Manifest
    chosen: CandidateReport
    candidates: list[CandidateReport]
    report: dict[str, Any]


def convert(source: Source, req: ConvertRequest, *, log: Log = print) -> ConvertResult:
    validate_name("name", req.name)
    validate_name("version", req.version)
    bad = onnx_model.unknown_ops(source.model)
    if bad:
        raise UnsupportedOps(bad)
    onnx_bytes = source.model.SerializeToString()
    sess = onnx_model.session(onnx_bytes, threads=req.threads)
    in_specs, out_specs = onnx_model.specs(sess)
    target = _target(req)
    fp32_bytes = target.fp32(source.model, req)  # before the data: op problems come first
    calib, valid = _load_data(req, in_specs)
    if req.precision == "int8-static" and calib is None:
        raise CalibrationRequired(req.precision)

    source_fp32, reference = measure("fp32", onnx_bytes, valid, None, req.budget,
                                     fp32_size=len(onnx_bytes), batch_n=req.batch_n,
                                     threads=req.threads)
    fp32 = source_fp32
    if target.name != "onnx":
        fp32 = _measure(target, "fp32", fp32_bytes, valid=valid, reference=reference, req=req,
                        fp32_size=len(fp32_bytes))
        fp32.within_budget = within_budget(fp32.outputs, source_fp32.outputs, req.budget)
    candidates, models = [fp32], {"fp32": fp32_bytes}
    for precision in _wanted(req, calib is not None, log):
        try:
            model_bytes = target.build(precision, source.model, fp32_bytes, calib, req)
            report = _measure(target, precision, model_bytes, valid=valid, reference=reference,
                              req=req, fp32_size=len(fp32_bytes))
        except ConversionError as exc:
            if req.precision != AUTO:
                raise
            log(f"skipped {precision}: {exc}")
            continue
        report.within_budget = within_budget(report.outputs, fp32.outputs, req.budget)
        candidates.append(report)
        models[precision] = model_bytes
    chosen = _choose(req, candidates, log)
    summary = _report(req, valid, candidates, chosen)
    refstats = compute_reference_stats(valid.inputs, reference, in_specs, out_specs)
    refstats["synthetic"] = valid.source == "synthetic"
    manifest = _manifest(source, req, chosen, (in_specs, out_specs), summary,
                         is_class=_is_class(reference, req.budget.task))
    members = {
        manifest.model_file: models[chosen.precision],
        VALIDATION: json.dumps(summary, indent=1, sort_keys=True).encode(),
        REFERENCE_STATS: json.dumps(refstats, separators=(",", ":")).encode(),
    }
    manifest = replace(manifest, files={k: sha256_bytes(v) for k, v in members.items()})
    package = write_package(req.out_dir, manifest, members, signer=req.signer)
    return ConvertResult(package, manifest, chosen, candidates, summary)


@dataclass(frozen=True)
class Target:
    """How one model format is built and loaded; validation and packaging are shared."""

    name: str  # the manifest format
    model_file: str
    fp32: Callable[[Any, ConvertRequest], bytes]
    build: Callable[[str, Any, bytes, datamod.Dataset | None, ConvertRequest], bytes]
    session: Callable[[bytes, int, str], Any] | None  # None: onnxruntime
    libraries: tuple[str, ...] = ()
    quantization: Callable[[str, ConvertRequest], dict[str, Any]] | None = None  # for manifests


ONNX_TARGET = Target(
    "onnx", "model.onnx", fp32=lambda model, _req: bytes(model.SerializeToString()),
    build=lambda precision, model, _fp32, calib, req: bytes(
        _build(precision, model, calib, req).SerializeToString()),
    session=None)


def _target(req: ConvertRequest) -> Target:
    if req.target == "onnx":
        return ONNX_TARGET
    if req.target == "tflite":
        from converters.tflite.target import TFLITE_TARGET

        return TFLITE_TARGET
    raise ConversionError(f"unknown target {req.target!r} (use {' or '.join(TARGETS)})")


def _measure(target: Target, precision: str, model_bytes: bytes, *, valid: datamod.Dataset,
             reference: dict[str, Any], req: ConvertRequest, fp32_size: int) -> CandidateReport:
    session = (None if target.session is None
               else target.session(model_bytes, req.threads, precision))
    report, _ = measure(precision, model_bytes, valid, reference, req.budget,
                        fp32_size=fp32_size, batch_n=req.batch_n, threads=req.threads,
                        session=session)
    return report


def _load_data(req: ConvertRequest, specs: tuple[TensorSpec, ...]
               ) -> tuple[datamod.Dataset | None, datamod.Dataset]:
    calib = None
    if req.calibration is not None:
        calib = datamod.check_calibration(
            datamod.load(req.calibration, specs, label_column=req.label_column))
    if req.validation is not None:
        valid = datamod.load(req.validation, specs, label_column=req.label_column)
    else:
        valid = calib if calib is not None else datamod.synthetic(specs, 256)
    return calib, valid.head(req.validation_samples)


def _wanted(req: ConvertRequest, has_calibration: bool, log: Log) -> list[str]:
    if req.precision == "fp32":
        return []
    if req.precision != AUTO:
        return [req.precision]
    wanted = [p for p in _auto_candidates(req) if p != "fp32"]
    if "int8-static" in wanted and not has_calibration:
        log("auto: no calibration data, so no int8-static candidate")
        wanted.remove("int8-static")
    return wanted


def _auto_candidates(req: ConvertRequest) -> tuple[str, ...]:
    """``req.auto_candidates``; the ONNX default means "all of the target's precisions"."""
    if req.target != "onnx" and req.auto_candidates == ONNX_PRECISIONS:
        return PRECISIONS[req.target]
    return req.auto_candidates


def _build(precision: str, model: Any, calib: datamod.Dataset | None,
           req: ConvertRequest) -> Any:
    if precision == "fp16":
        return quantize.to_fp16(model)
    if precision == "int8-dynamic":
        return quantize.to_int8_dynamic(model, req.quant)
    if precision == "int8-static":
        if calib is None:
            raise CalibrationRequired(precision)
        return quantize.to_int8_static(model, calib, req.quant)
    raise ConversionError(f"unknown ONNX precision {precision!r} (use {ONNX_PRECISIONS} or auto)")


def _choose(req: ConvertRequest, candidates: list[CandidateReport], log: Log) -> CandidateReport:
    from converters.auto import choose

    if req.precision == AUTO:
        chosen = choose(candidates, req.budget, _auto_candidates(req))
    else:
        chosen = next(c for c in candidates if c.precision == req.precision)
        chosen.reason = "requested"
        if not chosen.within_budget:
            log(f"warning: {chosen.precision} is outside the accuracy budget "
                f"({req.budget.describe()}); packaged because it was requested")
    chosen.chosen = True
    log(f"chose {chosen.precision}: {chosen.reason}")
    return chosen


def _is_class(reference: dict[str, Any], task: str) -> bool:
    return any(is_class_output(v, task) for v in reference.values())


def _report(req: ConvertRequest, valid: datamod.Dataset, candidates: list[CandidateReport],
            chosen: CandidateReport) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "reference": "fp32 onnxruntime",
        "target": req.target,
        "data": valid.source,
        "samples": valid.n,
        "batch_n": req.batch_n,
        "budget": {"max_accuracy_drop": req.budget.max_accuracy_drop,
                   "max_abs_error": req.budget.max_abs_error,
                   "description": req.budget.describe()},
        "chosen": chosen.precision,
        "reason": chosen.reason,
        "candidates": [c.to_dict() for c in candidates],
    }


def _manifest(source: Source, req: ConvertRequest, chosen: CandidateReport,
              io: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]],
              report: dict[str, Any], *, is_class: bool) -> Manifest:
    """The manifest without file hashes (filled in once the members exist)."""
    target = _target(req)
    options: dict[str, Any] = {}
    quantization = req.quant.to_manifest(chosen.precision)
    if target.quantization is not None:
        quantization = target.quantization(chosen.precision, req)
    if target.name == "tflite":
        options["tflite_batch"] = req.tflite_batch
    return Manifest(
        name=req.name, version=req.version, format="tflite" if target.name == "tflite" else "onnx",
        precision=chosen.precision, model_file=target.model_file, inputs=io[0], outputs=io[1],
        files={}, source=source.to_manifest(),
        converter={"name": "edge-runtime", "version": __version__,
                   "libraries": _libraries(target.libraries)},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        task="classification" if is_class else "regression",
        options={"precision_requested": req.precision,
                 "quantization": quantization,
                 "budget": report["budget"], "batch_n": req.batch_n, **options},
    )


def _libraries(extra: tuple[str, ...] = ()) -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for dist in ("onnx", "onnxruntime", "onnxconverter-common", "skl2onnx", "scikit-learn",
                 "torch", "numpy", *extra):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions
