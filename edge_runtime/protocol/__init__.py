"""The wire contract between devices and the fleet manager: topics, messages, links."""

from __future__ import annotations

from edge_runtime.protocol.link import Link, LinkTimeout, Message, MqttSettings, NotConnected
from edge_runtime.protocol.memory import InMemoryBroker, InMemoryLink
from edge_runtime.protocol.topics import TopicScheme

__all__ = ["InMemoryBroker", "InMemoryLink", "Link", "LinkTimeout", "Message", "MqttSettings",
           "NotConnected", "TopicScheme"]
