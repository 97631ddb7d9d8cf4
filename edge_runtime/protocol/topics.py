"""The MQTT topic scheme: the only place a topic string is formatted or parsed.

    edge/v1/{fleet}/{device}/status        retained  presence (online/offline + session)
    edge/v1/{fleet}/{device}/heartbeat               liveness between status changes
    edge/v1/{fleet}/{device}/desired       retained  manager -> device: models and versions
    edge/v1/{fleet}/{device}/reported      retained  device -> manager: what it runs
    edge/v1/{fleet}/{device}/events                  swap transitions with deployment id
    edge/v1/{fleet}/{device}/telemetry               monitoring + drift from the outbox
    edge/v1/{fleet}/{device}/artifact/req            device asks for artifact chunks
    edge/v1/{fleet}/{device}/artifact/chunk          manager answers with one chunk
    edge/v1/{fleet}/alerts/{kind}                    fleet alerts for dashboards
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge_runtime.errors import ConfigError

VERSION = "v1"
ROOT = "edge"
DEVICE_KINDS = ("status", "heartbeat", "desired", "reported", "events", "telemetry",
                "artifact/req", "artifact/chunk")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RESERVED = ("alerts",)


def check_id(kind: str, value: str) -> str:
    if not _ID.match(value) or value in RESERVED:
        raise ConfigError(f"{kind} id {value!r} must be 1-64 of [A-Za-z0-9._-] (no MQTT "
                          "wildcards or slashes) and not one of " + ", ".join(RESERVED))
    return value


@dataclass(frozen=True)
class DeviceTopic:
    device: str
    kind: str


@dataclass(frozen=True)
class TopicScheme:
    fleet: str

    def __post_init__(self) -> None:
        check_id("fleet", self.fleet)

    @property
    def root(self) -> str:
        return f"{ROOT}/{VERSION}/{self.fleet}"

    def device(self, device: str, kind: str) -> str:
        if kind not in DEVICE_KINDS:
            raise ValueError(f"unknown device topic kind {kind!r}")
        return f"{self.root}/{check_id('device', device)}/{kind}"

    def status(self, device: str) -> str:
        return self.device(device, "status")

    def heartbeat(self, device: str) -> str:
        return self.device(device, "heartbeat")

    def desired(self, device: str) -> str:
        return self.device(device, "desired")

    def reported(self, device: str) -> str:
        return self.device(device, "reported")

    def events(self, device: str) -> str:
        return self.device(device, "events")

    def telemetry(self, device: str) -> str:
        return self.device(device, "telemetry")

    def artifact_req(self, device: str) -> str:
        return self.device(device, "artifact/req")

    def artifact_chunk(self, device: str) -> str:
        return self.device(device, "artifact/chunk")

    def alert(self, kind: str) -> str:
        return f"{self.root}/alerts/{check_id('alert', kind)}"

    def all_devices(self, kind: str) -> str:
        """Subscription filter for one kind from every device of the fleet."""
        if kind not in DEVICE_KINDS:
            raise ValueError(f"unknown device topic kind {kind!r}")
        return f"{self.root}/+/{kind}"

    def alerts_filter(self) -> str:
        return f"{self.root}/alerts/#"

    def parse(self, topic: str) -> DeviceTopic | None:
        """The device and kind of a device topic of this fleet, or None."""
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            return None
        device, _, kind = topic[len(prefix):].partition("/")
        if kind not in DEVICE_KINDS or not _ID.match(device) or device in RESERVED:
            return None
        return DeviceTopic(device, kind)
