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
    #: how often drift/degradation alerts are checked and experiments looked at
    alert_interval_s: float = 30.0
    #: the window of device reports drift and degradation are judged on
    drift_window_s: float = 3600.0
    #: POST every alert (JSON) to this URL
    alert_webhook: str | None = None
    #: run this command for every alert, the alert JSON on its stdin (e.g. to start retraining)
    alert_command: str | None = None
