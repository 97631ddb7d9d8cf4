"""`edgectl convert`: source model -> validated, signed package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from converters import sources
from converters.pipeline import AUTO, PRECISIONS, TARGETS, ConvertRequest, convert
from converters.quantize import CALIBRATION_METHODS, DEFAULT_DYNAMIC_OPS, QuantOptions
from converters.report import table
from converters.validate import Budget
from edge_runtime.errors import ConfigError
from edge_runtime.signing import Signer

_PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
_ALL_PRECISIONS = list(dict.fromkeys([*PRECISIONS["onnx"], *PRECISIONS["tflite"], AUTO]))


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def load_source(source: str, kind: str | None, input_shape: str | None) -> sources.Source:
    kind = kind or _guess_kind(source)
    if kind == "onnx":
        return sources.from_onnx_file(source)
    if kind == "sklearn":
        path = Path(source)
        estimator = sources.load_pickled_estimator(path)
        from edge_runtime.package import sha256_file

        return sources.from_sklearn(estimator, description=path.name,
                                    file_sha=sha256_file(path))
    if input_shape is None:
        raise ConfigError("a PyTorch source needs --input-shape, e.g. 1,3,224,224")
    module = sources.load_torch_factory(source)
    return sources.from_torch(module, sources.parse_shape(input_shape), description=source)


def _guess_kind(source: str) -> str:
    suffix = Path(source).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in _PICKLE_SUFFIXES:
        return "sklearn"
    if ":" in source and not Path(source).exists():
        return "torch"
    raise ConfigError(f"cannot tell what {source!r} is: use --source-kind onnx|sklearn|torch")


@click.command("convert")
@click.argument("source")
@click.option("--name", required=True, help="Model name in the package.")
@click.option("--version", "version", required=True, help="Model version, e.g. 3 or 1.2.0.")
@click.option("--to", "target", type=click.Choice(TARGETS), default="onnx", show_default=True,
              help="Model format to package.")
@click.option("--precision", type=click.Choice(_ALL_PRECISIONS), default="fp32",
              show_default=True, help="onnx: fp32, fp16, int8-dynamic, int8-static; tflite: "
              "fp32, int8-weight-only, int8-dynamic, int8-static; or auto.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("."),
              show_default=True, help="Directory for NAME-VERSION.edgepkg.")
@click.option("--source-kind", type=click.Choice(["onnx", "sklearn", "torch"]), default=None,
              help="Default: from the file suffix; MODULE:FACTORY means torch.")
@click.option("--input-shape", default=None, help="PyTorch example input shape, e.g. 1,3,32,32.")
@click.option("--calibration-data", type=click.Path(path_type=Path), default=None)
@click.option("--validation-data", type=click.Path(path_type=Path), default=None)
@click.option("--label-column", default=None, help="CSV column holding labels.")
@click.option("--calibration-method", type=click.Choice(CALIBRATION_METHODS), default="minmax",
              show_default=True)
@click.option("--calibration-samples", type=click.IntRange(min=1), default=256,
              show_default=True)
@click.option("--per-channel", is_flag=True, help="Per-channel int8 weights (upgrades opset).")
@click.option("--skip-symbolic-shape", is_flag=True,
              help="For models where quant_pre_process's symbolic shape inference crashes.")
@click.option("--dynamic-ops", default=",".join(DEFAULT_DYNAMIC_OPS), show_default=True,
              help="Op types int8-dynamic quantizes.")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=1.0,
              show_default=True, help="Points of top-1 agreement/accuracy a candidate may lose.")
@click.option("--max-abs-error", type=click.FloatRange(min=0), default=None,
              help="Regressors: max-abs error allowed (default 1% of the fp32 output std).")
@click.option("--task", type=click.Choice(["auto", "classification", "regression"]),
              default="auto", show_default=True,
              help="auto: 2-D float outputs with >= 2 columns are class scores.")
@click.option("--candidates", default=None,
              help="Precisions `auto` may choose from (default: all of the target's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Batch N for the latency measurement.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--tflite-batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="The batch dimension a TFLite export fixes (the runtime serves any number "
              "of rows in chunks of it).")
@click.option("--key", type=click.Path(path_type=Path), default=None,
              help="Ed25519 private key to sign the package with.")
@click.option("--unsigned", is_flag=True, help="Write an unsigned package (development only).")
@click.option("--json", "as_json", is_flag=True, help="Print the validation report as JSON.")
def convert_cmd(source: str, **kw: Any) -> None:
    """Convert SOURCE (.onnx, a joblib/pickle scikit-learn estimator, or MODULE:FACTORY for
    PyTorch) into a validated, signed model package."""
    if kw["key"] is None and not kw["unsigned"]:
        raise ConfigError("pass --key FILE to sign the package (or --unsigned for development)")
    allowed = PRECISIONS[kw["target"]]
    if kw["precision"] not in (*allowed, AUTO):
        raise ConfigError(f"--to {kw['target']} has no precision {kw['precision']}; choose from "
                          f"{', '.join(allowed)} or auto")
    candidates = _csv(kw["candidates"]) if kw["candidates"] is not None else allowed
    unknown = set(candidates) - set(allowed)
    if unknown:
        raise ConfigError(f"unknown candidates {sorted(unknown)}; choose from {allowed}")
    signer = Signer.load(kw["key"]) if kw["key"] is not None else None
    src = load_source(source, kw["source_kind"], kw["input_shape"])
    req = ConvertRequest(
        name=kw["name"], version=kw["version"], precision=kw["precision"], out_dir=kw["out_dir"],
        signer=signer, calibration=kw["calibration_data"], validation=kw["validation_data"],
        label_column=kw["label_column"],
        quant=QuantOptions(dynamic_ops=_csv(kw["dynamic_ops"]),
                           calibration_method=kw["calibration_method"],
                           per_channel=kw["per_channel"],
                           calibration_samples=kw["calibration_samples"],
                           skip_symbolic_shape=kw["skip_symbolic_shape"]),
        budget=Budget(kw["max_accuracy_drop"], kw["max_abs_error"], kw["task"]),
        batch_n=kw["batch_size"], threads=kw["threads"], auto_candidates=candidates,
        target=kw["target"], tflite_batch=kw["tflite_batch"],
    )
    log = (lambda m: click.echo(m, err=True)) if kw["as_json"] else click.echo
    result = convert(src, req, log=log)
    if kw["as_json"]:
        click.echo(json.dumps({"package": str(result.package), **result.report}, indent=1))
        return
    click.echo(table(result.candidates, req.batch_n))
    click.echo(f"wrote {result.package}" + ("" if signer else " (UNSIGNED)"))
