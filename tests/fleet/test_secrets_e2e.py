"""Broker passwords stay secret end to end: real daemons (`edge-runtime serve`) and managers
(`edgectl serve`) log in to a Mosquitto that requires passwords (the shipped ACL config), given
the password in a file, in the environment or (still working, with a warning) in the URL, all
at debug log level. The passwords appear in no log, no `status --json`, no run file, no error
message, and (file and environment) not on the command line."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_runtime.protocol.link import MqttSettings
from edge_runtime.protocol.mqtt import MqttLink
from tests.fleet.aclbroker import AclBroker, password
from tests.integration.conftest import DaemonFactory, DaemonProc
from tests.integration.support import edge, one_line_error

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

DEVICES = ("pi-file", "pi-env", "pi-url")
WRONG = "wrong-Zq9xSecretMark"  # the password pi-wrong's daemon is (wrongly) given
SECRETS = (*(password(u) for u in ("fleet-manager", *DEVICES, "pi-wrong")), WRONG)


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[AclBroker]:
    b = AclBroker(tmp_path, users=("fleet-manager", *DEVICES, "pi-wrong"))
    b.start()
    yield b
    b.stop()


def _secret_file(tmp_path: Path, name: str, content: str) -> Path:
    f = tmp_path / f"{name}.password"
    f.write_text(content + "\n")
    f.chmod(0o600)
    return f


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows a password:\n{text[-3000:]}"


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


class Manager:
    """`edgectl serve` in a subprocess, its stdout and stderr in a log file."""

    def __init__(self, tmp_path: Path, name: str, broker_url: str, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.db, self.log = tmp_path / f"{name}.db", tmp_path / f"{name}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fleet.cli", "serve", "--db", str(self.db),
                 "--artifacts", str(tmp_path / f"{name}-artifacts"), "--broker", broker_url,
                 "--log-level", "debug", "--enrollment", "open", *args],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def online(self) -> set[str]:
        if not self.db.exists():
            return set()
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as db:
                return {r[0] for r in db.execute(
                    "SELECT id FROM devices WHERE status = 'online'")}
        except sqlite3.OperationalError:  # not created yet
            return set()

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        return self.log.read_text()


def until(cond: Callable[[], bool], what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def _start_daemons(tmp_path: Path, daemons: DaemonFactory, port: int) -> dict[str, DaemonProc]:
    """One daemon per way of giving the password, and one with a wrong password."""
    def url(user: str, pw: str | None = None) -> str:
        return f"mqtt://{user}{':' + pw if pw else ''}@127.0.0.1:{port}"

    common = ("--log-level", "debug", "--telemetry-interval", "0.5")
    made = {
        "pi-file": daemons(tmp_path / "store-file", "--fleet-url", url("pi-file"), "--device-id",
                           "pi-file", "--fleet-password-file",
                           str(_secret_file(tmp_path, "pi-file", password("pi-file"))), *common),
        "pi-env": daemons(tmp_path / "store-env", "--fleet-url", url("pi-env"), "--device-id",
                          "pi-env", *common, env={"EDGE_FLEET_PASSWORD": password("pi-env")}),
        "pi-url": daemons(tmp_path / "store-url", "--fleet-url", url("pi-url", password("pi-url")),
                          "--device-id", "pi-url", *common),
        "pi-wrong": daemons(tmp_path / "store-wrong", "--device-id", "pi-wrong", *common,
                            env={"EDGE_FLEET_URL": url("pi-wrong"),
                                 "EDGE_FLEET_PASSWORD_FILE": str(
                                     _secret_file(tmp_path, "pi-wrong", WRONG))}),
    }
    for d in made.values():
        d.start()
    return made


def test_passwords_appear_nowhere(tmp_path: Path, acl_broker: AclBroker,
                                  daemons: DaemonFactory) -> None:
    port = acl_broker.port
    procs = _start_daemons(tmp_path, daemons, port)
    manager_pw = password("fleet-manager")
    login = f"mqtt://fleet-manager@127.0.0.1:{port}"
    managers: dict[str, tuple[str, list[str], dict[str, str] | None]] = {
        "by-file": (login, ["--broker-password-file",
                            str(_secret_file(tmp_path, "manager", manager_pw))], None),
        "by-env": (login, [], {"EDGECTL_BROKER_PASSWORD": manager_pw}),
        "in-url": (f"mqtt://fleet-manager:{manager_pw}@127.0.0.1:{port}", [], None),
    }
    logs: dict[str, str] = {}
    for name, (url, args, env) in managers.items():
        m = Manager(tmp_path, name, url, *args, env=env)
        # every device but the wrong one shows up: each password really reached the broker
        until(lambda m=m: m.online() == set(DEVICES), f"{name}: the devices join", m.log)  # type: ignore[misc]
        if name != "in-url":
            assert_no_secret(f"manager {name}'s command line", _cmdline(m.proc.pid))
        logs[f"manager {name}"] = m.stop()

    for name in managers:  # the URL shown says a password is set, never which
        assert f"on mqtt://fleet-manager:***@127.0.0.1:{port}" in logs[f"manager {name}"]
    assert "--broker mqtt://fleet-manager:***@127.0.0.1" in logs["manager in-url"]
    assert "visible in the process list" in logs["manager in-url"]
    assert "visible in the process list" not in logs["manager by-file"] + logs["manager by-env"]

    until(lambda: "refused the connection" in procs["pi-wrong"].log.read_text(),
          "pi-wrong is refused", procs["pi-wrong"].log)
    for name, d in procs.items():
        assert d.proc is not None
        if name != "pi-url":
            assert_no_secret(f"{name}'s command line", _cmdline(d.proc.pid))
        status = edge("status", "--json", "--store", d.store)
        assert status.returncode == 0, status.stderr
        assert_no_secret(f"{name}: status --json", status.stdout + status.stderr)
        assert_no_secret(f"{name}: run file", (d.store / "run" / "daemon.json").read_text())
        d.stop()
        logs[name] = d.log.read_text()
    for where, text in logs.items():
        assert_no_secret(where, text)
    assert f"fleet agent pi-url on mqtt://pi-url:***@127.0.0.1:{port}" in logs["pi-url"]
    assert "--fleet-url mqtt://pi-url:***@127.0.0.1" in logs["pi-url"]
    assert "visible in the process list" not in logs["pi-file"] + logs["pi-env"]
    assert f"broker mqtt://pi-wrong:***@127.0.0.1:{port} refused" in logs["pi-wrong"]


def test_bad_broker_settings_fail_with_one_line_without_the_password(tmp_path: Path) -> None:
    secret = "Zq9xSecretMark"
    url = f"mqtt://pi-07:{secret}@127.0.0.1:notaport"
    cases = [
        edge("serve", "--store", tmp_path / "s", "--port", "0", "--fleet-url", url),
        edge("serve", "--store", tmp_path / "s", "--port", "0", "--fleet-url",
             "mqtt://pi-07@127.0.0.1:1883", "--fleet-password-file", tmp_path / "missing"),
        subprocess.run([sys.executable, "-m", "fleet.cli", "serve", "--db", str(tmp_path / "db"),
                        "--broker", url.replace("pi-07", "fleet-manager")],
                       capture_output=True, text=True, timeout=60, check=False),
        subprocess.run([sys.executable, "-m", "fleet.cli", "serve", "--db", str(tmp_path / "db"),
                        "--broker-password-file", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=60, check=False),
    ]
    lines = [one_line_error(c) for c in cases]
    for line in lines:
        assert secret not in line
    assert "mqtt://pi-07:***@127.0.0.1:notaport" in lines[0]
    assert f"password file {tmp_path / 'missing'}: cannot read it" in lines[1]
    assert "mqtt://fleet-manager:***@127.0.0.1:notaport" in lines[2]
    assert "cannot read it" in lines[3]
    assert not (tmp_path / "s" / "run" / "daemon.json").exists()  # refused before serving


def test_a_refused_login_is_retried_with_backoff_and_logged_redacted(
        acl_broker: AclBroker, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong password stays wrong: the link asks again after 0.2, 0.4, 0.8 s... (it used to
    ask ten times a second, with a warning each time), each refusal logged without it."""
    async def main() -> list[float]:
        refused: list[float] = []
        loop = asyncio.get_running_loop()

        class Stamp(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "refused the connection" in record.getMessage():
                    refused.append(loop.time())

        handler = Stamp()
        logging.getLogger("edge_runtime.mqtt").addHandler(handler)
        link = MqttLink(MqttSettings(port=acl_broker.port, username="pi-wrong", password=WRONG,
                                     reconnect_min_s=0.2, reconnect_max_s=0.8),
                        client_id="pi-wrong")
        try:
            await link.start()
            while len(refused) < 5:
                await asyncio.sleep(0.02)
        finally:
            await link.stop()
            logging.getLogger("edge_runtime.mqtt").removeHandler(handler)
        return refused

    with caplog.at_level(logging.DEBUG, logger="edge_runtime.mqtt"):
        refused = asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(refused)]
    for gap, backoff in zip(gaps[:4], (0.2, 0.4, 0.8, 0.8), strict=True):
        assert gap >= backoff * 0.95, gaps  # lower bounds: a sleep is never shorter
    assert_no_secret("the link's log", caplog.text)
    assert f"broker mqtt://pi-wrong:***@127.0.0.1:{acl_broker.port} refused" in caplog.text
