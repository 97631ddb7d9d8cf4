"""The plumbing of bench/serve.py: servers pinned to one core, wrk pinned to the other, and
the server's CPU time per request read from /proc."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SERVER_CPU, CLIENT_CPU = "0", "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    label: str
    argv: list[str]
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    start_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self, log: Path) -> Server:
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        t0 = time.perf_counter()
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *argv], cwd=ROOT,
                                         stdout=subprocess.DEVNULL, stderr=fh)
        self._wait_ok()
        self.start_s = time.perf_counter() - t0
        return self

    def _wait_ok(self, timeout: float = 120.0) -> None:
        """Until the first successful inference (not only a bound socket)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}")
            if self.post() == 200:
                return
            time.sleep(0.005)
        raise RuntimeError(f"{self.label} did not answer within {timeout} s")

    def post(self) -> int:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            conn.request("POST", self.path, self.body,
                         {"Content-Type": "application/json", **self.headers})
            status = conn.getresponse().status
            conn.close()
            return status
        except OSError:
            return 0

    def cpu_seconds(self) -> float:
        """utime + stime of the server process, all threads."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


WRK_LUA = """\
local f = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def wrk_script(server: Server, tmp: Path) -> Path:
    body = tmp / f"body-{server.port}.bin"
    body.write_bytes(server.body)
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in server.headers.items())
    script = tmp / f"wrk-{server.port}.lua"
    script.write_text(WRK_LUA.format(body=body, headers=headers))
    return script


def wrk(server: Server, script: Path, conns: int, seconds: int) -> dict[str, float]:
    """Requests/s, latency percentiles, and the server's CPU time per request: the last one
    hardly moves when other processes share the machine, so it is the number to compare on a
    busy box."""
    cpu0 = server.cpu_seconds()
    out = subprocess.run(
        ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s",
         "--timeout", "10s", "-s", str(script), server.url],
        capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT"))
    requests, micros, p50, p99, errors = map(int, line.split()[1:])
    cpu_us = (server.cpu_seconds() - cpu0) * 1e6 / max(requests, 1)
    return {"rps": requests / (micros / 1e6), "p50_us": p50, "p99_us": p99,
            "cpu_us_per_req": cpu_us, "errors": errors}


def median_runs(runs: list[dict[str, float]]) -> dict[str, Any]:
    """The median of each metric, plus every run's requests/s to show the spread."""
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["runs"] = [round(r["rps"], 1) for r in runs]
    return out


def measure(servers: list[Server], conns: tuple[int, ...], reps: int, seconds: int,
            tmp: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """Every (server, c) ``reps`` times, servers interleaved so a noisy moment hits them all."""
    scripts = {s.label: wrk_script(s, tmp) for s in servers}
    for s in servers:  # warm-up: connection setup, allocator, ORT arenas, drift buffers
        wrk(s, scripts[s.label], 8, 1)
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for c in conns:
        for rep in range(reps):
            order = servers[rep % len(servers):] + servers[:rep % len(servers)]
            for s in order:
                runs.setdefault((s.label, c), []).append(wrk(s, scripts[s.label], c, seconds))
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for (label, c), rs in runs.items():
        out.setdefault(label, {})[c] = median_runs(rs)
    return out


def paired(a: Server, b: Server, *, conns: int, pairs: int, seconds: int, tmp: Path
           ) -> list[tuple[dict[str, float], dict[str, float]]]:
    """``pairs`` back-to-back runs of ``a`` and ``b`` (which goes first alternates), each
    pair on newly started processes. The ratio of two neighbouring runs cancels the
    machine's slow drifts, which move medians taken minutes apart by several percent; new
    processes for each pair keep one process's luck (on the VM of docs/benchmarks.md one
    of two identical daemons ran 30% slower than the other for minutes) out of every
    pair: what a ~10% difference needs."""
    scripts = {s.label: wrk_script(s, tmp) for s in (a, b)}
    out = []
    for i in range(pairs):
        for s in (a, b):
            s.stop()
            s.start(tmp / "servers.log")
            wrk(s, scripts[s.label], 8, 1)  # warm-up, as in measure()
        first, second = (a, b) if i % 2 == 0 else (b, a)
        r1 = wrk(first, scripts[first.label], conns, seconds)
        r2 = wrk(second, scripts[second.label], conns, seconds)
        out.append((r1, r2) if first is a else (r2, r1))
    return out


def serve_all(servers: list[Server], tmp: Path) -> list[Server]:
    log = tmp / "servers.log"
    try:
        for s in servers:
            s.start(log)
    except Exception:
        for s in servers:
            s.stop()
        print((log.read_text() if log.exists() else "")[-3000:], file=sys.stderr)
        raise
    return servers
