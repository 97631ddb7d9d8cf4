"""Demo parts 5 to 7: the daemon over HTTP, a simulated fleet with canary rollouts, then drift
on a group of its devices."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from converters import examples

BIN = Path(sys.executable).parent
Sh = Callable[..., None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bg(args: list[str | Path], log: Path) -> subprocess.Popen[bytes]:
    print(f"\n$ {' '.join(str(a) for a in args)} &", flush=True)
    with log.open("wb") as fh:
        return subprocess.Popen([str(a) for a in args], stdout=fh, stderr=subprocess.STDOUT)


def _run(*args: str | Path) -> str:
    return subprocess.run([str(BIN / str(args[0])), *map(str, args[1:])], check=True,
                          capture_output=True, text=True).stdout


def run_daemon_demo(out: Path, sh: Sh) -> None:
    store, keys = out / "store", out / "keys"
    sh("edge-runtime", "install", out / "packages" / "digits-1-auto.edgepkg", "--store", store,
       "--trusted-keys", keys)
    sh("edge-runtime", "activate", "digits", "1-auto", "--store", store)
    daemon = _bg([BIN / "edge-runtime", "serve", "--store", store, "--port", "0",
                  "--trusted-keys", keys], out / "daemon.log")
    try:
        url = _wait_daemon(store)
        x, y = examples.digits()
        body = {"inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32",
                            "data": x[1400:1403].ravel().tolist()}]}
        print(f"\n$ curl -X POST {url}/v2/models/digits/infer -d '{{\"inputs\": [...3 digits]}}'")
        req = urllib.request.Request(f"{url}/v2/models/digits/infer",
                                     data=json.dumps(body).encode())
        with urllib.request.urlopen(req) as resp:
            doc = json.loads(resp.read())
        labels = next(o["data"] for o in doc["outputs"] if o["name"] == "label")
        print(f"predicted {labels}, true labels {y[1400:1403].tolist()}, served by "
              f"{doc['model_name']} {doc['model_version']}")
        sh("edge-runtime", "status", "--store", store)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def _wait_daemon(store: Path) -> str:
    for _ in range(200):
        run = store / "run" / "daemon.json"
        if run.exists():
            url = str(json.loads(run.read_text())["url"])
            try:
                urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1).close()
                return url
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError("the daemon did not start (see demo-out/daemon.log)")


def _mosquitto(out: Path, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = out / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    return _bg([binary, "-c", conf], out / "mosquitto.log")


def run_fleet_demo(out: Path, sh: Sh, common: list[Any]) -> None:
    fleet_pkgs = out / "fleet-packages"
    for version, precision in (("1", "fp32"), ("2", "int8-static"), ("3", "int8-dynamic")):
        sh("edgectl", "convert", out / "digits-mlp.joblib", "--version", version,
           "--precision", precision, *[c if c != out / "packages" else fleet_pkgs
                                       for c in common])
    # the manager signs desired states with its own key; devices trust only its public half
    # for them (the release key that signs packages can stay offline)
    sh("edgectl", "keys", "generate", "--out", out / "fleet-key", "--name", "fleet", "--force")
    port = _free_port()
    broker_url = f"mqtt://127.0.0.1:{port}"
    db = ["--db", out / "fleet.db", "--artifacts", out / "fleet-artifacts", "--trusted-keys",
          out / "keys"]
    procs = [_mosquitto(out, port)]
    time.sleep(0.3)
    try:
        procs.append(_bg([BIN / "edgectl", "serve", "--broker", broker_url, "--tick", "0.2",
                          "--alert-interval", "2",
                          "--signing-key", out / "fleet-key" / "fleet.key", *db],
                         out / "manager.log"))
        for v in ("1", "2", "3"):
            sh("edgectl", "models", "publish", fleet_pkgs / f"digits-{v}.edgepkg", *db)
        # enrollment known (the default): the manager takes only registered devices, so the
        # ids `edgectl sim` gives its devices are registered first
        sh("edgectl", "devices", "add", *(f"sim-{i:05d}" for i in range(20)), "--group", "sim",
           *db)
        sim = [BIN / "edgectl", "sim", "--devices", "20", "--broker", broker_url,
               "--trusted-keys", out / "keys", "--fleet-keys", out / "fleet-key" / "fleet.pub",
               "--rps", "20", "--telemetry-interval", "0.5", "--error-rates", "3=0.3",
               "--workdir", out / "sim-devices"]
        procs.append(_bg(sim, out / "sim.log"))
        _wait(lambda: sum(d["status"] == "online" for d in json.loads(
            _run("edgectl", "devices", "list", "--json", *db))) == 20, "20 devices online")
        sh("edgectl", "deploy", "digits", "1", "--to", "group:sim", *db)
        sh("edgectl", "models", "alias", "digits", "production", "1", *db)
        _wait(lambda: _on_version(db, "1") == 20, "v1 on every device")
        print("all 20 devices run digits 1")
        _rollout(sh, db, "2", "completed")
        _rollout(sh, db, "3", "rolled_back")
        sh("edgectl", "devices", "list", *db)
        sh("edgectl", "models", "list", *db)
        print("\n== 7. drift: a quarter of the devices see shifted inputs")
        procs[-1].terminate()
        procs[-1].wait(timeout=30)
        procs[-1] = _bg([*sim, "--real-models", "--drift-fraction", "0.25", "--drift-sd", "4"],
                        out / "sim-drift.log")
        _drift_step(sh, db, out / "sim-drift.log")
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)


def _drift_step(sh: Sh, db: list[Any], log: Path) -> None:
    """The same devices restarted (their stores kept) with drifted inputs on 5 of them; the
    report flags those devices, and the manager's check raises the drift alert."""
    _wait(lambda: "shifted" in log.read_text(), "the simulator's drift line", 30)
    line = next(t for t in log.read_text().splitlines() if "shifted" in t)
    print(line)
    drifted = set(line.rpartition(": ")[2].split(", "))
    _wait(lambda: _on_version(db, "2", online=True) == 20, "20 devices back online on v2")

    def flagged() -> set[str]:
        doc = json.loads(_run("edgectl", "drift", "report", "digits", "--json", *db))
        return {d for d, v in doc["devices"].items() if v["level"] == "alert"}
    _wait(lambda: flagged() >= drifted, "the drifted devices flagged", 30)
    sh("edgectl", "drift", "report", "digits", *db)
    _wait(lambda: any(a["kind"] == "drift" and a["level"] != "ok" for a in json.loads(
        _run("edgectl", "alerts", "--json", *db))), "the drift alert", 30)
    sh("edgectl", "alerts", "--width", "110", *db)


def _on_version(db: list[Any], version: str, *, online: bool = False) -> int:
    devices = json.loads(_run("edgectl", "devices", "list", "--json", *db))
    return sum(1 for d in devices if d["models"].get("digits", {}).get("active") == version
               and (d["status"] == "online" or not online))


def _rollout(sh: Sh, db: list[Any], version: str, expect: str) -> None:
    sh("edgectl", "rollout", "start", "digits", version, "--to", "group:sim", "--steps",
       "10,50,100", "--bake", "3s", "--min-requests", "30", "--probation", "1s",
       "--device-timeout", "60s", *db)
    last = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        doc = json.loads(_run("edgectl", "rollout", "status", "--json", *db))[0]
        line = (f"  [{doc['state']:>11}] step {doc['step'] + 1}/{len(doc['steps'])} "
                f"({doc['percent']:g}%): {doc['assigned']}/{doc['targeted']} devices on v"
                f"{version} {doc['device_states']}; canary {doc['canary']['requests']} req, "
                f"error rate {_rate(doc['canary'])}, control {_rate(doc['control'])}")
        if line != last:
            print(line, flush=True)
            last = line
        if doc["state"] not in ("deploying", "baking"):
            print(f"rollout {doc['id']} ended {doc['state']}: {doc['reason']}")
            if doc["state"] != expect:
                raise RuntimeError(f"expected {expect}")
            return
        time.sleep(0.5)
    raise RuntimeError("the rollout did not finish in time (see demo-out/manager.log)")


def _rate(arm: dict[str, Any]) -> str:
    return f"{arm['errors'] / arm['requests']:.3f}" if arm["requests"] else "-"


def _wait(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.3)
    raise RuntimeError(f"timed out waiting for {what}")
