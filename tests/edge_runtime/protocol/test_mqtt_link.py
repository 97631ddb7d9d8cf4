"""MqttLink over a real mosquitto: publish/subscribe, retained, will, reconnect after restart."""

from __future__ import annotations

import asyncio

import pytest

from edge_runtime.protocol.link import Message, MqttSettings, NotConnected
from edge_runtime.protocol.mqtt import MqttLink
from tests.broker import Broker

pytestmark = pytest.mark.broker


async def _recv(link: MqttLink, timeout: float = 5.0) -> Message:
    return await asyncio.wait_for(link.next_message(), timeout)


def test_pubsub_retained_will_and_reconnect(broker: Broker) -> None:
    async def main() -> None:
        settings = MqttSettings.from_url(broker.url)
        a = MqttLink(settings, client_id="a", will=lambda: ("t/status", b"offline", True))
        b = MqttLink(settings, client_id="b", clean_start=True)
        await a.start()
        await b.start()
        await a.wait_connected(5)
        await b.wait_connected(5)
        await a.publish("t/status", b"online", retain=True)
        await b.subscribe("t/#")
        msg = await _recv(b)
        assert (msg.topic, msg.payload, msg.retain) == ("t/status", b"online", True)
        await a.publish("t/x", b"hello")
        assert (await _recv(b)).payload == b"hello"
        a.drop()  # no DISCONNECT: the broker publishes the will
        msg = await _recv(b, 10)
        assert (msg.topic, msg.payload) == ("t/status", b"offline")
        broker.restart()
        with pytest.raises(NotConnected):
            for _ in range(50):
                await b.publish("t/y", b"lost")
                await asyncio.sleep(0.02)
        await b.wait_connected(10)  # reconnected and re-subscribed by itself
        c = MqttLink(settings, client_id="c", clean_start=True)
        await c.start()
        await c.wait_connected(5)
        await c.publish("t/z", b"after restart")
        while (await _recv(b)).payload != b"after restart":
            pass
        await b.stop()
        await c.stop()

    asyncio.run(main())
