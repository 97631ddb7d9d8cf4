"""Mosquitto with the shipped devices/mosquitto/ config (passwords + per-device ACL)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.protocol.link import MqttSettings
from tests.broker import Broker

CONF_DIR = Path(__file__).resolve().parents[2] / "devices" / "mosquitto"
PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
DROPPED = ("listener", "cafile", "certfile", "keyfile", "persistence", "autosave_interval")


@dataclass
class AclBroker(Broker):
    """The shipped mosquitto.conf and acl on a free loopback port, without TLS or persistence,
    with a password file made here."""

    users: tuple[str, ...] = ()

    def config(self) -> str:
        """Write the password file, then the shipped config with our paths and port."""
        passwd = self.workdir / "passwd"
        passwd.unlink(missing_ok=True)
        for user in self.users:
            subprocess.run([PASSWD, "-b", *(["-c"] if not passwd.exists() else []), str(passwd),
                            user, password(user)], check=True, capture_output=True)
        lines = [f"listener {self.port} 127.0.0.1", "persistence false"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to 'mosquitto', who cannot read tmp_path
        paths = {"password_file": passwd, "acl_file": CONF_DIR / "acl"}
        for line in (CONF_DIR / "mosquitto.conf").read_text().splitlines():
            key = line.split(" ", 1)[0]
            if not line.strip() or line.startswith("#") or key in DROPPED:
                continue
            lines.append(f"{key} {paths[key]}" if key in paths else line)
        return "\n".join(lines) + "\n"


def password(user: str) -> str:
    return f"pw-{user}-secret"




def login(broker: Broker, user: str | None, pw: str | None = None) -> MqttSettings:
    return MqttSettings(port=broker.port, username=user,
                        password=pw if pw is not None else password(user) if user else None,
                        reconnect_max_s=0.5)
