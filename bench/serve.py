"""Serving benchmark (issue 3): the daemon against two baselines in the same run.

    .venv/bin/python bench/serve.py [--quick] [--seconds S] [--reps N] [--pairs P]

Servers, each pinned to core 0 (``taskset -c 0``) with one intra-op thread; ``wrk`` on core 1:

    flask        the seed's pattern (bench/serve_baselines.py): request.json -> numpy ->
                 session.run -> jsonify, on werkzeug's threaded development server (`app.run()`)
    asgi-ref     a minimal raw ASGI app on uvicorn (uvloop, httptools, orjson): V2 JSON in,
                 session.run, V2 JSON out, nothing else
    ours         `edge-runtime serve`, V2 JSON infer, validation + monitoring + drift on
    ours-nomon   the same with --no-monitoring --no-drift
    ours-batch16 / ours-cache   --max-batch-size 16 / --cache-entries 1000 (c=64 only)

The monitoring cost is judged on --pairs back-to-back pairs of ours / ours-nomon runs at
c=64 (at least 3 s each; which goes first alternates; both daemons started anew for each
pair): the median of the pairs' ratios.

Models: the scikit-learn digits MLP and the small digits CNN (fp32 packages), and a tiny
1x3x224x224 model (GlobalAveragePool + Flatten + Gemm) for the binary-vs-JSON codec comparison.
Every cell is the median of --reps runs of --seconds each, servers interleaved within a rep.
Prints tables and a PASS/FAIL line per target; writes bench-out/serve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serve_harness import Server, measure, paired, serve_all  # noqa: E402
from converters import examples, sources  # noqa: E402
from converters.pipeline import ConvertRequest, convert  # noqa: E402
from edge_runtime.runtime import Runtime  # noqa: E402
from edge_runtime.textable import render  # noqa: E402

PY = sys.executable
CONNS = (1, 8, 64)
MAIN = ("flask", "asgi-ref", "ours", "ours-nomon")
EXTRA = {"ours-batch16": ["--max-batch-size", "16"], "ours-cache": ["--cache-entries", "1000"]}
OURS_FLAGS = ["--threads", "1", "--max-batch-size", "0", "--cache-entries", "0",
              "--monitoring", "--drift", "--log-level", "warning", "--allow-unsigned"]
HEADER_LENGTH = "Inference-Header-Content-Length"


# -- models and request bodies ---------------------------------------------------------------
@dataclass
class Case:
    name: str
    onnx: Path
    store: Path
    body: bytes  # V2 JSON request, batch 1
    binary: tuple[bytes, int] | None = None  # V2 binary request and its JSON header length


def image_model() -> Any:
    """1x3x224x224 -> GlobalAveragePool -> Flatten -> Gemm(3x10): the codec dominates."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 10)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(10, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "w", "b"], ["output"])], "img",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
        initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def v2_json(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def v2_binary(x: np.ndarray) -> tuple[bytes, int]:
    raw = x.astype("<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return header + raw, len(header)


def package(tmp: Path, name: str, src: sources.Source, data: np.ndarray) -> Case:
    """fp32 package through the converter (reference stats from `data`), installed + activated
    in a store of its own; the baselines serve the very same ONNX bytes."""
    onnx_path = tmp / f"{name}.onnx"
    onnx_path.write_bytes(src.model.SerializeToString())
    npz = tmp / f"{name}-data.npz"
    np.savez(npz, input=data)
    req = ConvertRequest(name=name, version="1", precision="fp32", out_dir=tmp / "pkgs",
                         signer=None, calibration=npz, validation=npz)
    pkg = convert(src, req, log=lambda _m: None).package
    store = tmp / f"store-{name}"
    rt = Runtime(store, allow_unsigned=True, restore=False)
    try:
        rt.install(pkg)
        rt.activate(name, "1")
    finally:
        rt.close()
    return Case(name, onnx_path, store, v2_json(data[:1]))


def build_cases(tmp: Path) -> list[Case]:
    x, _ = examples.digits()
    mlp = sources.from_sklearn(examples.train_digits_mlp(), description="digits-mlp")
    cnn = sources.from_torch(examples.trained_digits_cnn(), (1, 1, 8, 8), description="cnn")
    img = sources.Source(image_model(), "onnx", "-", "gap-gemm-224")
    pixels = np.random.default_rng(1).random((16, 3, 224, 224), dtype=np.float32)
    cases = [package(tmp, "digits-mlp", mlp, x[:300]),
             package(tmp, "small-cnn", cnn, x[:300].reshape(-1, 1, 8, 8)),
             package(tmp, "image-224", img, pixels)]
    cases[2].binary = v2_binary(pixels[:1])
    return cases


# -- servers ---------------------------------------------------------------------------------
def make_server(label: str, case: Case, tmp: Path, *, binary: bool = False) -> Server:
    if label in ("flask", "asgi-ref"):
        kind = "flask" if label == "flask" else "asgi"
        path = "/predict" if kind == "flask" else f"/v2/models/{case.name}/infer"
        return Server(label, [PY, "bench/serve_baselines.py", kind, str(case.onnx), "{port}"],
                      path, case.body)
    # One store copy per daemon: its own run file and telemetry database.
    store = Path(tempfile.mkdtemp(dir=tmp, prefix=f"run-{case.name}-{label}-")) / "store"
    shutil.copytree(case.store, store)
    flags = [*OURS_FLAGS, *(["--no-monitoring", "--no-drift"] if label == "ours-nomon" else []),
             *EXTRA.get(label, [])]
    argv = [PY, "-m", "edge_runtime.cli", "serve", "--store", str(store), "--port", "{port}",
            *flags]
    path = f"/v2/models/{case.name}/infer"
    if binary:
        assert case.binary is not None
        body, hlen = case.binary
        return Server(label, argv, path, body, {HEADER_LENGTH: str(hlen)})
    return Server(label, argv, path, case.body)


# -- the runs --------------------------------------------------------------------------------
def run_model(case: Case, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    labels = [*MAIN, *EXTRA]
    servers = serve_all([make_server(lbl, case, tmp) for lbl in labels], tmp)
    try:
        main = measure(servers[:len(MAIN)], CONNS, args.reps, args.seconds, tmp)
        extra = measure(servers[len(MAIN):], (64,), args.reps, args.seconds, tmp)
        ours, nomon = (next(s for s in servers if s.label == k) for k in ("ours", "ours-nomon"))
        rss = {s.label: round(s.rss_mb(), 1) for s in servers}
        pairs = paired(ours, nomon, conns=64, pairs=args.pairs,
                       seconds=max(args.seconds, 3), tmp=tmp)
    finally:
        for s in servers:
            s.stop()
    return {"results": main | extra, "rss_mb_after_load": rss,
            "monitoring_pairs": [{"ours": o, "ours-nomon": n} for o, n in pairs]}


def run_codec(case: Case, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The same daemon settings, 1x3x224x224 float32 as V2 binary vs V2 JSON, c=8."""
    servers = serve_all([make_server("ours", case, tmp),
                         make_server("ours", case, tmp, binary=True)], tmp)
    servers[1].label = "ours-binary"
    try:
        res = measure(servers, (8,), args.reps, args.seconds, tmp)
    finally:
        for s in servers:
            s.stop()
    return {"json": res["ours"][8], "binary": res["ours-binary"][8],
            "json_body_bytes": len(case.body), "binary_body_bytes": len(servers[1].body)}


def run_cold_starts(case: Case, n: int, tmp: Path) -> dict[str, Any]:
    """Popen -> first 200 from the infer endpoint, then idle VmRSS (before any load)."""
    starts, rss = [], []
    for i in range(n):
        s = make_server("ours", case, tmp)
        s.label = f"cold-{i}"
        try:
            s.start(tmp / "servers.log")
            starts.append(s.start_s)
            time.sleep(0.2)
            rss.append(s.rss_mb())
        finally:
            s.stop()
    return {"start_to_first_200_s": statistics.median(starts), "starts_s": starts,
            "idle_rss_mb": statistics.median(rss), "rss_mb": rss}


# -- report ----------------------------------------------------------------------------------
def model_rows(name: str, res: dict[str, dict[int, dict[str, float]]]) -> list[list[Any]]:
    rows = []
    for label, by_c in res.items():
        for c, r in by_c.items():
            flask, ref = res["flask"][c]["rps"], res["asgi-ref"][c]["rps"]
            rows.append([name, label, c, f"{r['rps']:.0f}", f"{r['p50_us']:.0f}",
                         f"{r['p99_us']:.0f}", f"{r['cpu_us_per_req']:.0f}",
                         f"{r['rps'] / flask:.1f}x",
                         f"{r['rps'] / ref:.2f}x", int(r["errors"])])
    return rows


def monitoring_cost(pairs: list[dict[str, dict[str, float]]]) -> tuple[float, float]:
    """The median over back-to-back pairs of 1 - ours/ours-nomon: by requests/s and by CPU."""
    return (statistics.median(1 - p["ours"]["rps"] / p["ours-nomon"]["rps"] for p in pairs),
            statistics.median(1 - p["ours-nomon"]["cpu_us_per_req"] / p["ours"]["cpu_us_per_req"]
                              for p in pairs))


def model_checks(name: str, m: dict[str, Any]) -> list[tuple[str, bool]]:
    """Judged on requests/s; the CPU-time ratio in brackets is what a quiet machine's
    requests/s ratio converges to (the server saturates its core at c=64). The monitoring
    cost comes from back-to-back pairs of runs (``monitoring_pairs``)."""
    res = m["results"]
    ours, flask, ref = (res[k][64] for k in ("ours", "flask", "asgi-ref"))
    x_flask, x_ref = ours["rps"] / flask["rps"], ours["rps"] / ref["rps"]
    dp50 = res["ours"][1]["p50_us"] - res["asgi-ref"][1]["p50_us"]
    cost, cpu_cost = monitoring_cost(m["monitoring_pairs"])

    def cpu(base: dict[str, float], of: dict[str, float] = ours) -> str:
        return f"(cpu/req basis {base['cpu_us_per_req'] / of['cpu_us_per_req']:.2f}x)"

    return [
        (f"{name}: c=64 throughput >= 8x Flask: {x_flask:.1f}x {cpu(flask)}", x_flask >= 8),
        (f"{name}: c=64 throughput >= 0.9x minimal ASGI: {x_ref:.2f}x {cpu(ref)}",
         x_ref >= 0.9),
        (f"{name}: c=1 p50 within 150 us of minimal ASGI: {dp50:+.0f} us", dp50 <= 150),
        (f"{name}: monitoring + drift cost <= 10% at c=64: {100 * cost:.1f}% "
         f"(cpu/req basis {100 * cpu_cost:.1f}%; median of {len(m['monitoring_pairs'])} "
         "back-to-back pairs)", cost <= 0.10),
    ]


def report(doc: dict[str, Any]) -> list[tuple[str, bool]]:
    rows, checks = [], []
    for name, m in doc["models"].items():
        rows += model_rows(name, m["results"])
        checks += model_checks(name, m)
    print(render(["model", "server", "c", "req/s", "p50 us", "p99 us", "cpu us/req", "x flask",
                  "x asgi-ref",
                  "errors"], rows))
    for name, m in doc["models"].items():
        rss = ", ".join(f"{k} {v:.0f}" for k, v in m["rss_mb_after_load"].items())
        print(f"\n{name}: VmRSS after the runs (MB): {rss}", end="")
        pairs = ", ".join(f"{p['ours']['rps']:.0f}/{p['ours-nomon']['rps']:.0f}"
                          for p in m["monitoring_pairs"])
        print(f"\n{name}: monitoring pairs, c=64, ours/ours-nomon req/s: {pairs}", end="")
    print()
    codec = doc["codec"]
    ratio = codec["binary"]["rps"] / codec["json"]["rps"]
    cpu_ratio = codec["json"]["cpu_us_per_req"] / codec["binary"]["cpu_us_per_req"]
    print(f"\nimage-224 (1x3x224x224 float32), ours, c=8: V2 binary "
          f"{codec['binary']['rps']:.0f} req/s ({codec['binary_body_bytes'] / 1e6:.2f} MB body, "
          f"p50 {codec['binary']['p50_us'] / 1000:.2f} ms) vs V2 JSON {codec['json']['rps']:.1f} "
          f"req/s ({codec['json_body_bytes'] / 1e6:.2f} MB body, p50 "
          f"{codec['json']['p50_us'] / 1000:.1f} ms): {ratio:.0f}x (cpu/req basis "
          f"{cpu_ratio:.0f}x)")
    cold = doc["cold_start"]
    print(f"ours, digits-mlp store: process start to first 200 from infer "
          f"{cold['start_to_first_200_s']:.2f} s (median of {len(cold['starts_s'])}), idle "
          f"VmRSS {cold['idle_rss_mb']:.1f} MB")
    checks += [
        (f"binary V2 request rate >= 30x JSON (1x3x224x224 float32): {ratio:.1f}x "
         f"(cpu/req basis {cpu_ratio:.1f}x)", ratio >= 30),
        (f"idle RSS with one small model <= 90 MB: {cold['idle_rss_mb']:.1f} MB",
         cold["idle_rss_mb"] <= 90),
        (f"process start to first 200 <= 1 s: {cold['start_to_first_200_s']:.2f} s",
         cold["start_to_first_200_s"] <= 1.0),
    ]
    return checks


def machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_avg_at_start": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=2, help="one wrk run (whole seconds)")
    parser.add_argument("--reps", type=int, default=3, help="runs per cell (median reported)")
    parser.add_argument("--pairs", type=int, default=10,
                        help="back-to-back ours / ours-nomon pairs for the monitoring cost")
    parser.add_argument("--quick", action="store_true", help="1 rep of 1 s")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.reps, args.pairs = 1, 1, 2
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)
    t0 = time.perf_counter()
    doc: dict[str, Any] = {"machine": machine(), "seconds": args.seconds, "reps": args.reps}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        mlp, cnn, img = build_cases(tmp)
        doc["models"] = {c.name: run_model(c, args, tmp) for c in (mlp, cnn)}
        doc["codec"] = run_codec(img, args, tmp)
        doc["cold_start"] = run_cold_starts(mlp, 3, tmp)
    doc["total_s"] = round(time.perf_counter() - t0, 1)
    checks = report(doc)
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"\ntotal {doc['total_s']:.0f} s")
    out = ROOT / "bench-out"
    out.mkdir(exist_ok=True)
    (out / "serve.json").write_text(json.dumps(doc, indent=1, default=str))


if __name__ == "__main__":
    main()
