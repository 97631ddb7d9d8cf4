"""Fleet manager settings, declared once and passed explicitly."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from edge_runtime.errors import ConfigError
from edge_runtime.protocol.link import MqttSettings, read_password_file

#: `edgectl serve`: the broker password, when not in --broker-password-file (nor the URL)
BROKER_PASSWORD_ENV = "EDGECTL_BROKER_PASSWORD"


def broker_password(password_file: Path | None, env: Mapping[str, str] | None = None
                    ) -> str | None:
    """The manager's broker password from --broker-password-file or EDGECTL_BROKER_PASSWORD;
    None leaves the one in the --broker URL, if any."""
    from_env = (os.environ if env is None else env).get(BROKER_PASSWORD_ENV) or None
    if password_file is None:
        return from_env
    if from_env is not None:
        raise ConfigError(f"give the broker password one way: --broker-password-file or "
                          f"{BROKER_PASSWORD_ENV}, not both")
    return read_password_file(password_file)


class Enrollment(StrEnum):
    """Which devices the manager takes into its inventory."""

    #: only devices registered with `edgectl devices add` (provisioning prints the command)
    KNOWN = "known"
    #: any client id that speaks the protocol (labs; on a broker without authentication every
    #: publisher becomes a device)
    OPEN = "open"


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
    #: the fleet's Ed25519 private key: every desired state is signed with it (unset: published
    #: unsigned, which devices refuse unless they run with allow_unsigned_desired)
    signing_key: Path | None = None
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
    #: which devices join the inventory: known (registered ones; the safe default) or open
    enrollment: Enrollment = Enrollment.KNOWN
    #: how often the manager saves its counters and task health (`edgectl manager status`)
    health_interval_s: float = 1.0
    #: artifact requests waiting to be answered; beyond it requests are dropped and counted
    #: (devices repeat unanswered requests after a few seconds)
    chunk_queue: int = 4096
