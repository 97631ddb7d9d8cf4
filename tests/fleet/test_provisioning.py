"""devices/systemd: provision.sh writes a config the daemon loads (and joins the fleet with),
and the unit file is one systemd accepts."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.protocol.link import MqttSettings
from edge_runtime.settings import ServeSettings

SYSTEMD = Path(__file__).resolve().parents[2] / "devices" / "systemd"
SCRIPT = SYSTEMD / "provision.sh"


def provision(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPT), "--config", str(tmp_path / "etc" / "config.toml"),
                           "--keys", str(tmp_path / "keys"), "--store", str(tmp_path / "store"),
                           "--owner-group", "no-such-group-here", *args],
                          capture_output=True, text=True, timeout=30, check=False)


def test_provision_writes_a_loadable_config(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    res = provision(tmp_path, "--device-id", "pi-07", "--broker", "broker.example.net",
                    "--password", "s3cret-pw", "--ca", str(ca), "--group", "kitchen",
                    "--tags", "camera,door", "--fleet", "home", "--port", "9000")
    assert res.returncode == 0, res.stderr
    assert "mosquitto_passwd -b /etc/mosquitto/edge/passwd pi-07 s3cret-pw" in res.stdout
    config = tmp_path / "etc" / "config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600  # it holds the broker password
    s = ServeSettings.load(config=config, env={})
    assert (s.device_id, s.fleet, s.device_group, s.device_tags) == (
        "pi-07", "home", "kitchen", ("camera", "door"))
    assert (s.store, s.port, s.host) == (tmp_path / "store", 9000, "127.0.0.1")
    assert s.trusted_keys == (tmp_path / "keys",) and s.mqtt_ca_file == ca
    assert s.fleet_url is not None
    mqtt = MqttSettings.from_url(s.fleet_url)
    assert (mqtt.host, mqtt.port, mqtt.tls) == ("broker.example.net", 8883, True)
    assert (mqtt.username, mqtt.password) == ("pi-07", "s3cret-pw")


def test_provision_defaults_and_generated_password(tmp_path: Path) -> None:
    res = provision(tmp_path, "--device-id", "dev1", "--broker", "10.0.0.5:1884")
    assert res.returncode == 0, res.stderr
    s = ServeSettings.load(config=tmp_path / "etc" / "config.toml", env={})
    assert s.fleet_url is not None
    mqtt = MqttSettings.from_url(s.fleet_url)
    assert (mqtt.port, mqtt.tls, mqtt.username) == (1884, False, "dev1")
    assert mqtt.password is not None and len(mqtt.password) == 48
    assert (s.fleet, s.device_group, s.device_tags, s.port) == ("default", None, (), 8080)
    again = provision(tmp_path, "--device-id", "dev1", "--broker", "10.0.0.5:1884")
    assert mqtt.password not in again.stdout  # a new password each time


@pytest.mark.parametrize(("args", "message"), [
    (("--broker", "b"), "--device-id is required"),
    (("--device-id", "a/b", "--broker", "b"), "device id 'a/b'"),
    (("--device-id", "+", "--broker", "b"), "device id '+'"),
    (("--device-id", "d", "--broker", "b", "--password", "p@ss:word"), "password"),
    (("--device-id", "d", "--broker", "b", "--tags", "a,,b"), "tags"),
    (("--device-id", "d", "--broker", "b", "--ca", "/no/such/ca.crt"), "CA file"),
    (("--device-id", "d", "--broker", "mqtt://b"), "broker 'mqtt://b'"),
    (("--device-id", "d", "--broker", "b", "--bogus"), "unknown argument"),
])
def test_provision_refuses_bad_input(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    res = provision(tmp_path, *args)
    assert res.returncode == 2 and message in res.stderr, (res.stdout, res.stderr)
    assert not (tmp_path / "etc" / "config.toml").exists()


def test_service_unit(tmp_path: Path) -> None:
    unit = (SYSTEMD / "edge-runtime.service").read_text()
    assert "ExecStart=/opt/edge-runtime/bin/edge-runtime serve --config " \
           "/etc/edge-runtime/config.toml" in unit
    assert "/etc/edge-runtime/config.toml" in SCRIPT.read_text()  # the script's default
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    exe = Path(sys.executable).parent / "edge-runtime"
    local = tmp_path / "edge-runtime.service"
    local.write_text(unit.replace("/opt/edge-runtime/bin/edge-runtime", str(exe)))
    res = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
