"""Source -> candidates (fp32, fp16, int8) -> validation -> choice -> signed package."""

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
    fp32_bytes = source.model.SerializeToString()
    sess = onnx_model.session(fp32_bytes, threads=req.threads)
    in_specs, out_specs = onnx_model.specs(sess)
    calib, valid = _load_data(req, in_specs)
    if req.precision == "int8-static" and calib is None:
        raise CalibrationRequired(req.precision)

    fp32, reference = measure("fp32", fp32_bytes, valid, None, req.budget,
                              fp32_size=len(fp32_bytes), batch_n=req.batch_n, threads=req.threads)
    candidates, models = [fp32], {"fp32": fp32_bytes}
    for precision in _wanted(req, calib is not None, log):
        try:
            model_bytes = _build(precision, source.model, calib, req).SerializeToString()
            report, _ = measure(precision, model_bytes, valid, reference, req.budget,
                                fp32_size=len(fp32_bytes), batch_n=req.batch_n,
                                threads=req.threads)
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
    wanted = [p for p in req.auto_candidates if p != "fp32"]
    if "int8-static" in wanted and not has_calibration:
        log("auto: no calibration data, so no int8-static candidate")
        wanted.remove("int8-static")
    return wanted


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
        chosen = choose(candidates, req.budget, req.auto_candidates)
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
    return Manifest(
        name=req.name, version=req.version, format="onnx", precision=chosen.precision,
        model_file="model.onnx", inputs=io[0], outputs=io[1], files={},
        source=source.to_manifest(),
        converter={"name": "edge-runtime", "version": __version__, "libraries": _libraries()},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        task="classification" if is_class else "regression",
        options={"precision_requested": req.precision,
                 "quantization": req.quant.to_manifest(chosen.precision),
                 "budget": report["budget"], "batch_n": req.batch_n},
    )


def _libraries() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for dist in ("onnx", "onnxruntime", "onnxconverter-common", "skl2onnx", "scikit-learn",
                 "torch", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions
