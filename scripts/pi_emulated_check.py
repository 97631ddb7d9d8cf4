"""The part of scripts/pi-emulated that runs after the root exists and is mounted.

Host side (this checkout's .venv): build the wheel, a signing key and signed packages, the
Mosquitto and the fleet manager. Root side (`chroot ROOT ...`, ARM binaries under qemu): the
venvs, `edge-runtime install/activate/serve/status`. The chroot shares the host's network
namespace, so the host calls the emulated daemon on 127.0.0.1 and the daemon reaches the host's
broker the same way. Every phase is timed into the timings file; the table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HOST_BIN = Path(sys.executable).parent
GUEST_WORK = "/srv/pi-emu"  # the root's path of ROOT/srv/pi-emu
# The guest starts from a clean environment (the host's PIP_* settings point at host paths),
# keeping the host's proxy and, for pip, the host's CA bundle (copied in by scripts/pi-emulated).
GUEST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "HOME": "/root", "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
             "PIP_ROOT_USER_ACTION": "ignore", "PIP_CERT": "/etc/ssl/host-ca-certificates.crt",
             **{k: v for k, v in os.environ.items()
                if k.lower() in ("http_proxy", "https_proxy", "no_proxy")}}
WHEEL_SOURCES = ("pyproject.toml", "README.md", "edge_runtime", "converters", "fleet")
N_IN, HIDDEN, N_OUT = 64, 128, 10
X_PROBE = np.random.default_rng(5).standard_normal((1, N_IN)).astype(np.float32)
SENTENCE = ("edge-runtime needs a 64-bit OS (aarch64/x86_64): onnxruntime, ai-edge-litert and "
            "numpy publish no wheels for 32-bit ARM")


@dataclass
class Run:
    root: Path
    checkout: Path
    timings: Path
    qemu: str  # the host's qemu-user binary for the root's architecture

    @property
    def work(self) -> Path:
        return self.root / GUEST_WORK.lstrip("/")

    @property
    def host_only(self) -> Path:
        """The manager's side (database, fleet signing key, broker), outside the device root."""
        return self.root.with_name(self.root.name + "-host")

    def guest(self, path: Path) -> str:
        """The root's name for a host path under ROOT."""
        return "/" + str(path.relative_to(self.root))

    def record(self, phase: str, seconds: float, note: str = "") -> None:
        with self.timings.open("a") as fh:
            fh.write(f"{phase}\t{seconds:.3f}\t{note}\n")
        print(f"   [{fmt_seconds(seconds):>8}] {phase}" + (f" ({note})" if note else ""),
              flush=True)


@contextmanager
def timed(run: Run, phase: str, note: str = "") -> Iterator[None]:
    t0 = time.monotonic()
    yield
    run.record(phase, time.monotonic() - t0, note)


def sh(args: Sequence[str | Path], *, env: dict[str, str] | None = None,
       check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [str(a) for a in args]
    print("$ " + " ".join(argv), flush=True)
    res = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if not quiet or res.returncode != 0:
        sys.stdout.write(res.stdout + res.stderr)
    if check and res.returncode != 0:
        raise SystemExit(f"error: exit {res.returncode}: {' '.join(argv)}")
    return res


def in_root(run: Run, *args: str) -> list[str]:
    return ["chroot", str(run.root), *args]


def guest_sh(run: Run, *args: str, check: bool = True, quiet: bool = False
             ) -> subprocess.CompletedProcess[str]:
    return sh(in_root(run, *args), env=GUEST_ENV, check=check, quiet=quiet)


def host(*args: str | Path, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    return sh([HOST_BIN / str(args[0]), *args[1:]], quiet=quiet)


# -- host side: wheel, key, packages ---------------------------------------------------------
def build_wheel(run: Run) -> Path:
    """`pip wheel` of a copy of the checkout's sources (an in-tree build writes build/ and
    *.egg-info into a checkout others work in)."""
    out, src = run.work / "wheel", run.host_only / "src"
    for d in (out, src):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    with timed(run, "build the wheel (host)"):
        for name in WHEEL_SOURCES:
            if (run.checkout / name).is_dir():
                shutil.copytree(run.checkout / name, src / name, ignore=ignore)
            else:
                shutil.copy2(run.checkout / name, src / name)
        sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(out)])
    (wheel,) = out.glob("edge_runtime-*.whl")
    return wheel


def mlp(seed: int) -> tuple[bytes, list[np.ndarray]]:
    """x float32 [batch, 64] -> Gemm -> Relu -> Gemm -> y [batch, 10], and its weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    ws: list[np.ndarray] = [rng.standard_normal((N_IN, HIDDEN)).astype(np.float32) / 8,
          rng.standard_normal(HIDDEN).astype(np.float32),
          rng.standard_normal((HIDDEN, N_OUT)).astype(np.float32) / 8,
          rng.standard_normal(N_OUT).astype(np.float32)]
    names = ["w1", "b1", "w2", "b2"]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", N_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N_OUT])],
        initializer=[numpy_helper.from_array(w, n) for w, n in zip(ws, names, strict=True)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString()), ws


def expected(ws: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    h = np.maximum(x @ ws[0] + ws[1], 0)
    return np.asarray(h @ ws[2] + ws[3])


@dataclass(frozen=True)
class Packages:
    pub: Path
    onnx: dict[str, Path]  # version -> package
    tflite: Path
    weights: dict[str, list[np.ndarray]]


def build_packages(run: Run) -> Packages:
    keys, pkgs, src = run.work / "keys", run.work / "packages", run.work / "src"
    for d in (keys, pkgs, src):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    host("edgectl", "keys", "generate", "--out", keys, "--name", "pi", quiet=True)
    calib = src / "calib.npy"
    np.save(calib, np.random.default_rng(9).standard_normal((64, N_IN)).astype(np.float32))
    weights: dict[str, list[np.ndarray]] = {}
    with timed(run, "build 3 signed packages (host)", "mlp 64-128-10: onnx v1, v2, tflite v1"):
        for version in ("1", "2"):
            model, weights[version] = mlp(seed=int(version))
            (src / f"mlp-{version}.onnx").write_bytes(model)
            host("edgectl", "convert", src / f"mlp-{version}.onnx", "--name", "mlp",
                 "--version", version, "--calibration-data", calib, "--key", keys / "pi.key",
                 "--out", pkgs, quiet=True)
        host("edgectl", "convert", src / "mlp-1.onnx", "--name", "mlp-tfl", "--version", "1",
             "--to", "tflite", "--calibration-data", calib, "--key", keys / "pi.key", "--out",
             pkgs, quiet=True)
    return Packages(keys / "pi.pub", {v: pkgs / f"mlp-{v}.edgepkg" for v in ("1", "2")},
                    pkgs / "mlp-tfl-1.edgepkg", weights)


# -- root side: venvs, install, serve --------------------------------------------------------
@dataclass(frozen=True)
class Guest:
    """One emulated install: a venv in the root, its model store and the model it serves."""

    venv: str
    store: str
    model: str

    @property
    def label(self) -> str:
        return Path(self.venv).name


def make_venv(run: Run, guest: Guest, wheel: Path, extras: str) -> None:
    shutil.rmtree(run.root / guest.venv.lstrip("/"), ignore_errors=True)
    shutil.rmtree(run.root / guest.store.lstrip("/"), ignore_errors=True)
    guest_sh(run, "python3", "-m", "venv", guest.venv)
    cache = "warm" if (run.root / "root/.cache/pip").exists() else "cold"
    t0 = time.monotonic()
    guest_sh(run, f"{guest.venv}/bin/pip", "install", "-q", f"{run.guest(wheel)}[{extras}]")
    site = next((run.root / guest.venv.lstrip("/") / "lib").glob("python3*/site-packages"))
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 1e6
    run.record(f"pip install wheel[{extras}] (emulated)", time.monotonic() - t0,
               f"pip cache {cache}; site-packages {size:.0f} MB")
    freeze = guest_sh(run, f"{guest.venv}/bin/pip", "freeze", quiet=True).stdout.splitlines()
    print("   " + ", ".join(ln.split(" @ ")[0] for ln in sorted(freeze)), flush=True)


def install_activate(run: Run, guest: Guest, package: Path, *, pub: Path) -> None:
    er = f"{guest.venv}/bin/edge-runtime"
    with timed(run, f"install + activate {package.name} (emulated)"):
        guest_sh(run, er, "install", run.guest(package), "--store", guest.store,
                 "--trusted-keys", run.guest(pub))
        guest_sh(run, er, "activate", guest.model, "1", "--store", guest.store)


class Daemon:
    """`edge-runtime serve` inside the root, as a child of this process."""

    def __init__(self, run: Run, guest: Guest, *extra: str) -> None:
        self.log = run.work / f"daemon-{guest.label}-{int(time.time())}.log"
        self.run_file = run.root / guest.store.lstrip("/") / "run" / "daemon.json"
        self.run_file.unlink(missing_ok=True)
        argv = in_root(run, f"{guest.venv}/bin/edge-runtime", "serve", "--store", guest.store,
                       "--port", "0", *extra)
        print("$ " + " ".join(argv) + " &", flush=True)
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(argv, env=GUEST_ENV, stdout=fh,
                                         stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 600) -> str:
        def ready() -> str | None:
            if self.proc.poll() is not None:
                raise SystemExit(f"error: the daemon exited {self.proc.returncode}:\n"
                                 f"{self.log.read_text()[-3000:]}")
            if not self.run_file.exists():
                return None
            url = str(json.loads(self.run_file.read_text())["url"])
            return url if get(f"{url}/v2/health/ready") == 200 else None
        return str(wait_for(ready, timeout, "the emulated daemon to answer /v2/health/ready"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def infer(url: str, model: str, x: np.ndarray) -> dict[str, Any]:
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}
    req = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def check_answer(doc: dict[str, Any], want: np.ndarray, version: str, atol: float) -> float:
    got = np.asarray(doc["outputs"][0]["data"], dtype=np.float32).reshape(want.shape)
    err = float(np.max(np.abs(got - want)))
    if doc["model_version"] != version or err > atol:
        raise SystemExit(f"error: wrong answer: version {doc['model_version']} (want {version}),"
                         f" max abs error {err:.2e} (allowed {atol:g})")
    return err


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"error: timed out after {timeout:g} s waiting for {what}")


def serve_and_answer(run: Run, guest: Guest, *, pub: Path, want: np.ndarray, atol: float
                     ) -> None:
    """Serve GUEST's store, time the first 200 and the first answer (checked against WANT,
    the answer to X_PROBE) and the median of the next 50."""
    label = guest.label
    t0 = time.monotonic()
    daemon = Daemon(run, guest, "--trusted-keys", run.guest(pub))
    try:
        url = daemon.wait_ready()
        run.record(f"serve: start to first 200 ({label})", time.monotonic() - t0)
        t1 = time.monotonic()
        doc = infer(url, guest.model, X_PROBE)
        err = check_answer(doc, want, "1", atol)
        run.record(f"first V2 inference ({label})", time.monotonic() - t1,
                   f"max abs error {err:.1e}")
        lat = []
        for _ in range(50):
            t = time.monotonic()
            infer(url, guest.model, X_PROBE)
            lat.append(time.monotonic() - t)
        run.record(f"V2 inference, median of next 50 ({label})", float(np.median(lat)),
                   f"p90 {np.percentile(lat, 90) * 1000:.0f} ms")
        guest_sh(run, f"{guest.venv}/bin/edge-runtime", "status", "--store", guest.store)
    finally:
        daemon.stop()


# -- fleet: host Mosquitto and manager, the emulated daemon as device pi-emu -------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def background(args: Sequence[str | Path], log: Path) -> subprocess.Popen[bytes]:
    argv = [str(a) for a in args]
    print("$ " + " ".join(argv) + " &", flush=True)
    with log.open("wb") as fh:
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_broker(fdir: Path, port: int) -> subprocess.Popen[bytes]:
    conf = fdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = background([binary, "-c", conf], fdir / "mosquitto.log")

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True
    wait_for(up, 10, "mosquitto")
    return proc


def device(db: list[str | Path], device_id: str) -> dict[str, Any] | None:
    res = subprocess.run([str(HOST_BIN / "edgectl"), "devices", "list", "--json", *map(str, db)],
                         capture_output=True, text=True, check=True)
    devices: list[dict[str, Any]] = json.loads(res.stdout)
    return next((d for d in devices if d.get("id") == device_id), None)


def active_version(db: list[str | Path], device_id: str, model: str) -> str | None:
    dev = device(db, device_id)
    if dev is None:
        return None
    active = (dev.get("models") or {}).get(model, {}).get("active")
    return str(active) if active is not None else None


def fleet_step(run: Run, guest: Guest, pkgs: Packages) -> None:
    fdir = run.host_only / "fleet"
    shutil.rmtree(fdir, ignore_errors=True)
    fdir.mkdir(parents=True)
    # Desired states are signed with the fleet's key; the device trusts its public half only.
    host("edgectl", "keys", "generate", "--out", fdir, "--name", "fleet", quiet=True)
    fleet_pub = run.work / "keys" / "fleet.pub"
    shutil.copy(fdir / "fleet.pub", fleet_pub)
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    db: list[str | Path] = ["--db", fdir / "fleet.db", "--artifacts", fdir / "artifacts",
                            "--trusted-keys", pkgs.pub]
    procs = [start_broker(fdir, port)]
    daemon: Daemon | None = None
    try:
        procs.append(background([HOST_BIN / "edgectl", "serve", "--broker", url, "--tick", "0.2",
                                 "--signing-key", fdir / "fleet.key", *db], fdir / "manager.log"))
        host("edgectl", "models", "publish", pkgs.onnx["2"], *db)
        host("edgectl", "devices", "add", "pi-emu", "--group", "pi", *db)
        t0 = time.monotonic()
        daemon = Daemon(run, guest, "--trusted-keys", run.guest(pkgs.pub), "--fleet-keys",
                        run.guest(fleet_pub), "--fleet-url", url, "--device-id", "pi-emu",
                        "--group", "pi", "--telemetry-interval", "2")
        durl = daemon.wait_ready()
        wait_for(lambda: active_version(db, "pi-emu", "mlp") == "1", 600,
                 "pi-emu to report mlp 1 to the manager")
        run.record("fleet: daemon start to reported in edgectl (mlp 1)", time.monotonic() - t0)
        t1 = time.monotonic()
        host("edgectl", "deploy", "mlp", "2", "--to", "device:pi-emu", *db)
        wait_for(lambda: active_version(db, "pi-emu", "mlp") == "2", 900,
                 "pi-emu to report mlp 2 active")
        run.record("fleet: deploy mlp 2 to reported active", time.monotonic() - t1,
                   "artifact over MQTT, verified, loaded, swapped")
        x = np.random.default_rng(6).standard_normal((2, N_IN)).astype(np.float32)
        err = check_answer(infer(durl, "mlp", x), expected(pkgs.weights["2"], x), "2", 1e-4)
        print(f"   the emulated device serves mlp 2 (max abs error {err:.1e})", flush=True)
        host("edgectl", "devices", "show", "pi-emu", *db)
    finally:
        if daemon is not None:
            daemon.stop()
        for proc in reversed(procs):
            stop(proc)


# -- 32-bit (armhf): what a user sees --------------------------------------------------------
def check_32bit(run: Run) -> int:
    """Pi OS 32-bit: `pip install edge-runtime[onnx]` and the first CLI call must say SENTENCE
    (pip failing with it, or the CLI's first line), never a compiler error."""
    wheel = build_wheel(run)
    guest_sh(run, "python3", "-c", "import platform, struct; "
             "print('machine', platform.machine(), 'pointer bits', struct.calcsize('P') * 8)")
    venv = "/opt/er-onnx"
    shutil.rmtree(run.root / venv.lstrip("/"), ignore_errors=True)
    guest_sh(run, "python3", "-m", "venv", venv)
    with timed(run, "pip install wheel[onnx] (emulated armhf)"):
        pip = guest_sh(run, f"{venv}/bin/pip", "install", f"{run.guest(wheel)}[onnx]",
                       check=False)
    said = [SENTENCE in pip.stdout + pip.stderr]  # pip failing with the sentence
    if pip.returncode == 0:  # or pip compiling nothing and every console script saying it
        said = []
        for cli in ("edge-runtime", "edgectl"):
            res = guest_sh(run, f"{venv}/bin/{cli}", "status", check=False)
            first = (res.stderr.strip().splitlines() or [""])[0]
            said.append(res.returncode == 1 and first == f"error: {SENTENCE}")
            print(f"   {cli}: exit {res.returncode}, first line: {first!r}", flush=True)
    ok = all(said)
    unguarded(run, venv)
    print("== 32-bit verdict: " + ("the user is told that a 64-bit OS is needed" if ok else
                                   "FAILED: the user does not see the 64-bit sentence"))
    return 0 if ok else 1


def unguarded(run: Run, venv: str) -> None:
    """For the record: what a dependency without the marker does here (numpy: no armv7l wheel on
    PyPI, so pip builds the sdist, and the root has no compiler)."""
    with timed(run, "pip install numpy, for comparison (emulated armhf)"):
        res = guest_sh(run, f"{venv}/bin/pip", "install", "--no-cache-dir", "numpy",
                       check=False, quiet=True)
    lines = (res.stdout + res.stderr).splitlines()
    errors = [ln.strip() for ln in lines if "error" in ln.lower()]
    print(f"   exit {res.returncode}; {len(lines)} lines of output; first error lines:", flush=True)
    for ln in errors[:6]:
        print(f"     {ln}", flush=True)


# -- report ----------------------------------------------------------------------------------
def fmt_seconds(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    return f"{s:.1f} s" if s < 120 else f"{int(s) // 60} min {int(s) % 60:02d} s"


def print_table(run: Run) -> None:
    rows = [line.split("\t") for line in run.timings.read_text().splitlines() if line]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.machine())
    qemu = subprocess.run([run.qemu, "--version"], capture_output=True, text=True,
                          check=False).stdout.split("\n", 1)[0]
    commit = subprocess.run(["git", "-C", str(run.checkout), "describe", "--always", "--dirty"],
                            capture_output=True, text=True, check=False).stdout.strip()
    print(f"\n== Timings ({time.strftime('%Y-%m-%d %H:%M')}, checkout {commit or '?'}; host: "
          f"{cpu}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {qemu}, "
          f"-cpu {GUEST_ENV['QEMU_CPU']})\n")
    print("| phase | time | note |\n|---|---:|---|")
    for phase, seconds, note in rows:
        print(f"| {phase} | {fmt_seconds(float(seconds))} | {note} |")


def extras_for_device(checkout: Path) -> str:
    """The extra a device takes for the MQTT link: `mqtt` where pyproject has it, else `fleet`."""
    import tomllib

    extras = tomllib.loads((checkout / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    return "mqtt" if "mqtt" in extras else "fleet"


def check_64bit(run: Run) -> int:
    link = extras_for_device(run.checkout)
    wheel = build_wheel(run)
    pkgs = build_packages(run)
    want = expected(pkgs.weights["1"], X_PROBE)
    onnx = Guest("/opt/er-onnx", f"{GUEST_WORK}/store-onnx", "mlp")
    make_venv(run, onnx, wheel, f"onnx,{link}")
    install_activate(run, onnx, pkgs.onnx["1"], pub=pkgs.pub)
    serve_and_answer(run, onnx, pub=pkgs.pub, want=want, atol=1e-4)
    tflite = Guest("/opt/er-tflite", f"{GUEST_WORK}/store-tflite", "mlp-tfl")
    make_venv(run, tflite, wheel, f"tflite,{link}")
    install_activate(run, tflite, pkgs.tflite, pub=pkgs.pub)
    serve_and_answer(run, tflite, pub=pkgs.pub, want=want, atol=1e-3)
    fleet_step(run, onnx, pkgs)
    return 0


def _interrupted(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=("arm64", "armhf"), default="arm64")
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--checkout", type=Path, required=True)
    ap.add_argument("--timings", type=Path, required=True)
    ap.add_argument("--cpu", default="cortex-a72", help="QEMU_CPU for every guest process")
    args = ap.parse_args(argv)
    GUEST_ENV["QEMU_CPU"] = args.cpu
    # Background runs start with SIGINT ignored: both signals end the run through the finally
    # blocks that stop the daemon, the manager and the broker.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)
    qemu = "qemu-aarch64-static" if args.arch == "arm64" else "qemu-arm-static"
    run = Run(args.root.resolve(), args.checkout.resolve(), args.timings, qemu)
    t0 = time.monotonic()
    rc = check_64bit(run) if args.arch == "arm64" else check_32bit(run)
    run.record("whole script after debootstrap", time.monotonic() - t0)
    print_table(run)
    return rc


if __name__ == "__main__":
    sys.exit(main())
