"""A real Mosquitto broker on a free loopback port, owned by the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    workdir: Path
    port: int = field(default_factory=free_port)
    extra_conf: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def config(self) -> str:
        """The mosquitto.conf text (subclasses serve other configurations)."""
        return (f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                f"persistence false\nmax_queued_messages 100000\n{self.extra_conf}\n")

    def start(self) -> Broker:
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        conf.write_text(self.config())
        log_path = self.workdir / f"mosquitto-{self.port}.log"
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited {self.proc.returncode}: "
                                       f"{log_path.read_text()[-2000:]}") from None
                time.sleep(0.02)
        raise TimeoutError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
