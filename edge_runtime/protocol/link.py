"""The link between a device (or the manager) and the broker: a small async interface, with the
real MQTT client (``protocol.mqtt.MqttLink``) and a shipped in-memory fake
(``protocol.memory.InMemoryLink``) behind it."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

from edge_runtime.errors import ConfigError, EdgeRuntimeError


class NotConnected(EdgeRuntimeError):
    def __init__(self, what: str = "publish") -> None:
        super().__init__(f"cannot {what}: not connected to the broker")


class LinkTimeout(EdgeRuntimeError):
    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(f"{what} got no answer from the broker within {timeout:g} s")


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False


# What to leave behind when the connection dies: (topic, payload, retain), computed per connect.
Will = Callable[[], tuple[str, bytes, bool]]
OnConnect = Callable[[], Awaitable[None]]


REDACTED = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# A broker password is a line of text, not a document: bounds what a wrong path can pull in.
_MAX_PASSWORD_BYTES = 4096


def _split_userinfo(url: str) -> tuple[str, str | None, str] | None:
    """(``scheme://user``, password or None, ``@host...``), or None without a userinfo part.

    Everything before the *last* ``@`` counts as userinfo, even past a ``/``: a password with an
    unescaped ``/`` or ``#`` is then still hidden, never half shown as a path."""
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):  # a "://" inside a password is no scheme
        scheme, sep, rest = "", "", url
    userinfo, at, tail = rest.rpartition("@")
    if not at:
        return None
    user, colon, password = userinfo.partition(":")
    return f"{scheme}{sep}{user}", password if colon else None, f"@{tail}"


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: the only form logs, errors and output
    show. Never raises, whatever the input."""
    parts = _split_userinfo(url)
    if parts is None or parts[1] is None:
        return url
    head, _password, tail = parts
    return f"{head}:{REDACTED}{tail}"


def password_in_url(url: str) -> bool:
    parts = _split_userinfo(url)
    return parts is not None and parts[1] is not None


def read_password_file(path: Path) -> str:
    """The password in ``path``: its first line, without the line end (``echo pw > file``)."""
    try:
        with Path(path).open("rb") as fh:
            raw = fh.read(_MAX_PASSWORD_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"password file {path}: cannot read it ({exc.strerror})") from None
    if len(raw) > _MAX_PASSWORD_BYTES:
        raise ConfigError(f"password file {path}: longer than {_MAX_PASSWORD_BYTES} bytes")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"password file {path}: not UTF-8 text") from None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password or "\n" in password or "\r" in password:
        raise ConfigError(f"password file {path}: must hold the password on one line")
    return password


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30
    session_expiry_s: int = 3600
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 10.0
    # Inbound messages waiting for the consumer: past either bound new ones are dropped and
    # counted (a flood must not grow memory without limit; QoS 1 redelivery covers a reconnect).
    inbound_max_messages: int = 50_000
    inbound_max_bytes: int = 64 * 2**20

    @classmethod
    def from_url(cls, url: str, *, password: str | None = None, **kw: object) -> MqttSettings:
        """mqtt://[user[:password]@]host[:port] or mqtts://... (TLS). ``password`` (from a file
        or the environment) takes precedence over one in the URL."""
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConfigError(f"broker URL {shown!r}: bad host or port") from None
        if (parts.scheme not in ("mqtt", "mqtts") or not parts.hostname
                or parts.path not in ("", "/") or parts.query or parts.fragment):
            raise ConfigError(f"broker URL {shown!r} must look like mqtt://[user@]host:1883 "
                              "(or mqtts://)")
        tls = parts.scheme == "mqtts"
        if password is None and parts.password:
            password = unquote(parts.password)
        return cls(host=parts.hostname, port=port or (8883 if tls else 1883),
                   username=unquote(parts.username) if parts.username else None,
                   password=password, tls=tls, **kw)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        """The broker URL to show: ``mqtt://user:***@host:port``, never the password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        login = ""
        if self.username or self.password:
            secret = f":{REDACTED}" if self.password else ""
            login = f"{quote(self.username or '', safe='')}{secret}@"
        return f"{'mqtts' if self.tls else 'mqtt'}://{login}{host}:{self.port}"


class Link(Protocol):
    #: inbound messages dropped because the consumer's queue was full
    inbound_dropped: int

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def wait_connected(self, timeout: float) -> None: ...

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None: ...

    async def subscribe(self, *filters: str) -> None: ...

    async def next_message(self) -> Message: ...

    def next_message_nowait(self) -> Message: ...

    async def stop(self) -> None: ...

    def drop(self) -> None: ...
