"""What the install tests share: a served daemon process, one inference, the imports it made."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.daemon import RUN_FILE, RunInfo

# Never imported by `import edge_runtime` nor by `edge-runtime serve` (builtin server, no fleet
# link): the converters' and the fleet statistics' libraries, and the optional servers/links.
FORBIDDEN = ("scipy", "onnx", "sklearn", "skl2onnx", "onnxconverter_common", "torch",
             "converters", "fleet", "uvicorn", "paho", "pyarrow")


def forbidden_in(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".", 1)[0] in FORBIDDEN)


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    info: RunInfo
    started: float  # time.monotonic() just before the process was spawned
    first_200_s: float  # spawn -> first 200 from an inference


def serve(argv: list[str], store: Path, log: Path, *, cwd: Path, env: dict[str, str],
          model: str, x: NDArray[np.float32], timeout: float = 60.0) -> Served:
    """Start `edge-runtime serve` (``argv``) and wait for its first 200 from ``model``."""
    (store / RUN_FILE).unlink(missing_ok=True)
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    deadline = started + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        info = RunInfo.read(store)
        if info is not None and info.pid == proc.pid:
            status, _ = infer(info.url, model, x)
            if status == 200:
                return Served(proc, info, started, time.monotonic() - started)
        time.sleep(0.01)
    proc.kill()
    raise TimeoutError(f"no 200 within {timeout} s:\n{log.read_text()[-3000:]}")


def infer(url: str, model: str, x: NDArray[np.float32]) -> tuple[int, Any]:
    body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}).encode()
    req = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:  # not accepting yet
        return 0, None


def output(doc: Any, name: str = "y") -> NDArray[np.float32]:
    out = next(o for o in doc["outputs"] if o["name"] == name)
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")
