"""The link between a device (or the manager) and the broker: a small async interface, with the
real MQTT client (``protocol.mqtt.MqttLink``) and a shipped in-memory fake
(``protocol.memory.InMemoryLink``) behind it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

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


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30
    session_expiry_s: int = 3600
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 10.0

    @classmethod
    def from_url(cls, url: str, **kw: object) -> MqttSettings:
        """mqtt://[user[:password]@]host[:port] or mqtts://... (TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"broker URL {url!r} must look like mqtt://host:1883")
        tls = parts.scheme == "mqtts"
        return cls(host=parts.hostname, port=parts.port or (8883 if tls else 1883),
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None,
                   tls=tls, **kw)  # type: ignore[arg-type]


class Link(Protocol):
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
