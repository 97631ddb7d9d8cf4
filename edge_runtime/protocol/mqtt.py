"""MQTT 5 over paho-mqtt, driven by the asyncio loop (no paho thread).

paho's socket callbacks register the socket with the event loop, so every paho callback runs on
the loop thread and only resolves futures (pending publishes and subscribes by message id). One
helper does all waiting. Many links share one loop, which is how the simulator runs a thousand
devices in one process. The link reconnects with backoff and re-subscribes by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable
from typing import Any, TypeVar

from edge_runtime.errors import BackendUnavailable
from edge_runtime.protocol.link import (
    LinkTimeout,
    Message,
    MqttSettings,
    NotConnected,
    OnConnect,
    Will,
)

log = logging.getLogger("edge_runtime.mqtt")
T = TypeVar("T")
_MISC_PERIOD_S = 1.0
# Packets read per readable event at most. paho reads one packet per loop_read(), so a busy
# receiver (the manager) would otherwise get one message per event-loop turn, and batch nothing.
_READ_BURST = 1000


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:
        raise BackendUnavailable("mqtt", hint="pip install edge-runtime[mqtt]") from exc
    return mqtt


class _ClosingSSLSocket(ssl.SSLSocket):
    """paho leaves the socket open when the TLS handshake fails (an unknown CA, no client
    certificate): every reconnect attempt leaked one. Close it before the error propagates."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _tls_context(s: MqttSettings) -> ssl.SSLContext:
    """What paho's tls_set(ca, cert, key, CERT_REQUIRED) builds, with the closing socket."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and hostname
    if s.cert_file:
        ctx.load_cert_chain(str(s.cert_file), str(s.key_file) if s.key_file else None)
    if s.ca_file:
        ctx.load_verify_locations(str(s.ca_file))
    else:
        ctx.load_default_certs()
    ctx.sslsocket_class = _ClosingSSLSocket
    return ctx


class MqttLink:
    def __init__(self, settings: MqttSettings, *, client_id: str, will: Will | None = None,
                 clean_start: bool = False, on_connect: OnConnect | None = None,
                 timeout: float = 10.0) -> None:
        self.settings = settings
        self.client_id = client_id
        self._will = will
        self._clean_start = clean_start
        self._on_connect_hook = on_connect
        self._timeout = timeout
        self._filters: list[str] = []
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._stopping = False
        self._client: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._backoff = settings.reconnect_min_s
        self._handled = 0  # messages and acks received: progress of one read
        self._refused = False  # the broker's last CONNACK said no
        self._queued_bytes = 0
        self.inbound_dropped = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Begin connecting; returns at once (offline is a normal state for a device)."""
        self._loop = asyncio.get_running_loop()
        self._client = self._make_client()
        self._spawn(self._misc_loop())
        self._spawn(self._connect_loop())

    def _make_client(self) -> Any:
        mqtt = _paho()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv5)
        s = self.settings
        if s.username:
            c.username_pw_set(s.username, s.password)
        if s.tls:
            c.tls_set_context(_tls_context(s))
        c.on_connect, c.on_disconnect = self._on_connect, self._on_disconnect
        c.on_publish, c.on_subscribe = self._on_ack, self._on_suback
        c.on_message = self._on_message
        c.on_socket_open = lambda _c, _u, sock: self._loop.add_reader(sock, self._read)
        c.on_socket_close = lambda _c, _u, sock: self._loop.remove_reader(sock)
        c.on_socket_register_write = lambda _c, _u, sock: self._loop.add_writer(sock, self._write)
        c.on_socket_unregister_write = lambda _c, _u, sock: self._loop.remove_writer(sock)
        return c

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _read(self) -> None:
        """Read every packet the socket holds (up to a burst), not just one."""
        for _ in range(_READ_BURST):
            before = self._handled
            if self._client.loop_read() != 0 or self._handled == before:
                return

    def _write(self) -> None:
        self._client.loop_write()

    async def _misc_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(_MISC_PERIOD_S)
            self._client.loop_misc()

    async def _connect_loop(self) -> None:
        """Connect, and after every disconnect reconnect with exponential backoff."""
        mqtt = _paho()
        while not self._stopping:
            if not self.connected and self._client.socket() is None:
                if self._refused:  # a bad login stays bad: ask again after a backoff too
                    self._refused = False
                    await self._back_off()
                    continue
                try:
                    self._connect_once(mqtt)
                except OSError as exc:
                    log.debug("%s: connect to %s failed (%s)", self.client_id,
                              self.settings.url, exc)
                    await self._back_off()
                    continue
            await asyncio.sleep(0.1 if not self.connected else 0.5)

    async def _back_off(self) -> None:
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, self.settings.reconnect_max_s)

    def _connect_once(self, mqtt: Any) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if self._will is not None:
            topic, payload, retain = self._will()
            self._client.will_set(topic, payload, qos=1, retain=retain)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0 if self._clean_start else self.settings.session_expiry_s
        s = self.settings
        self._client.connect(s.host, s.port, keepalive=s.keepalive,
                             clean_start=self._clean_start, properties=props)

    async def stop(self) -> None:
        """Disconnect cleanly (no will message)."""
        self._stopping = True
        if self._client is not None and self.connected:
            self._client.disconnect()
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._gone(), 2.0)
        self._teardown()

    def drop(self) -> None:
        """Lose the connection without DISCONNECT (a crash or a pulled cable): the will fires."""
        self._stopping = True
        sock = self._client.socket() if self._client is not None else None
        if sock is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            sock.close()
        self._teardown()

    def _teardown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._connected.clear()
        self._fail_pending()

    async def _gone(self) -> None:
        while self._client.socket() is not None:
            await asyncio.sleep(0.01)

    # -- paho callbacks (run on the loop thread) ---------------------------------------------
    def _on_connect(self, client: Any, _ud: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self._refused = True
            log.warning("%s: broker %s refused the connection (%s)", self.client_id,
                        self.settings.url, reason)
            return
        self._backoff = self.settings.reconnect_min_s
        if self._filters:
            client.subscribe([(f, 1) for f in self._filters])
        self._connected.set()
        if self._on_connect_hook is not None:
            self._spawn(self._on_connect_hook())

    def _on_disconnect(self, _c: Any, _ud: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._connected.clear()
        self._fail_pending()
        if not self._stopping:
            log.info("%s: disconnected (%s); reconnecting", self.client_id, reason)

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(NotConnected("wait for the broker's acknowledgement"))

    def _on_ack(self, _c: Any, _ud: Any, mid: int, _reason: Any, _props: Any) -> None:
        self._handled += 1
        fut = self._pending.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_suback(self, _c: Any, _ud: Any, mid: int, _codes: Any, _props: Any) -> None:
        self._on_ack(_c, _ud, mid, None, None)

    def _on_message(self, _c: Any, _ud: Any, msg: Any) -> None:
        self._handled += 1
        s, size = self.settings, len(msg.payload)
        if (self._queue.qsize() >= s.inbound_max_messages
                or self._queued_bytes + size > s.inbound_max_bytes):
            self.inbound_dropped += 1
            if self.inbound_dropped & (self.inbound_dropped - 1) == 0:  # 1st, 2nd, 4th, ...
                log.warning("%s: inbound queue full (%d messages, %d bytes): dropped %s "
                            "(%d dropped so far)", self.client_id, self._queue.qsize(),
                            self._queued_bytes, msg.topic, self.inbound_dropped)
            return
        self._queued_bytes += size
        self._queue.put_nowait(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def _taken(self, msg: Message) -> Message:
        self._queued_bytes -= len(msg.payload)
        return msg

    # -- operations -----------------------------------------------------------------------------
    async def _wait_for(self, aw: Awaitable[T], what: str) -> T:
        """Every wait on the broker goes through here: one timeout, one error type."""
        try:
            return await asyncio.wait_for(aw, self._timeout)
        except TimeoutError as exc:
            raise LinkTimeout(what, self._timeout) from exc

    async def wait_connected(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError as exc:
            raise LinkTimeout("connect", timeout) from exc

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        if not self.connected:
            raise NotConnected()
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != 0:
            raise NotConnected()
        if qos == 0:
            return
        fut = self._loop.create_future()
        self._pending[info.mid] = fut
        await self._wait_for(fut, f"publish to {topic}")

    async def subscribe(self, *filters: str) -> None:
        new = [f for f in filters if f not in self._filters]
        self._filters.extend(new)
        if new and self.connected:
            _rc, mid = self._client.subscribe([(f, 1) for f in new])
            fut = self._loop.create_future()
            self._pending[mid] = fut
            await self._wait_for(fut, "subscribe")

    async def next_message(self) -> Message:
        return self._taken(await self._queue.get())

    def next_message_nowait(self) -> Message:
        """Raises asyncio.QueueEmpty when nothing is waiting."""
        return self._taken(self._queue.get_nowait())
