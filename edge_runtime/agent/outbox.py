"""Sends the store's outbox (swap events and telemetry) to the manager: at least once, marked
sent only after the broker's acknowledgement; the manager deduplicates by message id."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import fields
from typing import Any

import orjson

from edge_runtime.protocol import messages as m
from edge_runtime.protocol.link import Link, LinkTimeout, NotConnected
from edge_runtime.protocol.topics import TopicScheme
from edge_runtime.store.telemetry import TelemetryStore


class OutboxSender:
    def __init__(self, link: Link, store: TelemetryStore, *, topics: TopicScheme, device: str,
                 batch: int = 100) -> None:
        self.link = link
        self.store = store
        self.topics = topics
        self.device = device
        self.batch = batch
        self.wake = asyncio.Event()

    async def run(self) -> None:
        """Send what is pending whenever woken, or every second."""
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation
            # that stops this loop when it races a wake-up, and the loop runs on
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.wake.wait()
            self.wake.clear()
            while self.link.connected and (batch := self.store.pending(self.batch)):
                try:
                    await asyncio.gather(*(self._send(msg.kind, msg.payload) for msg in batch))
                except (NotConnected, LinkTimeout):
                    break
                self.store.mark_sent([msg.id for msg in batch])

    async def _send(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "event":
            topic = self.topics.events(self.device)
            body = orjson.dumps(payload)
        else:
            topic = self.topics.telemetry(self.device)
            body = _encode_flat(m.Telemetry(
                payload["msg_id"], kind, payload.get("model"), payload.get("version"),
                payload.get("start", 0.0), payload.get("end", 0.0), payload.get("payload", {})))
        await self.link.publish(topic, body)


def _encode_flat(msg: Any) -> bytes:
    """The bytes of ``m.encode(msg)`` without dataclasses.asdict's deep copy of every nested
    dict (telemetry payloads carry histograms: the copy was most of a send's cost)."""
    return orjson.dumps({"schema_version": m.SCHEMA_VERSION,
                         **{f.name: getattr(msg, f.name) for f in fields(msg)}})
