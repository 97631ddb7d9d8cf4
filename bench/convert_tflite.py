"""TFLite converter benchmark (issue 4): our ONNX -> TFLite export and its int8 variants against
onnxruntime on the same source models, in one run.

For each model (a torch MLP on the digits, the small CNN, the MobileNet-style net, all trained
here) the pipeline converts twice with ``precision=auto`` over every candidate: once to TFLite
(fp32, int8-weight-only, int8-dynamic, int8-static) and once to ONNX (fp32, int8-dynamic,
int8-static: onnxruntime's latency baseline). Each candidate is validated against the fp32 ONNX
model run by onnxruntime on 1,000 inputs; latency is batch 1, one thread.

    .venv/bin/python bench/convert_tflite.py

Prints a table and a PASS/FAIL line per target; writes bench-out/convert_tflite.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import examples, sources  # noqa: E402
from converters.pipeline import ConvertRequest, convert  # noqa: E402
from converters.tflite.export import to_tflite  # noqa: E402
from converters.tflite.validate import count_ops  # noqa: E402
from converters.validate import CandidateReport  # noqa: E402
from edge_runtime.textable import render  # noqa: E402

TFLITE = ("fp32", "int8-weight-only", "int8-dynamic", "int8-static")
ORT_SAME = {"fp32": "fp32", "int8-weight-only": "fp32", "int8-dynamic": "int8-dynamic",
            "int8-static": "int8-static"}  # ORT has no weight-only int8: compare with its fp32


@dataclass
class Case:
    name: str
    source: sources.Source
    calib: np.ndarray
    valid: np.ndarray
    labels: np.ndarray


def build_cases() -> list[Case]:
    x, y = examples.digits()
    mlp = sources.from_torch(examples.trained_digits_torch_mlp(), (1, 64), description="mlp")
    cnn = sources.from_torch(examples.trained_digits_cnn(), (1, 1, 8, 8), description="cnn")
    mnet = sources.from_torch(examples.trained_mobilenet_style(), (1, 3, 32, 32),
                              description="mobilenet-style")
    xi, yi = examples.synthetic_images(1000, seed=1)
    ci, _ = examples.synthetic_images(256, seed=2)
    img = x.reshape(-1, 1, 8, 8)
    # 1,000 validation inputs each; calibration data is disjoint from them.
    return [
        Case("digits-mlp (torch)", mlp, x[1300:1556], x[:1000], y[:1000]),
        Case("small-cnn", cnn, img[1300:1556], img[:1000], y[:1000]),
        Case("mobilenet-style", mnet, ci, xi, yi),
    ]


def run_case(case: Case, tmp: Path) -> dict[str, Any]:
    calib, valid = tmp / f"{case.name}-c.npz", tmp / f"{case.name}-v.npz"
    np.savez(calib, input=case.calib)
    np.savez(valid, input=case.valid, labels=case.labels)
    out: dict[str, Any] = {}
    for target in ("tflite", "onnx"):
        req = ConvertRequest(name="bench", version=target, precision="auto", out_dir=tmp / "p",
                             signer=None, calibration=calib, validation=valid, target=target)
        logs: list[str] = []
        result = convert(case.source, req, log=logs.append)
        out[target] = {c.precision: _summary(c) for c in result.candidates}
        out[f"{target}_skipped"] = [m for m in logs if m.startswith("skipped")]
        out[f"{target}_chosen"] = result.chosen.precision
        result.package.unlink()
    out["fp32_transposes"] = count_ops(to_tflite(case.source.model), "TRANSPOSE")
    return out


def _summary(c: CandidateReport) -> dict[str, Any]:
    o = c.outputs[0]
    return {"size": c.size_bytes, "ratio": c.size_ratio, "b1_p50_ms": c.latency_ms["b1_p50"],
            "max_abs": o.max_abs, "agreement": o.top1_agreement, "accuracy": o.accuracy}


def report(results: dict[str, Any]) -> list[tuple[str, bool]]:
    rows, checks = [], []
    for model, res in results.items():
        for precision in TFLITE:
            t = res["tflite"].get(precision)
            ort_precision = ORT_SAME[precision]
            o = res["onnx"].get(ort_precision)
            if t is None:
                rows.append([model, precision, "missing", *[""] * 7])
                continue
            ort_ms = "-" if o is None else f"{o['b1_p50_ms']:.3f}"
            ort_label = ort_precision if ort_precision == precision else f"{ort_precision}*"
            rows.append([model, precision, f"{t['size'] / 1024:.1f} KB", f"{t['ratio']:.3f}",
                         f"{t['max_abs']:.2g}", f"{100 * (t['agreement'] or 0):.2f}%",
                         f"{100 * (t['accuracy'] or 0):.2f}%", f"{t['b1_p50_ms']:.3f}",
                         f"{ort_ms} ({ort_label})",
                         "" if o is None else f"{o['b1_p50_ms'] / t['b1_p50_ms']:.2f}x"])
        p = res["tflite"]
        checks.append((f"{model}: fp32 TFLite max-abs vs onnxruntime fp32 <= 1e-4 on 1,000 inputs "
                       f"({p['fp32']['max_abs']:.2g})", p["fp32"]["max_abs"] <= 1e-4))
        wo = p.get("int8-weight-only")
        checks.append((f"{model}: int8-weight-only size <= 0.30x fp32 "
                       f"({wo['ratio'] if wo else float('nan'):.3f})",
                       wo is not None and wo["ratio"] <= 0.30))
        st = p.get("int8-static")
        agree = st["agreement"] if st else 0.0
        checks.append((f"{model}: int8-static top-1 agreement with fp32 >= 98% "
                       f"({100 * agree:.2f}%)", st is not None and agree >= 0.98))
        if model == "mobilenet-style":
            n = res["fp32_transposes"]
            checks.append((f"{model}: transposes in the fp32 TFLite graph <= 2 ({n})", n <= 2))
    print(render(["model", "tflite precision", "size", "x fp32", "max-abs vs ORT fp32",
                  "top-1 agree", "accuracy", "TFLite b1 p50 ms", "ORT b1 p50 ms",
                  "ORT/TFLite"], rows))
    print("\n* onnxruntime has no weight-only int8: compared with its fp32")
    for model, res in results.items():
        print(f"{model}: auto chose {res['tflite_chosen']} (TFLite), {res['onnx_chosen']} (ONNX)"
              + "".join(f"; {m}" for m in res["tflite_skipped"] + res["onnx_skipped"]))
    return checks


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        results = {case.name: run_case(case, tmp) for case in build_cases()}
    checks = report(results)
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    out = ROOT / "bench-out"
    out.mkdir(exist_ok=True)
    (out / "convert_tflite.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
