"""MqttLink over a real mosquitto: publish/subscribe, retained, will, reconnect after restart."""

from __future__ import annotations

import asyncio
from dataclasses import replace

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


def test_inbound_queue_is_bounded_and_counts_its_drops(broker: Broker) -> None:
    """A consumer that does not keep up holds at most the configured bytes; the rest is
    dropped and counted, and the link goes on delivering once the queue drains."""

    async def main() -> None:
        bounded = replace(MqttSettings.from_url(broker.url), inbound_max_bytes=10 * 1024,
                          inbound_max_messages=1000)
        slow = MqttLink(bounded, client_id="slow", clean_start=True)
        pub = MqttLink(MqttSettings.from_url(broker.url), client_id="pub", clean_start=True)
        for link in (slow, pub):
            await link.start()
            await link.wait_connected(5)
        await slow.subscribe("flood/#")
        for i in range(50):
            await pub.publish(f"flood/{i}", b"x" * 1024)
        await pub.publish("flood/end", b"end")
        for _ in range(200):  # wait until the broker has delivered all 51
            if slow.inbound_dropped + slow._queue.qsize() >= 51:
                break
            await asyncio.sleep(0.02)
        assert slow._queue.qsize() == 10  # 10 x 1 KiB fit in 10 KiB
        assert slow.inbound_dropped == 41
        got = [slow.next_message_nowait() for _ in range(10)]
        assert [m.topic for m in got] == [f"flood/{i}" for i in range(10)]
        await pub.publish("flood/after", b"ok")
        assert (await _recv(slow)).topic == "flood/after"
        await slow.stop()
        await pub.stop()

    asyncio.run(main())
