"""Converter benchmark: package sizes, agreement and latency per precision, `auto`'s choice, and
the time to convert + validate a 5 MB model. Baselines in the same run: the fp32 package (sizes),
and onnxruntime's default dynamic quantization (all op types, Conv included) for latency.

    .venv/bin/python bench/convert.py [--quick]

Prints tables and a PASS/FAIL line per target; writes bench-out/convert.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import examples, onnx_model, sources  # noqa: E402
from converters.data import Dataset  # noqa: E402
from converters.pipeline import ConvertRequest, convert  # noqa: E402
from converters.validate import latency  # noqa: E402
from edge_runtime.textable import render  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")


@dataclass
class Case:
    name: str
    source: sources.Source
    calib: np.ndarray
    valid: np.ndarray
    labels: np.ndarray | None


def build_cases(quick: bool) -> list[Case]:
    x, y = examples.digits()
    mlp = sources.from_sklearn(examples.train_digits_mlp(), description="digits-mlp")
    cnn = sources.from_torch(examples.trained_digits_cnn(), (1, 1, 8, 8), description="cnn")
    xi, yi = examples.synthetic_images(1400 if not quick else 600, seed=1)
    mnet = sources.from_torch(examples.trained_mobilenet_style(), (1, 3, 32, 32),
                              description="mobilenet-style")
    img = x.reshape(-1, 1, 8, 8)
    return [
        Case("digits-mlp", mlp, x[:500], x[1300:], y[1300:]),
        Case("small-cnn", cnn, img[:500], img[1300:], y[1300:]),
        Case("mobilenet-style", mnet, xi[:300], xi[-400:], yi[-400:]),
    ]


def write_data(tmp: Path, case: Case) -> tuple[Path, Path]:
    name = case.source.model.graph.input[0].name
    calib, valid = tmp / f"{case.name}-calib.npz", tmp / f"{case.name}-valid.npz"
    np.savez(calib, **{name: case.calib})
    extra = {} if case.labels is None else {"labels": case.labels}
    np.savez(valid, **{name: case.valid}, **extra)
    return calib, valid


def run_case(case: Case, tmp: Path) -> dict[str, Any]:
    calib, valid = write_data(tmp, case)
    out: dict[str, Any] = {"precisions": {}}
    for precision in (*PRECISIONS, "auto"):
        req = ConvertRequest(name=case.name, version=precision, precision=precision,
                             out_dir=tmp / "pkgs", signer=None, calibration=calib,
                             validation=valid)
        result = convert(case.source, req, log=lambda _m: None)
        chosen = result.chosen
        out["precisions"][precision] = {
            "chosen": chosen.precision,
            "package_bytes": result.package.stat().st_size,
            "model_bytes": chosen.size_bytes,
            "top1_agreement": min(o.top1_agreement or 1.0 for o in chosen.outputs),
            "accuracy": next((o.accuracy for o in chosen.outputs if o.accuracy is not None),
                             None),
            "b1_p50_ms": chosen.latency_ms["b1_p50"],
            "b32_p50_ms": chosen.latency_ms["b32_p50"],
            "within_budget": chosen.within_budget,
            "reason": chosen.reason,
            "auto_candidates_within": {c.precision: c.within_budget for c in result.candidates},
        }
    out["ort_default_dynamic"] = ort_default_dynamic(case)
    return out


def ort_default_dynamic(case: Case) -> dict[str, float]:
    """Baseline: quantize_dynamic with onnxruntime's defaults (every op type, Conv included)."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(case.source.model, src)
        quantize_dynamic(src, dst)
        sess = onnx_model.session(dst.read_bytes())
    name = sess.get_inputs()[0].name
    data = Dataset({name: case.valid}, None, "bench")
    return {"b1_p50_ms": latency(sess, data, 1)[0], "b32_p50_ms": latency(sess, data, 32)[0]}


def five_mb_timing(tmp: Path) -> dict[str, Any]:
    """Convert + validate a ~5 MB fp32 model from its .onnx file, `auto` over every candidate."""
    x, y = examples.digits()
    module = examples.train_torch(examples.torch_mlp(hidden=1100), x[:1300], y[:1300], epochs=3)
    src = sources.from_torch(module, (1, 64), description="mlp-1100")
    path = tmp / "mlp5mb.onnx"
    path.write_bytes(src.model.SerializeToString())
    np.savez(tmp / "c.npz", input=x[:500])
    np.savez(tmp / "v.npz", input=x[1300:], labels=y[1300:])
    t0 = time.perf_counter()
    source = sources.from_onnx_file(path)
    req = ConvertRequest(name="mlp5mb", version="1", precision="auto", out_dir=tmp / "p5",
                         signer=None, calibration=tmp / "c.npz", validation=tmp / "v.npz")
    result = convert(source, req, log=lambda _m: None)
    seconds = time.perf_counter() - t0
    return {"fp32_bytes": path.stat().st_size, "seconds": seconds,
            "chosen": result.chosen.precision}


def report(results: dict[str, Any], five: dict[str, Any]) -> list[tuple[str, bool]]:
    rows, checks = [], []
    for model, res in results.items():
        base = res["precisions"]["fp32"]["package_bytes"]
        for precision, r in res["precisions"].items():
            label = precision if precision != "auto" else f"auto -> {r['chosen']}"
            rows.append([model, label, f"{r['package_bytes'] / 1024:.1f} KB",
                         f"{r['package_bytes'] / base:.3f}", f"{r['model_bytes'] / 1024:.1f} KB",
                         f"{100 * r['top1_agreement']:.2f}%",
                         "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%",
                         f"{r['b1_p50_ms']:.3f}", f"{r['b32_p50_ms']:.3f}",
                         "ok" if r["within_budget"] else "OUT"])
        ort = res["ort_default_dynamic"]
        ours = res["precisions"]["int8-dynamic"]
        rows.append([model, "baseline: ORT dynamic, all ops", "", "", "", "", "",
                     f"{ort['b1_p50_ms']:.3f}", f"{ort['b32_p50_ms']:.3f}",
                     f"ours {ort['b1_p50_ms'] / ours['b1_p50_ms']:.2f}x faster"])
        p = res["precisions"]
        checks.append((f"{model}: int8-static package <= 0.30x fp32",
                       p["int8-static"]["package_bytes"] <= 0.30 * base))
        checks.append((f"{model}: fp16 package <= 0.52x fp32",
                       p["fp16"]["package_bytes"] <= 0.52 * base))
        if model in ("digits-mlp", "small-cnn"):
            checks.append((f"{model}: int8-static top-1 agreement >= 99%",
                           p["int8-static"]["top1_agreement"] >= 0.99))
        checks.append((f"{model}: auto chose {p['auto']['chosen']} within budget",
                       p["auto"]["within_budget"]))
    print(render(["model", "precision", "package", "x fp32", "model file", "top-1 agree",
                  "accuracy", "b1 p50 ms", "b32 p50 ms", "budget"], rows))
    print(f"\n5 MB model ({five['fp32_bytes'] / 1e6:.2f} MB fp32): convert + validate with auto "
          f"(4 candidates) took {five['seconds']:.1f} s, chose {five['chosen']}")
    checks.append(("5 MB model convert + validate <= 15 s", five["seconds"] <= 15.0))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller training sets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        results = {case.name: run_case(case, tmp) for case in build_cases(args.quick)}
        five = five_mb_timing(tmp)
    checks = report(results, five)
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    out = ROOT / "bench-out"
    out.mkdir(exist_ok=True)
    (out / "convert.json").write_text(json.dumps({"models": results, "five_mb": five},
                                                 indent=1, default=str))


if __name__ == "__main__":
    main()
