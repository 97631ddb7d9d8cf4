"""In-memory broker and link: the shipped fake behind the Link interface, for unit tests of the
agent and the manager through their real code paths (retained messages, wildcards, wills,
broker outages)."""

from __future__ import annotations

import asyncio

from edge_runtime.protocol.link import LinkTimeout, Message, NotConnected, OnConnect, Will


def topic_matches(filter_: str, topic: str) -> bool:
    f_parts, t_parts = filter_.split("/"), topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


class InMemoryBroker:
    def __init__(self) -> None:
        self.retained: dict[str, Message] = {}
        self.links: list[InMemoryLink] = []
        self.up = True
        self.published: list[Message] = []

    def deliver(self, msg: Message) -> None:
        self.published.append(msg)
        if msg.retain:
            if msg.payload:
                self.retained[msg.topic] = msg
            else:
                self.retained.pop(msg.topic, None)
        for link in self.links:
            if link.connected and any(topic_matches(f, msg.topic) for f in link.filters):
                link.queue.put_nowait(Message(msg.topic, msg.payload, False))

    def go_down(self) -> None:
        self.up = False
        for link in self.links:
            link.lost()

    def come_up(self) -> None:
        self.up = True


class InMemoryLink:
    def __init__(self, broker: InMemoryBroker, *, client_id: str, will: Will | None = None,
                 on_connect: OnConnect | None = None) -> None:
        self.broker = broker
        self.client_id = client_id
        self._will = will
        self._on_connect = on_connect
        self.filters: list[str] = []
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.inbound_dropped = 0  # the in-memory broker never drops: kept for the Link protocol
        self._connected = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._hooks: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self) -> None:
        self.broker.links.append(self)
        self._task = asyncio.ensure_future(self._connect_loop())

    async def _connect_loop(self) -> None:
        while not self._stopping:
            if not self._connected and self.broker.up:
                self._connected = True
                for f in self.filters:
                    self._send_retained(f)
                if self._on_connect is not None:
                    task = asyncio.ensure_future(self._on_connect())
                    self._hooks.add(task)
                    task.add_done_callback(self._hooks.discard)
            await asyncio.sleep(0.01)

    def _send_retained(self, filter_: str) -> None:
        for topic, msg in self.broker.retained.items():
            if topic_matches(filter_, topic):
                self.queue.put_nowait(msg)

    def lost(self) -> None:
        if self._connected and self._will is not None:
            topic, payload, retain = self._will()
            self._connected = False
            self.broker.deliver(Message(topic, payload, retain))
        self._connected = False

    async def wait_connected(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._connected:
            if asyncio.get_running_loop().time() > deadline:
                raise LinkTimeout("connect", timeout)
            await asyncio.sleep(0.005)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        if not self._connected:
            raise NotConnected()
        self.broker.deliver(Message(topic, payload, retain))

    async def subscribe(self, *filters: str) -> None:
        for f in filters:
            if f not in self.filters:
                self.filters.append(f)
                if self._connected:
                    self._send_retained(f)

    async def next_message(self) -> Message:
        return await self.queue.get()

    def next_message_nowait(self) -> Message:
        """Raises asyncio.QueueEmpty when nothing is waiting."""
        return self.queue.get_nowait()

    async def stop(self) -> None:
        self._stopping = True
        self._connected = False
        if self._task is not None:
            self._task.cancel()
        if self in self.broker.links:
            self.broker.links.remove(self)

    def drop(self) -> None:
        self.lost()
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
        if self in self.broker.links:
            self.broker.links.remove(self)
