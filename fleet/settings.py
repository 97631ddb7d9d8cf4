"""Fleet manager settings, declared once and passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.protocol.link import MqttSettings


@dataclass(frozen=True)
class ManagerSettings:
    #: the manager's SQLite database (inventory, registry, rollouts)
    db: Path = Path("fleet.db")
    #: where published packages are kept (served to devices in chunks)
    artifacts: Path = Path("fleet-artifacts")
    #: fleet name: the topic root is edge/v1/{fleet}/...
    fleet: str = "default"
    #: broker connection (URL, credentials, TLS)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    #: public keys packages must be signed with to be published
    trusted_keys: tuple[Path, ...] = ()
    #: development only: publish unsigned packages
    allow_unsigned: bool = False
    #: how often rollouts are advanced and desired states published
    tick_s: float = 0.5
    #: most messages handled in one database transaction
    ingest_batch: int = 2000
    #: optional base URL where devices can fetch artifacts over HTTP(S) instead of MQTT
    artifact_url: str | None = None
    #: the manager's MQTT client id (a persistent session: QoS 1 messages wait while it is down)
    client_id: str = "fleet-manager"
