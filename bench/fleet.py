"""Fleet benchmark (issue 5): canary rollouts and telemetry ingest against one local Mosquitto.

    .venv/bin/python bench/fleet.py [--devices 100,1000] [--gated] [--quick] [--json PATH]

Every part runs in its own process, so each one's CPU and memory are its own:

    mosquitto    started here on a free port (tests/broker.py) with no connection limit
    manager      `python -m fleet.cli serve --tick 0.2`, the real service; its memory is read from
                 /proc/PID/status (VmRSS sampled every 0.25 s, VmHWM at the end)
    simulator    fleet.sim devices (real MQTT clients running the real agent over a real store),
                 at most --per-sim devices per process (`bench/fleet.py --sim`)
    load         `bench/fleet.py --loadgen`: 16 MqttLinks publishing valid telemetry (QoS 1)

Per fleet size N: publish v1, v2 (and v3), wait until all N devices have reported, deploy v1 to
all (timed), then roll v2 out with steps 5,25,50,100, bake 0 and no metric gates (min_requests
0), timed until the rollout is `completed` and every device reports v2 committed (read from the
manager's database). Devices use a 1 s probation. --gated adds a rollout of v3 with
min_requests 20 (metric gates judged on canary telemetry at every step).

Ingest, on the same manager after the simulator has stopped: the load generator publishes
--messages telemetry messages (realistic metrics intervals, as ModelMetrics.drain_interval()
produces them). The rate is rows stored in the manager's `metrics` table per second, measured
from a backlog (the manager is stopped with SIGSTOP while the broker queues, then resumed: the
manager's own throughput) and live (generator running at the same time on the same 2 cores).
Baselines in the same run: a manager committing one transaction per message (ingest_batch=1),
end to end over the same broker, and FleetManager.ingest in-process, one message vs 2,000 per
transaction.

Prints tables and a PASS/FAIL line per target; writes bench-out/fleet.json (or --json PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_runtime.textable import render  # noqa: E402

PY = sys.executable
FLEET = "bench"
MODEL = "digits"
BROKER_CONF = "max_connections -1\n"
STEPS = (5.0, 25.0, 50.0, 100.0)
ROLLOUT_BUDGET_S = 60.0
INGEST_TARGET = 5000.0
RSS_BUDGET_MB = 250.0


# -- processes ---------------------------------------------------------------------------------
def _status_kb(pid: int, key: str) -> int:
    with suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with suppress(OSError), open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


@dataclass
class Proc:
    """A child process with its log file and a memory sampler."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    rss_max_kb: int = 0
    hwm_kb: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def spawn(cls, name: str, args: list[str], workdir: Path) -> Proc:
        log = workdir / f"{name}.log"
        with log.open("ab") as fh:
            popen = subprocess.Popen([PY, *args], stdout=fh, stderr=subprocess.STDOUT,
                                     cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        proc = cls(name, popen, log)
        threading.Thread(target=proc._sample, daemon=True).start()
        return proc

    def _sample(self) -> None:
        while not self._stop.wait(0.25) and self.popen.poll() is None:
            self.rss_max_kb = max(self.rss_max_kb, _status_kb(self.popen.pid, "VmRSS"))
            self.hwm_kb = max(self.hwm_kb, _status_kb(self.popen.pid, "VmHWM"))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def says(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")

    def check(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited {self.popen.returncode}:\n{tail}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        self.hwm_kb = max(self.hwm_kb, _status_kb(self.pid, "VmHWM"))
        self._stop.set()
        if self.popen.poll() is None:
            with suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def until(cond: Any, timeout: float, what: str, *procs: Proc, poll: float = 0.05) -> float:
    """Wait for cond(); returns the seconds waited."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        for p in procs:
            p.check()
        time.sleep(poll)
    return time.monotonic() - t0


# -- the fleet under test -----------------------------------------------------------------------
@dataclass
class Setup:
    work: Path
    pub: Path
    packages: dict[str, Path]


def make_setup(work: Path) -> Setup:
    """Signed packages of a small one-layer ONNX model (the sim backend does not run it)."""
    from edge_runtime.signing import Signer, generate_keypair
    from tests.conftest import build_package

    priv, pub = generate_keypair(work / "keys", "bench")
    signer = Signer.load(priv)
    pkgs = {v: build_package(work / "pkgs", signer, name=MODEL, version=v, seed=int(v))
            for v in ("1", "2", "3")}
    return Setup(work, pub, pkgs)


class Run:
    """One broker, one manager process and the simulator processes for a fleet of N devices."""

    def __init__(self, setup: Setup, n: int, args: argparse.Namespace) -> None:
        from fleet.core import Fleet
        from fleet.settings import ManagerSettings
        from tests.broker import Broker

        self.n = n
        self.dir = setup.work / f"n{n}"
        self.dir.mkdir()
        self.broker = Broker(self.dir, extra_conf=BROKER_CONF).start()
        self.db_path = self.dir / "fleet.db"
        self.settings = ManagerSettings(db=self.db_path, artifacts=self.dir / "art",
                                        fleet=FLEET, trusted_keys=(setup.pub,))
        self.fleet = Fleet(self.settings)  # the admin side (what `edgectl` does), same database
        for pkg in setup.packages.values():
            self.fleet.registry.publish(pkg)
        self.ro = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30,
                                  check_same_thread=False)
        self.manager = self.start_manager()
        shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else self.dir
        self.sim_dir = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir=shm))
        per = args.per_sim
        self.sims = [Proc.spawn(f"sim{i}", [
            __file__, "--sim", self.broker.url, "--trusted-key", str(setup.pub),
            "--first", str(lo), "--count", str(min(per, n - lo)), "--workdir", str(self.sim_dir),
            "--rps", str(args.rps), "--telemetry-interval", str(args.telemetry_interval)],
            self.dir) for i, lo in enumerate(range(0, n, per))]

    def start_manager(self, *, batch: int | None = None) -> Proc:
        """The real `edgectl serve`; with a batch size, the same service run from this file
        (the CLI has no option for it): the baseline with one transaction per message."""
        common = ["--db", str(self.db_path), "--artifacts", str(self.settings.artifacts),
                  "--fleet", FLEET, "--trusted-keys", str(self.settings.trusted_keys[0]),
                  "--broker", self.broker.url]
        cmd = ["-m", "fleet.cli", "serve", *common, "--tick", "0.2", "--log-level", "warning",
               "--enrollment", "open"]  # the simulated devices are not registered
        if batch is not None:
            cmd = [__file__, "--manager", "--batch", str(batch), *common]
        proc = Proc.spawn("manager" if batch is None else f"manager-batch{batch}", cmd, self.dir)
        until(lambda: proc.says("fleet manager for"), 30, "the manager to start", proc)
        return proc

    @property
    def procs(self) -> list[Proc]:
        return [self.manager, *self.sims]

    def count(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        return int(self.ro.execute(sql, params).fetchone()[0])

    def on_version(self, version: str) -> int:
        return self.count("SELECT COUNT(*) FROM devices WHERE json_extract(reported, "
                          "'$.models.digits.active') = ? AND json_extract(reported, "
                          "'$.models.digits.state') = 'committed'", (version,))

    def stop_sims(self) -> None:
        for sim in self.sims:
            sim.popen.send_signal(signal.SIGTERM)
        for sim in self.sims:
            sim.stop(timeout=60)

    def close(self) -> None:
        self.stop_sims()
        self.manager.stop()
        self.broker.stop()
        self.ro.close()
        self.fleet.db.close()
        subprocess.run(["rm", "-rf", str(self.sim_dir)], check=False)


def deploy_v1(run: Run) -> float:
    from fleet.deploy import deploy
    from fleet.inventory import Target

    t0 = time.monotonic()
    deploy(run.fleet, MODEL, "1", Target.parse("all"), probation={"seconds": 0.0})
    run.fleet.registry.set_alias(MODEL, "production", "1")
    until(lambda: run.on_version("1") == run.n, 300, "v1 everywhere", *run.procs)
    return time.monotonic() - t0


def rollout(run: Run, version: str, *, min_requests: int, probation_s: float,
            timeout: float) -> dict[str, Any]:
    """Start a rollout and time it: each step, `completed`, and every device reporting it."""
    from fleet.inventory import Target
    from fleet.rollout.machine import RolloutConfig

    cfg = RolloutConfig(steps=STEPS, bake_s=0.0, min_requests=min_requests,
                        device_timeout_s=timeout, probation={"seconds": probation_s})
    pids = {"manager": [run.manager.pid], "sim": [s.pid for s in run.sims],
            "broker": [run.broker.proc.pid] if run.broker.proc else []}
    cpu0 = {k: sum(cpu_s(p) for p in v) for k, v in pids.items()}
    t0 = time.monotonic()
    r = run.fleet.rollouts.start(MODEL, version, Target.parse("all"), cfg)
    step_done: dict[int, float] = {}
    completed_at = None
    while time.monotonic() - t0 < timeout:
        for p in run.procs:
            p.check()
        state, step = run.ro.execute("SELECT state, step FROM rollouts WHERE id = ?",
                                     (r.id,)).fetchone()
        now = time.monotonic() - t0
        for s in range(step):
            step_done.setdefault(s, now)
        if state == "completed" and completed_at is None:
            completed_at = now
            step_done.setdefault(len(STEPS) - 1, now)
        if state in ("rolled_back", "aborted", "paused"):
            raise RuntimeError(f"rollout {r.id} ended {state}: {run.fleet.rollouts.get(r.id)}")
        if completed_at is not None and run.on_version(version) == run.n:
            break
        time.sleep(0.05)
    else:
        raise TimeoutError(f"rollout of v{version} not done in {timeout:.0f} s "
                           f"({run.on_version(version)}/{run.n} devices)")
    wall = time.monotonic() - t0
    marks = [step_done[s] for s in sorted(step_done)]
    return {"completed_s": completed_at, "all_devices_s": wall, "rollout": r.id,
            "step_s": [b - a for a, b in zip([0.0, *marks], marks, strict=False)],
            "cpu_s": {k: sum(cpu_s(p) for p in v) - cpu0[k] for k, v in pids.items()}}


def fleet_size(setup: Setup, n: int, args: argparse.Namespace) -> dict[str, Any]:
    run = Run(setup, n, args)
    try:
        res: dict[str, Any] = {"devices": n, "sim_processes": len(run.sims)}
        res["online_s"] = until(lambda: run.count(
            "SELECT COUNT(*) FROM devices WHERE reported IS NOT NULL") == n, 300,
            "every device in the inventory", *run.procs)
        res["deploy_v1_s"] = deploy_v1(run)
        res["rollout"] = rollout(run, "2", min_requests=0, probation_s=args.probation,
                                 timeout=300)
        if args.gated:
            res["rollout_gated"] = rollout(run, "3", min_requests=20,
                                           probation_s=args.probation, timeout=300)
        res["manager_rss_fleet_mb"] = run.manager.rss_max_kb / 1024
        res["sim_rss_mb"] = sum(s.rss_max_kb for s in run.sims) / 1024
        run.stop_sims()
        res["ingest"] = {mode: ingest_e2e(run, args.messages, backlog=mode == "backlog")
                         for mode in ("backlog", "live")}
        run.manager.stop()
        res["manager_vmhwm_mb"] = run.manager.hwm_kb / 1024
        res["manager_rss_max_mb"] = run.manager.rss_max_kb / 1024
        run.manager = run.start_manager(batch=1)
        res["ingest"]["naive_backlog"] = ingest_e2e(run, max(args.messages // 10, 1000),
                                                    backlog=True)
        return res
    finally:
        run.close()


# -- ingest -----------------------------------------------------------------------------------
def telemetry_payloads(devices: int, count: int) -> list[tuple[str, bytes]]:
    """Valid telemetry messages, each a realistic metrics interval of one device."""
    from edge_runtime.monitor.window import ModelMetrics
    from edge_runtime.protocol import messages as m
    from edge_runtime.protocol.topics import TopicScheme

    rng = random.Random(5)
    intervals = []
    for _ in range(64):
        mm = ModelMetrics()
        for _ in range(rng.randrange(5, 60)):
            mm.record(MODEL, "1", rng.uniform(0.0015, 0.006))
        if rng.random() < 0.3:
            mm.record_error(MODEL, "1", "inference")
        intervals.append(mm.drain_interval()[0])
    topics = TopicScheme(FLEET)
    out = []
    for i in range(count):
        p = intervals[i % len(intervals)]
        t = m.Telemetry(uuid.uuid4().hex, "metrics", p["model"], p["version"], p["start"],
                        p["end"], {k: p[k] for k in ("requests", "errors", "items", "latency")})
        out.append((topics.telemetry(f"sim-{i % devices:05d}"), m.encode(t)))
    return out


async def _loadgen(url: str, devices: int, count: int, links: int, window: int) -> None:
    from edge_runtime.protocol.link import MqttSettings
    from edge_runtime.protocol.mqtt import MqttLink

    msgs = telemetry_payloads(devices, count)
    settings = MqttSettings.from_url(url)
    conns = [MqttLink(settings, client_id=f"bench-load-{i}", clean_start=True)
             for i in range(links)]
    for c in conns:
        await c.start()
    for c in conns:
        await c.wait_connected(10)
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # go

    async def one(c: MqttLink, part: list[tuple[str, bytes]]) -> None:
        for i in range(0, len(part), window):
            await asyncio.gather(*(c.publish(t, p) for t, p in part[i:i + window]))

    t0 = time.monotonic()
    await asyncio.gather(*(one(c, msgs[i::links]) for i, c in enumerate(conns)))
    print(json.dumps({"published": count, "seconds": time.monotonic() - t0}), flush=True)
    for c in conns:
        await c.stop()


def ingest_e2e(run: Run, messages: int, *, backlog: bool) -> dict[str, Any]:
    """Live: generator and manager at once. Backlog: the broker queues while the manager is
    stopped (SIGSTOP), then the manager drains it."""
    before = run.count("SELECT COUNT(*) FROM metrics")
    gen = subprocess.Popen([PY, __file__, "--loadgen", run.broker.url, "--devices", str(run.n),
                            "--messages", str(messages)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, cwd=ROOT, text=True)
    assert gen.stdin is not None and gen.stdout is not None
    json.loads(gen.stdout.readline())  # connected
    mgr = run.manager
    cpu0 = cpu_s(mgr.pid)
    if backlog:
        mgr.popen.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    gen.stdin.write("go\n")
    gen.stdin.flush()
    pub = json.loads(gen.stdout.readline())
    if backlog:
        time.sleep(0.5)  # let the broker take in the last acknowledged messages
        t0 = time.monotonic()
        mgr.popen.send_signal(signal.SIGCONT)
    while (stored := run.count("SELECT COUNT(*) FROM metrics") - before) < messages:
        if time.monotonic() - t0 > 120:
            raise TimeoutError(f"ingest: {stored}/{messages} stored in 120 s")
        mgr.check()
        time.sleep(0.02)
    seconds = time.monotonic() - t0
    gen.wait(30)
    return {"messages": messages, "seconds": seconds, "rate": messages / seconds,
            "generator_rate": pub["published"] / pub["seconds"],
            "manager_cpu_s": cpu_s(mgr.pid) - cpu0,
            "rss_mb": _status_kb(mgr.pid, "VmRSS") / 1024}


def ingest_inprocess(setup: Setup, messages: int) -> dict[str, Any]:
    """Baseline without MQTT: FleetManager.ingest, one transaction per message vs per batch."""
    from edge_runtime.protocol.link import Message
    from fleet.core import Fleet
    from fleet.manager import FleetManager
    from fleet.settings import Enrollment, ManagerSettings

    class _NoLink:
        def __init__(self, **_kw: Any) -> None:
            pass

    out = {}
    msgs = [Message(t, p) for t, p in telemetry_payloads(1000, messages)]
    for label, batch in (("batched", ManagerSettings.ingest_batch), ("one per message", 1)):
        d = setup.work / f"inproc-{batch}"
        fleet = Fleet(ManagerSettings(db=d / "fleet.db", artifacts=d / "art", fleet=FLEET,
                                      trusted_keys=(setup.pub,), enrollment=Enrollment.OPEN))
        fleet.registry.publish(setup.packages["1"])  # telemetry for unknown versions is dropped
        manager = FleetManager(fleet, _NoLink)
        n = messages if batch > 1 else min(messages, 3000)
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            manager.ingest(msgs[i:i + batch])
        seconds = time.perf_counter() - t0
        stored = fleet.db.query("SELECT COUNT(*) FROM metrics")[0][0]
        assert stored == n, (stored, n)
        out[label] = {"batch": batch, "messages": n, "rate": n / seconds}
        fleet.db.close()
    return out


# -- the child processes ------------------------------------------------------------------------
async def _sim(args: argparse.Namespace) -> None:
    """Devices sim-{first} .. sim-{first+count-1}, as `edgectl sim` runs them."""
    from edge_runtime.protocol.link import MqttSettings
    from fleet.sim import SimConfig, SimDevice, Simulator

    cfg = SimConfig(0, MqttSettings.from_url(args.sim), fleet=FLEET,
                    trusted_keys=(Path(args.trusted_key),), workdir=Path(args.workdir),
                    rps=args.rps, telemetry_interval_s=args.telemetry_interval)
    sim = Simulator(cfg)
    rng = random.Random(args.first)
    sim.devices = [SimDevice(i, cfg, Path(args.workdir), random.Random(rng.random()))
                   for i in range(args.first, args.first + args.count)]
    await sim.start()
    print(f"{args.count} simulated devices", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await sim.stop()


async def _manager(args: argparse.Namespace) -> None:
    """`edgectl serve` with another ingest batch size (the baseline)."""
    from edge_runtime.protocol.link import MqttSettings
    from edge_runtime.protocol.mqtt import MqttLink
    from fleet.core import Fleet
    from fleet.manager import FleetManager
    from fleet.settings import Enrollment, ManagerSettings

    settings = ManagerSettings(db=Path(args.db), artifacts=Path(args.artifacts), fleet=FLEET,
                               trusted_keys=(Path(args.trusted_keys),),
                               mqtt=MqttSettings.from_url(args.broker), tick_s=0.2,
                               ingest_batch=args.batch, enrollment=Enrollment.OPEN)
    manager = FleetManager(Fleet(settings), lambda **k: MqttLink(settings.mqtt, **k))
    await manager.start()
    print("fleet manager for", args.broker, flush=True)
    await asyncio.Event().wait()


# -- report -----------------------------------------------------------------------------------
def report(sizes: list[dict[str, Any]], inproc: dict[str, Any]) -> list[tuple[str, bool]]:
    rows = []
    for r in sizes:
        ro, cpu = r["rollout"], r["rollout"]["cpu_s"]
        rows.append([r["devices"], r["sim_processes"], f"{r['online_s']:.1f}",
                     f"{r['deploy_v1_s']:.1f}", f"{ro['completed_s']:.1f}",
                     f"{ro['all_devices_s']:.1f}", " / ".join(f"{s:.1f}" for s in ro["step_s"]),
                     f"{cpu['manager']:.1f} / {cpu['sim']:.1f} / {cpu['broker']:.1f}",
                     f"{r['rollout_gated']['all_devices_s']:.1f}" if "rollout_gated" in r
                     else "-"])
    print(render(["devices", "sim procs", "all reported s", "deploy v1 s", "v2 completed s",
                  "all on v2 s", "per step s (5/25/50/100%)",
                  "CPU s in rollout (manager / sim / broker)", "gated rollout s"], rows))
    rows = []
    for r in sizes:
        ing = r["ingest"]
        cpu = [1e6 * ing[k]["manager_cpu_s"] / ing[k]["messages"]
               for k in ("backlog", "naive_backlog")]
        rows.append([r["devices"], f"{ing['backlog']['rate']:.0f}",
                     f"{ing['live']['rate']:.0f} ({ing['live']['generator_rate']:.0f})",
                     f"{ing['naive_backlog']['rate']:.0f}",
                     f"{ing['backlog']['rate'] / ing['naive_backlog']['rate']:.1f}x",
                     f"{cpu[0]:.0f} / {cpu[1]:.0f}",
                     f"{r['manager_rss_fleet_mb']:.0f}", f"{r['manager_vmhwm_mb']:.0f}",
                     f"{r['sim_rss_mb']:.0f}"])
    print("\n" + render(["devices", "ingest backlog msg/s", "live msg/s (generator)",
                         "baseline: 1 txn/msg, backlog", "ours / baseline",
                         "manager CPU us/msg (ours / baseline)", "manager RSS MB (fleet phase)",
                         "manager peak MB (VmHWM)", "sim RSS MB"], rows))
    b, n = inproc["batched"], inproc["one per message"]
    print("\n" + render(["in-process FleetManager.ingest", "batch", "msg/s", "x"], [
        ["ours: one transaction per batch", b["batch"], f"{b['rate']:.0f}",
         f"{b['rate'] / n['rate']:.1f}x"],
        ["baseline: one transaction per message", 1, f"{n['rate']:.0f}", "1.0x"]]))
    checks = []
    for r in sizes:
        if r["devices"] != 1000:
            continue
        ing, ro = r["ingest"], r["rollout"]
        checks += [
            (f"1,000 devices: 4-step rollout, no bake, completed and all on v2 <= 60 s "
             f"({ro['all_devices_s']:.1f} s)", ro["all_devices_s"] <= ROLLOUT_BUDGET_S),
            (f"1,000 devices: manager ingests >= 5,000 telemetry msg/s (backlog "
             f"{ing['backlog']['rate']:.0f}; live {ing['live']['rate']:.0f} with the "
             f"generator at {ing['live']['generator_rate']:.0f})",
             ing["backlog"]["rate"] >= INGEST_TARGET),
            (f"1,000 devices: manager RSS <= 250 MB (VmHWM {r['manager_vmhwm_mb']:.0f} MB)",
             r["manager_vmhwm_mb"] <= RSS_BUDGET_MB)]
    return checks


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", default="100,1000", help="fleet sizes, comma-separated")
    parser.add_argument("--messages", type=int, default=30000, help="telemetry per ingest run")
    parser.add_argument("--rps", type=float, default=1.0, help="sim requests/s per device")
    parser.add_argument("--telemetry-interval", type=float, default=5.0)
    parser.add_argument("--probation", type=float, default=1.0, help="device probation, s")
    parser.add_argument("--per-sim", type=int, default=1000, help="devices per sim process")
    parser.add_argument("--gated", action="store_true", help="also a rollout with min_requests")
    parser.add_argument("--quick", action="store_true", help="100 devices, fewer messages")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-out" / "fleet.json",
                        help="where to write the results")
    # child processes
    for flag in ("--loadgen", "--sim", "--trusted-key", "--workdir", "--db", "--artifacts",
                 "--trusted-keys", "--broker", "--fleet"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    parser.add_argument("--manager", action="store_true", help=argparse.SUPPRESS)
    for flag, default in (("--first", 0), ("--count", 0), ("--batch", 1), ("--links", 16),
                          ("--window", 64)):
        parser.add_argument(flag, type=int, default=default, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse()
    if args.loadgen:
        asyncio.run(_loadgen(args.loadgen, int(args.devices), args.messages, args.links,
                             args.window))
        return
    if args.sim or args.manager:
        asyncio.run(_sim(args) if args.sim else _manager(args))
        return
    if args.quick:
        args.devices, args.messages = "100", 10000
    t0 = time.monotonic()
    out = args.json
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"args": vars(args), "sizes": []}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        setup = make_setup(Path(tmp))
        results["ingest_inprocess"] = ingest_inprocess(setup, args.messages)
        for n in map(int, args.devices.split(",")):
            results["sizes"].append(fleet_size(setup, n, args))
            out.write_text(json.dumps(results, indent=1, default=str))  # partial results too
            print(f"{n} devices done at {time.monotonic() - t0:.0f} s", file=sys.stderr)
    checks = report(results["sizes"], results["ingest_inprocess"])
    results["load_average"] = os.getloadavg()
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"\n(whole run {time.monotonic() - t0:.0f} s; load average "
          f"{results['load_average'][0]:.1f} at the end)\n")
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")


if __name__ == "__main__":
    main()
