"""MQTT over TLS on both sides: a link verifies the broker against a throwaway CA (and presents a
client certificate for mutual TLS), a link without that CA never gets through, and a small fleet
(manager + simulated devices) deploys a package over TLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_runtime.protocol.link import LinkTimeout, MqttSettings, NotConnected
from edge_runtime.protocol.mqtt import MqttLink
from fleet.deploy import deploy
from fleet.inventory import Target
from tests.broker import Broker
from tests.conftest import Keys, build_package
from tests.fleet.harness import FleetHarness

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


# -- a throwaway PKI ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing the broker uses


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _issue(path: Path, cn: str, key: ec.EllipticCurvePrivateKey, *,
           issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
           server: bool = False, client: bool = False) -> x509.Name:
    """A certificate for ``key``, self-signed (a CA) when ``issuer`` is None."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, issuer_key = issuer if issuer is not None else (name, key)
    now = datetime.datetime.now(datetime.UTC)
    ca = issuer is None
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer_key.public_key()), critical=False)
         .add_extension(x509.KeyUsage(
             digital_signature=not ca, content_commitment=False, key_encipherment=False,
             data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
             encipher_only=False, decipher_only=False), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    if usages:
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    path.write_bytes(b.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return name


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    d = tmp_path / "pki"
    d.mkdir()
    ca_key, server_key, client_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    ca_name = _issue(d / "ca.crt", "edge-runtime test CA", ca_key)
    _issue(d / "server.crt", "127.0.0.1", server_key, issuer=(ca_name, ca_key), server=True)
    _issue(d / "client.crt", "test-client", client_key, issuer=(ca_name, ca_key), client=True)
    _issue(d / "other-ca.crt", "some other CA", other_key)
    _write_key(d / "server.key", server_key)
    _write_key(d / "client.key", client_key)
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
               d / "client.key", d / "other-ca.crt")


def _tls_broker(workdir: Path, pki: Pki, *, mutual: bool) -> Broker:
    # Broker writes "listener PORT 127.0.0.1" first: these lines configure that listener.
    # "user root": a mosquitto started as root otherwise drops to the mosquitto user before it
    # loads the certificates, and cannot read them in the test's private tmp_path.
    conf = ("user root\n"
            f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
            + ("require_certificate true\n" if mutual else ""))
    return Broker(workdir, extra_conf=conf).start()


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    b = _tls_broker(tmp_path, pki, mutual=False)
    yield b
    b.stop()


@pytest.fixture
def mtls_broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    b = _tls_broker(tmp_path, pki, mutual=True)
    yield b
    b.stop()


def _url(broker: Broker) -> str:
    return f"mqtts://127.0.0.1:{broker.port}"


# -- links ----------------------------------------------------------------------------------------
async def _link(settings: MqttSettings, client_id: str, *filters: str) -> MqttLink:
    link = MqttLink(settings, client_id=client_id, clean_start=True, timeout=5.0)
    await link.subscribe(*filters)
    await link.start()
    return link


async def _roundtrip(good: MqttSettings, tag: str) -> None:
    """Two verified links: one publishes, the other receives, both ways."""
    a = await _link(good, f"{tag}-a", f"tls/{tag}/to-a")
    b = await _link(good, f"{tag}-b", f"tls/{tag}/to-b")
    try:
        await a.wait_connected(10)
        await b.wait_connected(10)
        await a.publish(f"tls/{tag}/to-b", b"hello b")
        await b.publish(f"tls/{tag}/to-a", b"hello a")
        got_b = await asyncio.wait_for(b.next_message(), 10)
        got_a = await asyncio.wait_for(a.next_message(), 10)
        assert (got_b.topic, got_b.payload) == (f"tls/{tag}/to-b", b"hello b")
        assert (got_a.topic, got_a.payload) == (f"tls/{tag}/to-a", b"hello a")
    finally:
        await a.stop()
        await b.stop()


async def _refused(good: MqttSettings, bad: MqttSettings, tag: str) -> None:
    """``bad`` never connects, so it neither receives what a verified link publishes nor gets
    anything of its own through."""
    watcher = await _link(good, f"{tag}-watcher", f"tls/{tag}/#")
    intruder = await _link(bad, f"{tag}-intruder", f"tls/{tag}/#")
    try:
        await watcher.wait_connected(10)
        with pytest.raises(LinkTimeout):
            await intruder.wait_connected(2.0)
        assert not intruder.connected
        with pytest.raises(NotConnected):
            await intruder.publish(f"tls/{tag}/from-intruder", b"let me in")
        await watcher.publish(f"tls/{tag}/from-watcher", b"secret")
        msg = await asyncio.wait_for(watcher.next_message(), 10)
        assert msg.payload == b"secret"  # the broker works for a verified link...
        await asyncio.sleep(1.0)
        with pytest.raises(asyncio.QueueEmpty):  # ...and the intruder got nothing
            intruder.next_message_nowait()
        with pytest.raises(asyncio.QueueEmpty):
            watcher.next_message_nowait()
        assert not intruder.connected
    finally:
        await intruder.stop()
        await watcher.stop()


def test_tls_link_verifies_the_broker(tls_broker: Broker, pki: Pki) -> None:
    url = _url(tls_broker)
    good = MqttSettings.from_url(url, ca_file=pki.ca)
    assert good.tls and good.port == tls_broker.port

    async def main() -> None:
        await _roundtrip(good, "ca")
        # system trust does not know the throwaway CA
        await _refused(good, MqttSettings.from_url(url), "system-trust")
        # nor does a CA that did not sign the broker's certificate
        await _refused(good, MqttSettings.from_url(url, ca_file=pki.other_ca), "other-ca")
        # plain MQTT to a TLS listener gets nowhere either
        await _refused(good, MqttSettings.from_url(f"mqtt://127.0.0.1:{tls_broker.port}"),
                       "plain")

    asyncio.run(main())


def test_mutual_tls_needs_a_client_certificate(mtls_broker: Broker, pki: Pki) -> None:
    url = _url(mtls_broker)
    good = MqttSettings.from_url(url, ca_file=pki.ca, cert_file=pki.client_cert,
                                 key_file=pki.client_key)

    async def main() -> None:
        await _roundtrip(good, "mtls")
        # the broker is trusted, but the client has no certificate to show
        await _refused(good, MqttSettings.from_url(url, ca_file=pki.ca), "no-client-cert")
        # a client certificate does not help a client that cannot verify the broker
        await _refused(good, MqttSettings.from_url(url, cert_file=pki.client_cert,
                                                   key_file=pki.client_key), "client-no-ca")

    asyncio.run(main())


# -- a fleet over TLS ------------------------------------------------------------------------------
@dataclass
class TlsFleetHarness(FleetHarness):
    """FleetHarness whose manager, devices and spy all use the given TLS settings."""

    tls: MqttSettings | None = None

    @property
    def mqtt(self) -> MqttSettings:
        assert self.tls is not None and self.tls.tls
        return self.tls


def test_fleet_deploys_over_mutual_tls(tmp_path: Path, mtls_broker: Broker, pki: Pki,
                                       keys: Keys) -> None:
    pkg = build_package(tmp_path / "pkgs", keys.signer, name="digits", version="1", seed=1)
    tls = MqttSettings.from_url(_url(mtls_broker), ca_file=pki.ca, cert_file=pki.client_cert,
                                key_file=pki.client_key)

    async def main() -> None:
        h = TlsFleetHarness(mtls_broker, tmp_path, keys.public, tls=tls)
        try:
            assert h.settings().mqtt == tls
            manager = await h.start_manager()
            assert isinstance(manager.link, MqttLink) and manager.link.settings.tls
            h.publish(pkg)
            sim = await h.start_sim(3)
            assert all(d.cfg.mqtt == tls for d in sim.devices)
            await h.wait_inventory(3)
            did, devices = deploy(h.f, "digits", "1", Target.parse("all"),
                                  probation={"seconds": 0.2})
            assert len(devices) == 3
            await h.until(lambda: h.count("digits", "1") == 3, timeout=60,
                          what=lambda: f"digits 1 on every device ({h.active('digits')})")
            await h.until(lambda: h.committed(did) == set(devices), timeout=30,
                          what=f"deployment {did} committed on 3 devices")
        finally:
            with contextlib.suppress(Exception):
                await h.close()

    asyncio.run(main())
