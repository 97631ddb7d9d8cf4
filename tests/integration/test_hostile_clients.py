"""Hostile clients against a real daemon (a subprocess on a free port): bodies declared and
never sent, huge request ids, clients that send a byte a second, and 32 MB batches. Memory is
read from /proc/PID/status (VmRSS); health is probed by a separate process every 10 ms over a
keep-alive connection (so this process's own work cannot delay it), and must stay fast.

The daemon runs with its default limits (32 MB bodies, a 64 MB body budget) except shorter
deadlines (2 s), so the slow clients are cut off within seconds rather than ten.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import Keys
from tests.integration.conftest import DaemonFactory, DaemonProc
from tests.integration.support import build_onnx_package, call, image_model, make_store

pytestmark = pytest.mark.slow
MB = 1 << 20
IMAGE = "/v2/models/image/infer"
ROW = 3 * 8 * 8  # floats per image row
RSS_GROWTH_MAX = 96 * MB  # over the daemon's RSS when idle, through every test here
# health p99 while hostile clients are served: the bound (50 ms) holds for the 32 MB
# batch test; elsewhere "fast" leaves room for a busy test machine (measured: 1-30 ms)
HEALTH_P99_S = 0.1
PROBE = r"""
import json, socket, sys, time, select
host, port = sys.argv[1], int(sys.argv[2])
req = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
lat, s = [], socket.create_connection((host, port))
while not select.select([sys.stdin], [], [], 0.01)[0]:
    t0 = time.perf_counter()
    s.sendall(req)
    data = b""
    while not data.endswith(b'{"ready":true}'):
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("health connection closed")
        data += chunk
    lat.append(time.perf_counter() - t0)
print(json.dumps(lat))
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, keys: Keys,
           module_daemon_factory: DaemonFactory) -> DaemonProc:
    tmp = tmp_path_factory.mktemp("hostile")
    pkg = build_onnx_package(tmp / "pkgs", keys.signer, image_model(), name="image")
    store = make_store(tmp / "store", keys, [pkg], {"image": "1"})
    config = tmp / "edge.toml"
    config.write_text("[serve]\nheader_timeout_s = 2.0\nbody_idle_timeout_s = 2.0\n"
                      "log_level = \"warning\"\n")
    d = module_daemon_factory(store, "--trusted-keys", str(keys.public), "--config",
                              str(config)).start()
    batch = np.ones((4, 3, 8, 8), np.float32)
    for _ in range(50):  # warm: lazy imports, pools, first allocations
        assert call(d.url, "POST", IMAGE, v2_json(batch)).status == 200
    d.extra["idle_rss"] = str(rss(d))
    return d


def rss(d: DaemonProc, field: str = "VmRSS") -> int:
    """Resident memory now (VmRSS), or at its highest so far (VmHWM)."""
    assert d.proc is not None
    for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def v2_json(x: np.ndarray, **extra: Any) -> bytes:
    return json.dumps({**extra, "inputs": [{"name": "x", "shape": list(x.shape),
                                            "datatype": "FP32",
                                            "data": x.reshape(-1).tolist()}]}).encode()


def address(d: DaemonProc) -> tuple[str, int]:
    host, port = d.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@contextmanager
def health_probe(d: DaemonProc) -> Iterator[list[float]]:
    """Health latencies (seconds) while the block runs, from a separate process."""
    host, port = address(d)
    proc = subprocess.Popen([sys.executable, "-c", PROBE, host, str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    latencies: list[float] = []
    time.sleep(0.3)
    try:
        yield latencies
    finally:
        out, _ = proc.communicate("stop\n", timeout=30)
    assert proc.returncode == 0, out
    latencies.extend(json.loads(out))


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100, method="inclusive")[98]


def report(name: str, **figures: Any) -> None:
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def read_answer(s: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


def until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_declared_but_unsent_bodies_cost_no_memory(daemon: DaemonProc) -> None:
    """40 connections declaring 32 MB each and sending one byte: RSS stays where it was
    (it grew by 640 MB before), health stays fast, and each gets 408 after the body
    deadline."""
    before = rss(daemon)
    with health_probe(daemon) as latencies:
        socks = [socket.create_connection(address(daemon), timeout=30) for _ in range(40)]
        for s in socks:
            s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{"
                      % (IMAGE.encode(), 32 * MB))
        time.sleep(1.0)
        held = rss(daemon) - before
        answers = [read_answer(s) for s in socks]
    for s in socks:
        s.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[0][:200]
    report("declared-unsent", connections=40, declared_mb=40 * 32, rss_growth_mb=held / MB,
           health_p99_ms=p99(latencies) * 1e3, health_max_ms=max(latencies) * 1e3,
           probes=len(latencies))
    assert held < 16 * MB
    assert p99(latencies) < HEALTH_P99_S


def test_huge_request_ids_are_refused_and_memory_stays_bounded(daemon: DaemonProc) -> None:
    """2,000 requests with 1 MB ids get 400 (ids are at most 256 bytes); 2,000 with 256-byte
    ids are answered and remembered within the feedback budget; RSS stays bounded."""
    before = rss(daemon)
    row = np.ones((1, 3, 8, 8), np.float32)
    big = v2_json(row, id="i" * MB)
    statuses: list[int] = []
    peak = [before]

    def client(n: int, body_of: Callable[[int], bytes]) -> None:
        host, port = address(daemon)
        from http.client import HTTPConnection

        conn = HTTPConnection(host, port, timeout=60)
        for i in range(n):
            conn.request("POST", IMAGE, body=body_of(i))
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
            if i % 50 == 0:
                peak[0] = max(peak[0], rss(daemon))
        conn.close()

    with health_probe(daemon) as latencies:
        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(250, lambda _i: big))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        long_s = time.monotonic() - t0
        refused = statuses.count(400)
        statuses.clear()
        threads = [threading.Thread(target=client, args=(250, lambda i, k=k: v2_json(
            row, id=f"{k}-{i}-".ljust(256, "x")))) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    after = rss(daemon)
    report("huge-ids", refused=refused, seconds=round(long_s, 1), answered=statuses.count(200),
           rss_growth_mb=round((after - before) / MB, 1),
           peak_growth_mb=round((peak[0] - before) / MB, 1),
           health_p99_ms=round(p99(latencies) * 1e3, 1), probes=len(latencies))
    assert refused == 2000 and statuses.count(200) == 2000
    assert peak[0] - before < 64 * MB and after - before < 32 * MB
    assert p99(latencies) < HEALTH_P99_S


def test_a_byte_a_second_is_cut_off_by_the_deadlines(daemon: DaemonProc) -> None:
    """Clients trickling their head or their body one byte a second are answered 408 and
    closed (the head after 2 s, the body once it falls below 1 KiB/s after its 2 s grace);
    health stays fast meanwhile."""
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" % IMAGE.encode()
    results: dict[str, tuple[bytes, float]] = {}

    def trickle(name: str, prefix: bytes, drip: bytes) -> None:
        with socket.create_connection(address(daemon), timeout=30) as s:
            s.sendall(prefix)
            t0 = time.monotonic()
            for byte in drip:
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    break  # closed by the daemon
                if select_readable(s, 1.0):
                    break
            results[name] = (read_answer(s), time.monotonic() - t0)

    with health_probe(daemon) as latencies:
        threads = [threading.Thread(target=trickle, args=(f"head-{i}", b"", head))
                   for i in range(5)]
        threads += [threading.Thread(target=trickle, args=(f"body-{i}", head, b"1" * 60))
                    for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    report("trickle", clients=len(results),
           cut_after_s=sorted(round(r[1], 1) for r in results.values()),
           health_p99_ms=round(p99(latencies) * 1e3, 1))
    assert len(results) == 10
    for name, (answer, seconds) in results.items():
        assert answer.startswith(b"HTTP/1.1 408 "), (name, answer[:200])
        assert seconds < 10, (name, seconds)
    assert b"head was not complete" in results["head-0"][0]
    assert b"slower than 1024 bytes/s" in results["body-0"][0]
    assert p99(latencies) < HEALTH_P99_S


def select_readable(s: socket.socket, timeout: float) -> bool:
    import select

    return bool(select.select([s], [], [], timeout)[0])


@pytest.mark.parametrize("encoding", ["binary", "json"])
def test_a_32_mb_batch_leaves_health_fast(daemon: DaemonProc, encoding: str) -> None:
    """32 MB batches (V2 binary: 43,690 images; JSON: ~8,300) one after the other while
    health is probed every 10 ms: health p99 <= 50 ms, and each batch is answered whole."""
    if encoding == "binary":
        rows = (32 * MB - 200) // (ROW * 4)
        x = np.random.default_rng(1).standard_normal((rows, 3, 8, 8)).astype(np.float32)
        raw = x.tobytes()
        header = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape),
                                         "datatype": "FP32",
                                         "parameters": {"binary_data_size": len(raw)}}]}
                            ).encode()
        body, headers = header + raw, {"Inference-Header-Content-Length": str(len(header))}
    else:
        rows = 32 * MB // (ROW * 21)
        x = np.random.default_rng(1).standard_normal((rows, 3, 8, 8)).astype(np.float32)
        body, headers = v2_json(x), {}
    assert 30 * MB < len(body) <= 32 * MB
    before = rss(daemon)
    seconds, peak = [], before
    with health_probe(daemon) as latencies:
        for _ in range(3 if encoding == "binary" else 5):  # ~2 s of probes either way
            t0 = time.monotonic()
            reply = call(daemon.url, "POST", IMAGE, body, headers)
            seconds.append(round(time.monotonic() - t0, 2))
            peak = max(peak, rss(daemon))
            assert reply.status == 200, reply.body[:300]
            assert reply.json()["outputs"][0]["shape"] == [rows, 10]
    report(f"32MB-{encoding}", rows=rows, body_mb=round(len(body) / MB, 1),
           seconds=seconds, probes=len(latencies),
           health_p50_ms=round(statistics.median(latencies) * 1e3, 2),
           health_p99_ms=round(p99(latencies) * 1e3, 1),
           health_max_ms=round(max(latencies) * 1e3, 1),
           rss_growth_mb=round((peak - before) / MB, 1))
    assert p99(latencies) <= 0.05


def test_the_daemon_is_still_serving_within_its_memory_bound(daemon: DaemonProc) -> None:
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert call(daemon.url, "POST", IMAGE, v2_json(np.ones((2, 3, 8, 8), np.float32))
                ).status == 200
    idle = int(daemon.extra["idle_rss"])
    until(lambda: rss(daemon) - idle < RSS_GROWTH_MAX)
    report("memory", idle_rss_mb=round(idle / MB, 1), now_rss_mb=round(rss(daemon) / MB, 1),
           peak_rss_mb=round(rss(daemon, "VmHWM") / MB, 1))


def children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"\nPPid:\t{pid}\n" in status.read_text():
                found.append(int(status.parent.name))
        except OSError:
            pass
    return found


def test_a_killed_daemon_leaves_no_decoder_process(daemon: DaemonProc) -> None:
    """The JSON batches above started the decoder process; SIGKILL the daemon (it cannot
    clean up) and the decoder process exits by itself."""
    assert daemon.proc is not None
    kids = children(daemon.proc.pid)
    assert kids, "no decoder process"
    daemon.kill()
    until(lambda: not any(Path(f"/proc/{k}").exists() and "State:\tZ" not in
                          Path(f"/proc/{k}/status").read_text() for k in kids), timeout=15)
