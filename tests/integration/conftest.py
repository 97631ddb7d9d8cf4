"""A real daemon in a subprocess on a free loopback port, over a real store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_runtime.adminclient import AdminClient
from edge_runtime.daemon import RUN_FILE, RunInfo


@dataclass
class DaemonProc:
    store: Path
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    info: RunInfo | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self.info is not None
        return self.info.url

    def admin(self) -> AdminClient:
        assert self.info is not None
        return AdminClient(self.info)

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0) -> DaemonProc:
        (self.store / RUN_FILE).unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_runtime.cli", "serve", "--store", str(self.store),
                 "--port", "0", *self.args], stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **self.env})
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n"
                                   f"{self.log.read_text()[-3000:]}")
            info = RunInfo.read(self.store)
            if info is not None and info.pid == self.proc.pid:
                try:
                    with urllib.request.urlopen(info.url + "/v2/health/ready", timeout=2) as r:
                        if r.status == 200:
                            self.info = info
                            return
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"daemon not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None

    def get(self, path: str) -> tuple[int, bytes]:
        return request(self.url + path)

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None
             ) -> tuple[int, bytes]:
        return request(self.url + path, body, headers or {})

    def post_json(self, path: str, doc: object) -> tuple[int, dict[str, object]]:
        status, body = self.post(path, json.dumps(doc).encode(),
                                 {"Content-Type": "application/json"})
        return status, json.loads(body)


def request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            method: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class DaemonFactory:
    """factory(store, *args, env={}) -> DaemonProc (not started); close() kills them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.made: list[DaemonProc] = []

    def __call__(self, store: Path, *args: str, env: dict[str, str] | None = None
                 ) -> DaemonProc:
        d = DaemonProc(store, list(args), env or {}, self.log_dir / f"daemon-{len(self.made)}.log")
        self.made.append(d)
        return d

    def close(self) -> None:
        for d in self.made:
            d.kill()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[DaemonFactory]:
    """daemon_factory(store, *args, env={}) -> DaemonProc (not started); all stopped after."""
    factory = DaemonFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_daemon_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonFactory]:
    """daemon_factory shared by a module, for daemons whose state the module's tests share."""
    factory = DaemonFactory(tmp_path_factory.mktemp("daemon-logs"))
    yield factory
    factory.close()
