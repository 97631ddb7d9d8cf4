"""End-to-end demo on embedded defaults, run by ./scripts/demo.

1. train a small MLP on scikit-learn's bundled digits data;
2. generate a signing key;
3. convert it to fp32, fp16, int8-dynamic and int8-static ONNX packages, then let `auto` choose;
4. verify every package the way a device does (signature + sha256) and print the summary;
5. serve a package with the on-device daemon and call it over HTTP;
6. a fleet: a local Mosquitto, the fleet manager, 20 simulated devices; publish v1-v3, deploy
   v1, roll out v2 by canary, then roll out a deliberately broken v3 (30% errors) and watch the
   health gate roll it back.

Every step runs the real command-line tools, printed before they run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np

from converters import examples
from edge_runtime.package import open_package
from edge_runtime.signing import TrustStore
from edge_runtime.textable import render

OUT = Path("demo-out")
BIN = Path(sys.executable).parent


def sh(*args: str | Path) -> None:
    shown = " ".join(str(a) for a in args)
    print(f"\n$ {shown}", flush=True)
    subprocess.run([str(BIN / str(args[0])), *map(str, args[1:])], check=True)


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "packages").mkdir(parents=True)
    print("== 1. train a digits MLP (scikit-learn, bundled data)")
    model = examples.train_digits_mlp()
    x, y = examples.digits()
    print(f"held-out accuracy: {model.score(x[1300:], y[1300:]):.3f}")
    joblib.dump(model, OUT / "digits-mlp.joblib")
    np.savez(OUT / "calibration.npz", input=x[:500])
    np.savez(OUT / "validation.npz", input=x[1300:], labels=y[1300:])

    print("\n== 2. a signing key (devices trust keys/demo.pub)")
    sh("edgectl", "keys", "generate", "--out", OUT / "keys", "--name", "demo")

    print("\n== 3. convert, quantize and validate")
    common = ["--name", "digits", "--calibration-data", OUT / "calibration.npz",
              "--validation-data", OUT / "validation.npz", "--key", OUT / "keys" / "demo.key",
              "--out", OUT / "packages"]
    for precision in ("fp32", "fp16", "int8-dynamic", "int8-static", "auto"):
        sh("edgectl", "convert", OUT / "digits-mlp.joblib", "--version", f"1-{precision}",
           "--precision", precision, *common)

    print("\n== 4. verify the packages as a device does")
    sh("edge-runtime", "inspect", OUT / "packages" / "digits-1-auto.edgepkg", "--trusted-keys",
       OUT / "keys")
    summary(OUT / "packages", TrustStore.load([OUT / "keys"]))

    from demo_fleet import run_daemon_demo, run_fleet_demo

    print("\n== 5. serve it on a device")
    run_daemon_demo(OUT, sh)
    print("\n== 6. a fleet of 20 simulated devices: canary rollout, then automatic rollback")
    run_fleet_demo(OUT, sh, common)


def summary(directory: Path, trust: TrustStore) -> None:
    rows = []
    pkgs = sorted(directory.glob("*.edgepkg"), key=lambda p: p.stat().st_mtime)
    base = pkgs[0].stat().st_size
    for path in pkgs:
        pkg = open_package(path, trust)
        report = pkg.read_json("validation.json")
        chosen = next(c for c in report["candidates"] if c["chosen"])
        agree = min(o["top1_agreement"] for o in chosen["outputs"] if o["top1_agreement"])
        acc = next(o["accuracy"] for o in chosen["outputs"] if o["accuracy"] is not None)
        rows.append([path.name, pkg.manifest.precision, f"{path.stat().st_size / 1024:.1f} KB",
                     f"{path.stat().st_size / base:.2f}", f"{100 * agree:.1f}%",
                     f"{100 * acc:.1f}%", f"{chosen['latency_ms']['b1_p50']:.3f}",
                     pkg.signed_by])
    print()
    print(render(["package", "precision", "size", "x fp32", "top-1 agree", "accuracy",
                  "b1 p50 ms", "signed by"], rows))


if __name__ == "__main__":
    main()
