"""devices/mosquitto/mosquitto.conf as shipped, run by the real Mosquitto: only its file paths,
its persistence location and its listener port are rewritten (to a temp dir and a free port),
with a CA and server certificate made here and passwords made by mosquitto_passwd.

Checked over TLS with paho clients: anonymous and wrong-password logins are refused; the broker
opens the listener the file declares and no other (no implicit 1883); a device can neither
write another device's topics nor read its desired state; a login presenting another device's
client id does not disconnect that device; the manager reads and writes edge/#."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.broker import Broker, free_port

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

SHIPPED = Path(__file__).resolve().parents[2] / "devices" / "mosquitto"
PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
USERS = ("fleet-manager", "ops", "pi-a", "pi-b")
TAKEOVER_S = 5.0  # how long pi-a must stay connected while an impostor keeps connecting


def password(user: str) -> str:
    return f"{user}-s3cret"


# -- a throwaway CA and server certificate ------------------------------------------------------
def _make_pki(d: Path) -> None:
    """ca.crt, server.crt (for 127.0.0.1 and localhost) and server.key in ``d``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())

    def cert(subject: str, key: Any, *, ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(name(subject))
             .issuer_name(name("shipped-config test CA")).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
        return b.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    (d / "ca.crt").write_bytes(cert("shipped-config test CA", ca_key, ca=True).public_bytes(pem))
    (d / "server.crt").write_bytes(cert("127.0.0.1", server_key, ca=False).public_bytes(pem))
    (d / "server.key").write_bytes(server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


# -- the shipped file, with only its paths and port rewritten ----------------------------------
def shipped_config(edge_dir: Path, persist_dir: Path, port: int, *,
                   edit: Callable[[str], str] = lambda text: text) -> str:
    text = edit((SHIPPED / "mosquitto.conf").read_text())
    subs = {"/etc/mosquitto/edge/": f"{edge_dir}/", "/var/lib/mosquitto/": f"{persist_dir}/",
            "listener 8883": f"listener {port}"}
    for old in subs:
        assert old in text, f"the shipped config no longer has {old!r}: update this test"
    out = text
    for old, new in subs.items():
        out = out.replace(old, new)
    # every other line byte for byte the shipped one
    changed = [(a, b) for a, b in zip(text.splitlines(), out.splitlines(), strict=True) if a != b]
    assert all(any(old in a for old in subs) for a, _b in changed)
    extra = [] if re.search(r"^log_dest ", text, re.M) else ["log_dest stderr"]
    if os.geteuid() == 0:
        extra.append("user root")  # else it drops to 'mosquitto', who cannot read tmp_path
    return out + "".join(f"\n{line}" for line in ["# added by the test (global options)",
                                                   *extra]) + "\n"


@dataclass
class ShippedBroker(Broker):
    """Mosquitto on the shipped config; ``edit`` changes the shipped text first (controls)."""

    edit: Callable[[str], str] = field(default=lambda text: text)

    @property
    def edge_dir(self) -> Path:
        return self.workdir / "etc-mosquitto-edge"

    def config(self) -> str:
        d = self.edge_dir
        if not d.exists():
            d.mkdir()
            _make_pki(d)
            shutil.copyfile(SHIPPED / "acl", d / "acl")
            for i, user in enumerate(USERS):
                subprocess.run([PASSWD, "-b", *(["-c"] if i == 0 else []), str(d / "passwd"),
                                user, password(user)], check=True, capture_output=True)
        persist = self.workdir / "var-lib-mosquitto"
        persist.mkdir(exist_ok=True)
        return shipped_config(d, persist, self.port, edit=self.edit)

    @property
    def log_text(self) -> str:
        return (self.workdir / f"mosquitto-{self.port}.log").read_text()


# -- a TLS client with its own network thread ---------------------------------------------------
class Peer:
    """What it received, and every CONNACK and disconnect it saw."""

    def __init__(self, broker: ShippedBroker, user: str | None, *, pw: str | None = None,
                 client_id: str | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.got: list[tuple[str, bytes]] = []
        self.acks: list[Any] = []
        self.subacks: list[int] = []
        self.disconnects = 0
        self._lock = threading.Lock()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or user or "anon",
                        protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=str(broker.edge_dir / "ca.crt"))
        # retry a refused login soon, so stop() does not wait out paho's 1 s delay
        c.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]
        if user is not None:
            c.username_pw_set(user, pw if pw is not None else password(user))
        c.on_connect = lambda _c, _u, _f, reason, _p: self._record(self.acks, reason)
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = lambda _c, _u, mid, _codes, _p: self._record(self.subacks, mid)
        c.on_message = lambda _c, _u, msg: self._record(self.got, (msg.topic, bytes(msg.payload)))
        self.client, self.port = c, broker.port

    def _record(self, where: list[Any], item: Any) -> None:
        with self._lock:
            where.append(item)

    def _on_disconnect(self, *_args: Any) -> None:
        with self._lock:
            self.disconnects += 1

    def connect(self, *subscriptions: str) -> Any:
        """The broker's CONNACK reason (subscriptions are made once accepted)."""
        self.client.connect("127.0.0.1", self.port, clean_start=True)
        self.client.loop_start()
        until(lambda: bool(self.acks), "a CONNACK")
        reason = self.acks[0]
        if not reason.is_failure and subscriptions:
            _rc, mid = self.client.subscribe([(s, 1) for s in subscriptions])
            until(lambda: mid in self.subacks, "a SUBACK")
        return reason

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _ in self.got]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShippedBroker]:
    b = ShippedBroker(tmp_path_factory.mktemp("shipped-mosquitto"), port=free_port())
    b.start()
    yield b
    b.stop()


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(broker: ShippedBroker, user: str | None, **kw: Any) -> Peer:
        made.append(Peer(broker, user, **kw))
        return made[-1]

    yield make
    for p in made:
        p.stop()


# -- the tests ------------------------------------------------------------------------------------
def test_only_the_declared_listener_exists(shipped: ShippedBroker) -> None:
    """No implicit default listener (1883): checked on the broker's own sockets, since this
    machine may run another Mosquitto on 1883 already."""
    assert shipped.proc is not None
    assert _listening_ports(shipped.proc.pid) == {shipped.port}
    opened = set(map(int, re.findall(r"Opening ipv[46] listen socket on port (\d+)",
                                     shipped.log_text)))
    assert opened == {shipped.port}, shipped.log_text


def _listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state on sockets the process holds (/proc/PID/fd -> net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed meanwhile (a client leaving)
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.parametrize(("user", "pw"), [(None, None), ("pi-a", "wrong"), ("nobody", "x"),
                                          ("pi-a", password("pi-b"))])
def test_logins_are_required(shipped: ShippedBroker, peers: Callable[..., Peer],
                             user: str | None, pw: str | None) -> None:
    reason = peers(shipped, user, pw=pw, client_id=f"try-{user}").connect()
    assert reason.is_failure and reason.value in (0x86, 0x87), reason  # bad login, not authorised


def test_a_device_cannot_touch_another_devices_topics(shipped: ShippedBroker,
                                                      peers: Callable[..., Peer]) -> None:
    t = "edge/v1/default/{}/{}".format
    ops = peers(shipped, "ops")
    assert not ops.connect("edge/#").is_failure
    pi_a, pi_b = peers(shipped, "pi-a"), peers(shipped, "pi-b")
    assert not pi_a.connect(t("pi-a", "desired"), t("pi-b", "desired"),
                            t("pi-b", "artifact/chunk")).is_failure
    assert not pi_b.connect(t("pi-b", "desired")).is_failure
    manager = peers(shipped, "fleet-manager")
    assert not manager.connect("edge/#").is_failure

    forged = [t("pi-b", kind) for kind in ("status", "heartbeat", "reported", "events",
                                           "telemetry", "artifact/req", "desired")]
    forged += [t("pi-a", "desired"), "edge/v1/other-fleet/pi-b/status", "elsewhere/x"]
    for topic in forged:
        pi_a.publish(topic, b"forged by pi-a")
    pi_a.publish(t("pi-a", "status"), b"marker")
    until(lambda: t("pi-a", "status") in ops.topics(), "ops sees pi-a's own status")
    until(lambda: t("pi-a", "status") in manager.topics(), "the manager reads edge/#")
    assert ops.topics() == [t("pi-a", "status")] and manager.topics() == [t("pi-a", "status")]

    # the manager writes both devices' desired states: each gets its own, pi-a not pi-b's
    manager.publish(t("pi-b", "desired"), b"for pi-b")
    manager.publish(t("pi-b", "artifact/chunk"), b"chunk for pi-b")
    manager.publish(t("pi-a", "desired"), b"for pi-a")
    until(lambda: t("pi-a", "desired") in pi_a.topics(), "pi-a gets its desired")
    until(lambda: t("pi-b", "desired") in pi_b.topics(), "pi-b gets its desired")
    until(lambda: t("pi-b", "desired") in manager.topics(), "the manager reads what it wrote")
    assert pi_a.got == [(t("pi-a", "desired"), b"for pi-a")]

    # ops reads everything but writes nothing
    ops.publish(t("pi-a", "desired"), b"ops forging")
    manager.publish(t("pi-a", "heartbeat"), b"marker 2")
    until(lambda: t("pi-a", "heartbeat") in ops.topics(), "marker 2")
    assert b"ops forging" not in [p for _, p in ops.got + pi_a.got + manager.got]


def _takeover(broker: ShippedBroker, peers: Callable[..., Peer], seconds: float) -> Peer:
    """pi-a connected while an impostor (pi-b's login, client id "pi-a") keeps connecting."""
    victim = peers(broker, "pi-a", client_id="pi-a")
    assert not victim.connect("edge/v1/default/pi-a/desired").is_failure
    deadline, attempts = time.monotonic() + seconds, 0
    while True:
        impostor = Peer(broker, "pi-b", client_id="pi-a")
        try:
            assert not impostor.connect().is_failure  # its own login is valid
        finally:
            impostor.stop()
        attempts += 1
        if time.monotonic() > deadline and attempts >= 3:
            return victim
        time.sleep(0.1)


def test_another_login_cannot_take_over_a_devices_client_id(shipped: ShippedBroker,
                                                            peers: Callable[..., Peer]) -> None:
    victim = _takeover(shipped, peers, TAKEOVER_S)
    assert victim.disconnects == 0 and victim.acks and len(victim.acks) == 1
    manager = peers(shipped, "fleet-manager")
    assert not manager.connect().is_failure
    manager.publish("edge/v1/default/pi-a/desired", b"still there")
    until(lambda: bool(victim.got), "pi-a still receives")


@pytest.fixture
def without_option(tmp_path: Path) -> Iterator[ShippedBroker]:
    """The shipped config less its use_username_as_clientid line."""
    def edit(text: str) -> str:
        assert "\nuse_username_as_clientid true\n" in text
        return text.replace("\nuse_username_as_clientid true\n", "\n")

    b = ShippedBroker(tmp_path, port=free_port(), edit=edit)
    b.start()
    yield b
    b.stop()


def test_the_takeover_check_catches_a_broker_without_the_option(
        without_option: ShippedBroker, peers: Callable[..., Peer]) -> None:
    """Control: without use_username_as_clientid on the listener the same impostor does
    disconnect pi-a, so the test above would see a takeover."""
    victim = _takeover(without_option, peers, 0.0)
    until(lambda: victim.disconnects >= 1, "the impostor kicks pi-a off")
