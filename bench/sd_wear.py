"""SD-card wear (issue 14, item 7): bytes the daemon writes per hour, idle and under load.

    .venv/bin/python bench/sd_wear.py [--seconds S] [--rate R] [--intervals 10,60] [--quick]

Each run starts `edge-runtime serve` (default settings: the detected profile, monitoring and
drift on, no flags but the store and port) on a store holding the digits MLP, and reads the
daemon's ``write_bytes`` from ``/proc/PID/io``: bytes sent to the block layer by the process,
so SQLite's WAL appends, checkpoints into ``store.db`` and their fsyncs all count, and a page
rewritten after it was synced counts again. The daemon's logs go to a pipe (on a device they
go to journald, whose writes are not the daemon's). A phase is a whole number of telemetry
intervals, timed from one flush to another (seen in the WAL file's mtime), and extrapolated to
an hour. Runs:

    default idle       nothing served for the phase (target: ~0)
    default 10/s       R requests/s of V2 JSON, each a different digits row (target: <= 5 MB/h)
    interval N 10/s    the same with --telemetry-interval N, for each N of --intervals
    retention 1h 10/s  telemetry_retention_s = 3600: old rows are deleted as new ones come (the
                       steady state of a store that has run longer than its retention; with
                       the default 7 days the deletes come in larger, rarer batches)
    fleet link 10/s    joined to a real Mosquitto (--fleet-url): every row is also sent and
                       marked sent

Every store starts with --history sent rows (a device that has run for a while). The WAL is
checkpointed into store.db at the start and end of each phase by the bench (the daemon does it
every 1,000 frames, which a short phase may not reach); the end's bytes are added. That is an
upper bound: a phase-end checkpoint writes the pages every checkpoint writes (the header, the
table's inner pages) once per phase, the daemon's own once per ~330 flushes; in steady state a
flush leaves 0.5 distinct pages to checkpoint (docs/benchmarks.md, "SD-card wear").

Prints a table and PASS/FAIL per target; writes bench-out/sd_wear.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serve_harness import free_port  # noqa: E402
from converters import examples, sources  # noqa: E402
from converters.pipeline import ConvertRequest, convert  # noqa: E402
from edge_runtime.runtime import Runtime  # noqa: E402
from edge_runtime.settings import ServeSettings  # noqa: E402
from edge_runtime.store.models import DB_FILE  # noqa: E402
from edge_runtime.textable import render  # noqa: E402
from tests.broker import Broker  # noqa: E402

TARGET_LOAD_MB_H = 5.0
SETTLE_S = 35.0  # > vm.dirty_expire_centisecs (30 s): dirty pages are written back by then
# In steady state the daemon's own checkpoint (every 1,000 WAL frames) copies 0.52 distinct pages a
# flush (measured in process over 250 acknowledged flushes); the bench's checkpoint at the end of
# each short phase pays the fixed pages every checkpoint writes once per phase instead.
CHECKPOINT_BYTES_PER_FLUSH = 2150
TARGET_IDLE_KB_H = 64.0  # "~0": less than one SQLite page a minute
MODEL = "digits"


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/PID/io")


def build_store(tmp: Path) -> tuple[Path, np.ndarray]:
    """The digits MLP (fp32, reference stats from 300 rows), installed and activated."""
    x, _ = examples.digits()
    src = sources.from_sklearn(examples.train_digits_mlp(), description="digits-mlp")
    npz = tmp / "data.npz"
    np.savez(npz, input=x[:300])
    req = ConvertRequest(name=MODEL, version="1", precision="fp32", out_dir=tmp / "pkgs",
                         signer=None, calibration=npz, validation=npz)
    pkg = convert(src, req, log=lambda _m: None).package
    store = tmp / "template"
    with Runtime(store, allow_unsigned=True, restore=False) as rt:
        rt.install(pkg)
        rt.activate(MODEL, "1")
    return store, x


@dataclass
class Daemon:
    store: Path
    args: list[str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=50))

    def start(self) -> Daemon:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime.cli", "serve", "--store", str(self.store),
             "--port", str(self.port), "--allow-unsigned", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("daemon exited:\n" + "".join(self.tail))
            try:
                conn = HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    conn.close()
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("daemon not ready:\n" + "".join(self.tail))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.tail.append(line.decode(errors="replace"))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def written(self) -> int:
        assert self.proc is not None
        return write_bytes(self.proc.pid)


class Load(threading.Thread):
    """``rate`` V2 JSON requests a second on one keep-alive connection, on a fixed schedule."""

    def __init__(self, port: int, rate: float, rows: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.port, self.rate, self.rows = port, rate, rows
        self.sent = self.failed = 0
        self.stop_at = float("inf")

    def run(self) -> None:
        try:
            self._send()
        except OSError:  # the daemon went away: counted, and the phase fails on it
            self.failed += 1

    def _send(self) -> None:
        conn = HTTPConnection("127.0.0.1", self.port, timeout=10)
        t0 = time.monotonic()
        while time.monotonic() < self.stop_at:
            row = self.rows[self.sent % len(self.rows)]
            body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                           "data": row.tolist()}]}).encode()
            conn.request("POST", f"/v2/models/{MODEL}/infer", body,
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            self.sent += 1
            self.failed += resp.status != 200
            time.sleep(max(0.0, t0 + self.sent / self.rate - time.monotonic()))
        conn.close()


def checkpoint(store: Path) -> int:
    """Copy the WAL's frames into store.db now (what the daemon's automatic checkpoint does
    every 1,000 frames, past the end of a short phase); the bytes that took, read from this
    process's /proc/self/io."""
    before = write_bytes(os.getpid())
    db = sqlite3.connect(str(store / DB_FILE), timeout=30)
    try:
        busy = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0]
    finally:
        db.close()
    if busy:
        raise RuntimeError("checkpoint blocked")
    return write_bytes(os.getpid()) - before


def last_flush(store: Path) -> int:
    """When the daemon last wrote its WAL (a flush, under load). Read from the file's mtime:
    a reading connection would write its read mark into store.db-shm, and a page the bench
    dirties is one the daemon then writes without being charged for it."""
    return (store / f"{DB_FILE}-wal").stat().st_mtime_ns


def next_flush(store: Path, seen: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = last_flush(store)
        if now != seen:
            time.sleep(0.2)  # the rest of the transaction
            return last_flush(store)
        time.sleep(0.05)
    raise TimeoutError("no telemetry flush seen")


def phase(d: Daemon, *, rate: float, seconds: float, interval: float, rows: np.ndarray
          ) -> dict[str, Any]:
    """Bytes written over whole telemetry intervals (from one flush to another under load;
    idle: ``seconds`` after the last flush of the preceding load, if any)."""
    if rate <= 0:
        checkpoint(d.store)
        time.sleep(SETTLE_S)
        w0, t0 = d.written(), time.monotonic()
        time.sleep(seconds)
        w1, t1 = d.written(), time.monotonic()
        # Nothing written, nothing to checkpoint (a checkpoint's own connection would write
        # its read mark into store.db-shm: a few KB that are the bench's, not the daemon's).
        return {"rate": 0, "seconds": t1 - t0, "wal": w1 - w0,
                "checkpoint": checkpoint(d.store) if w1 > w0 else 0, "flushes": 0}
    load = Load(d.port, rate, rows)
    load.start()
    try:
        return _timed(d, load, seconds=seconds, interval=interval)
    finally:
        load.stop_at = 0
        load.join()


def _timed(d: Daemon, load: Load, *, seconds: float, interval: float) -> dict[str, Any]:
    n = next_flush(d.store, last_flush(d.store), interval * 3)
    checkpoint(d.store)
    time.sleep(SETTLE_S)  # the pages the checkpoint dirtied are written back
    n = next_flush(d.store, last_flush(d.store), interval * 3)
    w0, t0 = d.written(), time.monotonic()
    k = max(1, round(seconds / interval))
    for _ in range(k):
        n = next_flush(d.store, n, interval * 3)
    w1, t1 = d.written(), time.monotonic()
    assert load.failed == 0, f"{load.failed} requests failed"
    return {"rate": load.rate, "seconds": t1 - t0, "wal": w1 - w0,
            "checkpoint": checkpoint(d.store), "flushes": k, "requests": load.sent}


def run(label: str, template: Path, tmp: Path, *, args: list[str], phases: list[float],
        seconds: float, rows: np.ndarray) -> list[dict[str, Any]]:
    store = tmp / label.replace(" ", "-")
    subprocess.run(["cp", "-a", str(template), str(store)], check=True)
    d = Daemon(store, args).start()
    interval = _interval(d)
    out = []
    try:
        for rate in phases:
            res = phase(d, rate=rate, seconds=max(seconds, 5 * interval), interval=interval,
                        rows=rows)
            res |= {"run": label, "interval_s": interval, "bytes": res["wal"] + res["checkpoint"]}
            res["mb_per_hour"] = res["bytes"] * 3600 / res["seconds"] / 1e6
            print(f"  {label} rate={rate:g}/s: {res['bytes']} B in {res['seconds']:.0f} s "
                  f"({res['flushes']} flushes) -> {res['mb_per_hour']:.2f} MB/h", flush=True)
            out.append(res)
    finally:
        d.stop()
    return out


def _interval(d: Daemon) -> float:
    """The daemon's effective telemetry interval, from its status document."""
    conn = HTTPConnection("127.0.0.1", d.port, timeout=10)
    info = json.loads((d.store / "run" / "daemon.json").read_text())
    conn.request("GET", "/admin/status", headers={"Authorization": f"Bearer {info['admin_token']}"})
    doc = json.loads(conn.getresponse().read())
    return float(doc["settings"]["telemetry_interval_s"])


def _history(store: Path, n: int, interval: float = 15.0) -> None:
    """n sent telemetry rows ending now, one metrics and one drift row an interval, of the
    sizes the daemon writes: a store that has run for a while, not an empty table."""
    from edge_runtime.store.db import Database
    from edge_runtime.store.telemetry import TelemetryStore

    rng = np.random.default_rng(0)
    now = time.time()
    rows = []
    for i in range(n // 2):
        end = now - (n // 2 - i) * interval
        bins = {str(b): int(c) for b, c in enumerate(rng.integers(1, 40, 20), start=-400)}
        for kind, payload in (("metrics", {"requests": 150, "errors": {}, "items": 150,
                                           "latency": {"bins": bins, "sum": 1.5}}),
                              ("drift", {"encoding": "EDW1",
                                         "data": rng.bytes(880).hex()[:1180]})):
            rows.append({"kind": kind, "model": MODEL, "version": "1", "start": end - interval,
                         "end": end, "payload": payload})
    db = Database(store / DB_FILE)
    store_ = TelemetryStore(db)
    for i in range(0, len(rows), 1000):
        store_.append(rows[i:i + 1000])
    with db.transaction() as cur:
        cur.execute("UPDATE outbox SET sent_at = end")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0,
                        help="phase length (at least 3 telemetry intervals)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s under load")
    parser.add_argument("--intervals", default="10,60",
                        help="other --telemetry-interval values to measure under load")
    parser.add_argument("--history", type=int, default=10_000,
                        help="sent telemetry rows in the store before the runs")
    parser.add_argument("--quick", action="store_true", help="30 s phases, interval 5 only")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.intervals = 30.0, "5"
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp_s:
        tmp = Path(tmp_s)
        template, x = build_store(tmp)
        _history(template, args.history)
        rows = x[:1000]
        common = {"seconds": args.seconds, "rows": rows}
        results += run("default", template, tmp, args=[], phases=[0.0, args.rate], **common)
        for iv in (float(v) for v in args.intervals.split(",") if v):
            results += run(f"interval {iv:g}", template, tmp, phases=[args.rate],
                           args=["--telemetry-interval", str(iv)], **common)
        cfg = tmp / "retention.toml"
        cfg.write_text("[serve]\ntelemetry_retention_s = 3600\n")
        results += run("retention 1h", template, tmp, args=["--config", str(cfg)],
                       phases=[args.rate], **common)
        broker = Broker(tmp).start()
        try:
            results += run("fleet link", template, tmp, phases=[args.rate],
                           args=["--fleet-url", broker.url, "--device-id", "bench"], **common)
        finally:
            broker.stop()
    report(results, time.perf_counter() - t0)


def _steady(r: dict[str, Any]) -> float:
    """MB/hour of the daemon's own writes plus its checkpoints' share per flush."""
    return (r["wal"] + r["flushes"] * CHECKPOINT_BYTES_PER_FLUSH) * 3.6e-3 / r["seconds"]


def report(results: list[dict[str, Any]], total_s: float) -> None:
    print()
    print(render(["run", "interval s", "req/s", "seconds", "flushes", "daemon bytes",
                  "checkpoint bytes", "bytes/flush", "daemon MB/h", "MB/hour"],
                 [[r["run"], f"{r['interval_s']:g}", f"{r['rate']:g}", f"{r['seconds']:.0f}",
                   r["flushes"], r["wal"], r["checkpoint"],
                   r["bytes"] // r["flushes"] if r["flushes"] else "-",
                   f"{r['wal'] * 3.6e-3 / r['seconds']:.3f}", f"{r['mb_per_hour']:.3f}"]
                  for r in results]))
    idle = next(r for r in results if r["run"] == "default" and r["rate"] == 0)
    load = next(r for r in results if r["run"] == "default" and r["rate"] > 0)
    checks = [
        (f"idle: {idle['mb_per_hour'] * 1000:.1f} KB/h (target ~0: <= {TARGET_IDLE_KB_H:g} KB/h)",
         idle["mb_per_hour"] * 1000 <= TARGET_IDLE_KB_H),
        (f"{load['rate']:g} req/s, default settings: {_steady(load):.2f} MB/h with the "
         f"checkpoint amortized ({load['mb_per_hour']:.2f} with this short phase's own "
         f"checkpoint) (target <= {TARGET_LOAD_MB_H:g} MB/h)",
         _steady(load) <= TARGET_LOAD_MB_H)]
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"\ntotal {total_s:.0f} s")
    out = ROOT / "bench-out"
    out.mkdir(exist_ok=True)
    (out / "sd_wear.json").write_text(json.dumps({
        "settings_defaults": {"telemetry_interval_s": ServeSettings().telemetry_interval_s},
        "results": results, "total_s": total_s}, indent=1))


if __name__ == "__main__":
    main()
