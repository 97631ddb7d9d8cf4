"""Blue-green swap and rollback through the CLI while clients keep sending requests.

Four client threads each keep one connection alive and send requests back to back (V2 JSON, V2
binary, TF-Serving, /predict). Meanwhile `edge-runtime install` and `activate` go through the
running daemon's admin endpoint, then `rollback`. No request may fail, every answer must be
exactly the math of the version that served it, and each thread must see 1 -> 2 -> 1 in order.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from tests.conftest import Keys, build_package
from tests.integration.conftest import DaemonFactory, DaemonProc
from tests.integration.support import (
    affine,
    call,
    edge,
    make_store,
    split_binary_response,
    v2_binary,
    v2_json,
)

X = np.arange(8, dtype=np.float32).reshape(2, 4) / 3
Sender = Callable[[HTTPConnection], tuple[str | None, np.ndarray]]


def v2_json_sender(conn: HTTPConnection) -> tuple[str | None, np.ndarray]:
    reply = call("", "POST", "/v2/models/gemm/infer", json.dumps(v2_json("x", X)).encode(),
                 {"Content-Type": "application/json"}, conn=conn)
    assert reply.status == 200, reply.body
    doc = reply.json()
    return doc["model_version"], np.reshape(doc["outputs"][0]["data"], (2, 3))


def v2_binary_sender(conn: HTTPConnection) -> tuple[str | None, np.ndarray]:
    body, headers = v2_binary({"x": ("FP32", X)}, [{"name": "y",
                                                     "parameters": {"binary_data": True}}])
    reply = call("", "POST", "/v2/models/gemm/infer", body, headers, conn=conn)
    assert reply.status == 200, reply.body
    doc, tail = split_binary_response(reply.body,
                                      int(reply.headers["inference-header-content-length"]))
    return doc["model_version"], np.frombuffer(tail, "<f4").reshape(2, 3)


def tf_sender(conn: HTTPConnection) -> tuple[str | None, np.ndarray]:
    reply = call("", "POST", "/v1/models/gemm:predict", json.dumps({"instances": X.tolist()})
                 .encode(), {"Content-Type": "application/json"}, conn=conn)
    assert reply.status == 200, reply.body
    return None, np.asarray(reply.json()["predictions"])


def simple_sender(conn: HTTPConnection) -> tuple[str | None, np.ndarray]:
    reply = call("", "POST", "/predict/gemm", json.dumps(X.tolist()).encode(),
                 {"Content-Type": "application/json"}, conn=conn)
    assert reply.status == 200, reply.body
    return None, np.asarray(reply.json()["outputs"]["y"])


@dataclass(eq=False)
class Client:
    """One client thread: the version of every answer in order, and every failure."""

    url: str
    send: Sender
    expected: dict[str, np.ndarray]
    stop: threading.Event
    seen: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        parts = urlsplit(self.url)
        conn = HTTPConnection(parts.hostname or "", parts.port, timeout=15)
        try:
            while not self.stop.is_set():
                self._one(conn)
        finally:
            conn.close()

    def _one(self, conn: HTTPConnection) -> None:
        try:
            version, y = self.send(conn)
        except Exception as exc:  # collected, so the test reports every failure at the end
            self.failures.append(f"{type(exc).__name__}: {exc}")
            conn.close()
            return
        which = [v for v, e in self.expected.items() if np.allclose(y, e, rtol=1e-5, atol=1e-6)]
        if len(which) != 1 or (version is not None and version != which[0]):
            self.failures.append(f"version {version} answered {y.tolist()}")
            return
        self.seen.append(which[0])


def marks(clients: list[Client]) -> list[int]:
    return [len(c.seen) for c in clients]


def wait_for(clients: list[Client], version: str, after: list[int] | None = None,
             timeout: float = 30.0) -> None:
    """Until every client has had an answer from ``version`` after its first ``after`` ones."""
    after = after or [0] * len(clients)
    deadline = time.monotonic() + timeout
    while any(version not in c.seen[n:] for c, n in zip(clients, after, strict=True)):
        assert time.monotonic() < deadline, f"never saw version {version}"
        assert not any(c.failures for c in clients), [c.failures for c in clients]
        time.sleep(0.02)


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("swap-pkgs")
    return {v: build_package(out, keys.signer, version=v, seed=int(v) * 10) for v in ("1", "2")}


def start_daemon(tmp_path: Path, keys: Keys, daemon_factory: DaemonFactory, pkgs: list[Path],
                 *args: str) -> DaemonProc:
    # no response cache: every request must reach the batcher and the model
    store = make_store(tmp_path / "store", keys, pkgs, {"gemm": "1"})
    return daemon_factory(store, "--trusted-keys", str(keys.public), "--cache-entries", "0",
                          *args).start()


@contextmanager
def running(clients: list[Client]) -> Iterator[list[Client]]:
    for c in clients:
        c.thread.start()
    try:
        yield clients
    finally:
        for c in clients:
            c.stop.set()
        for c in clients:
            c.thread.join(timeout=30)


@pytest.mark.timeout(120)
def test_install_activate_rollback_under_load(tmp_path: Path, keys: Keys,
                                              daemon_factory: DaemonFactory,
                                              packages: dict[str, Path]) -> None:
    d = start_daemon(tmp_path, keys, daemon_factory, [packages["1"]])
    expected = {v: affine(p, keys, X) for v, p in packages.items()}
    stop = threading.Event()
    senders = (v2_json_sender, v2_binary_sender, tf_sender, simple_sender)
    with running([Client(d.url, send, expected, stop) for send in senders]) as clients:
        wait_for(clients, "1")
        store = str(d.store)
        installed = edge("install", packages["2"], "--store", store, "--json")
        assert installed.returncode == 0, installed.stderr
        doc = json.loads(installed.stdout)
        assert (doc["state"], doc["via"]) == ("installed", "daemon")
        wait_for(clients, "1", marks(clients))  # installing does not touch the serving version
        before_switch = marks(clients)

        activated = edge("activate", "gemm", "2", "--store", store)
        assert activated.returncode == 0, activated.stderr
        assert activated.stdout.strip() == "activate gemm 2: committed  [via daemon]"
        wait_for(clients, "2", marks(clients))

        rolled = edge("rollback", "gemm", "--store", store, "--json")
        assert rolled.returncode == 0, rolled.stderr
        doc = json.loads(rolled.stdout)
        assert (doc["state"], doc["target"], doc["via"]) == ("rolled_back", "1", "daemon")
        wait_for(clients, "1", marks(clients))
    assert [c.failures for c in clients] == [[], [], [], []]
    for c, n in zip(clients, before_switch, strict=True):
        assert set(c.seen[:n]) == {"1"}
        # each connection saw the versions switch exactly once each way, in this order
        assert re.fullmatch("1+2+1+", "".join(c.seen)), "".join(c.seen)
    status = json.loads(edge("status", "--store", str(d.store), "--json").stdout)
    assert status["source"] == "daemon"
    served = {r["version"]: r["requests"] for r in status["windows"]["60s"]}
    assert served["1"] > 0 and served["2"] > 0
    assert sum(sum(r["errors"].values()) for r in status["windows"]["60s"]) == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("batching", [["--max-batch-size", "8"], ["--max-batch-size", "0"]],
                         ids=["batching", "no-batching"])
def test_rapid_swaps_lose_no_request(tmp_path: Path, keys: Keys, daemon_factory: DaemonFactory,
                                     packages: dict[str, Path], batching: list[str]) -> None:
    """Back-to-back activate/rollback cycles through the admin API under 8 clients.

    Regression: a swap used to unload the old version while requests that had already picked it
    waited in its batch queue (500 "model is unloaded"), and retired its batcher by cancelling
    the worker, leaving the queued requests hanging forever.
    """
    d = start_daemon(tmp_path, keys, daemon_factory, list(packages.values()), *batching)
    expected = {v: affine(p, keys, X) for v, p in packages.items()}
    stop = threading.Event()
    senders = (v2_json_sender, v2_binary_sender) * 4
    admin = d.admin()
    with running([Client(d.url, send, expected, stop) for send in senders]) as clients:
        wait_for(clients, "1")
        for _ in range(8):
            assert admin.call("POST", "/admin/models/gemm/activate",
                              {"version": "2"})["state"] == "committed"
            assert admin.call("POST", "/admin/models/gemm/rollback")["state"] == "rolled_back"
        wait_for(clients, "1", marks(clients))
    assert [c.failures for c in clients] == [[]] * len(clients)
