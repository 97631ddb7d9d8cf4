"""Settings, declared once. The only module that reads the environment.

Every field is documented where it is declared. Sources, lowest precedence first: defaults, the
device profile, a TOML config file (``[serve]`` table or top level), ``EDGE_*`` environment
variables, command-line flags. Each setting has one name, its field name: the TOML key
``max_batch_size``, the variable ``EDGE_MAX_BATCH_SIZE`` and the flag ``--max-batch-size``
(``cli_serve`` builds the flags from these fields; ``settings_table`` renders the README's
table from them). Callers receive settings objects explicitly.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import ConfigError

if TYPE_CHECKING:
    from edge_runtime.protocol.link import MqttSettings

LOOPBACK = ("127.0.0.1", "::1", "localhost")
ENV_PREFIX = "EDGE_"
log = logging.getLogger("edge_runtime.settings")


@dataclass(frozen=True)
class CliSettings:
    #: EDGE_DEBUG=1: let unexpected exceptions show their traceback instead of one line.
    debug: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CliSettings:
        env = os.environ if env is None else env
        return cls(debug=env.get("EDGE_DEBUG", "") == "1")


@dataclass(frozen=True)
class SystemdSettings:
    """What systemd tells a ``Type=notify`` service (edge_runtime/sdnotify.py)."""

    #: NOTIFY_SOCKET: the datagram socket for READY=1 etc. (``@name``: abstract namespace).
    notify_socket: str | None = None
    #: WATCHDOG_USEC: ping at least this often (microseconds) once serving; 0 = no watchdog.
    watchdog_usec: int = 0
    #: WATCHDOG_PID: the process the watchdog is meant for (unset: this one).
    watchdog_pid: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SystemdSettings:
        """Malformed numbers count as unset: a broken environment never stops the daemon."""
        env = os.environ if env is None else env
        return cls(notify_socket=env.get("NOTIFY_SOCKET") or None,
                   watchdog_usec=max(_int_or(env.get("WATCHDOG_USEC"), 0) or 0, 0),
                   watchdog_pid=_int_or(env.get("WATCHDOG_PID"), None))


def _int_or(text: str | None, default: int | None) -> int | None:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def _doc(text: str, *, flag: bool = True, choices: tuple[str, ...] = (), **kw: Any) -> Any:
    """A documented setting; ``flag=False``: TOML and environment only (a secret, which a
    command line would show to every local user, or a test hook)."""
    return field(metadata={"doc": text, "flag": flag, "choices": choices}, **kw)


@dataclass(frozen=True)
class ServeSettings:
    store: Path = _doc("model store directory (packages unpacked, store.db)",
                       default=Path("edge-store"))
    host: str = _doc("HTTP bind address; a non-loopback address requires `token`",
                     default="127.0.0.1")
    port: int = _doc("HTTP port (0 = pick a free one)", default=8080)
    uds: Path | None = _doc("also/instead serve on this Unix domain socket", default=None)
    token: str | None = _doc("bearer token required on every request except health", default=None)
    max_body_bytes: int = _doc("largest request body accepted", default=32 * 1024 * 1024)
    body_memory_bytes: int = _doc(
        "request body bytes held at once across all connections (counted as they arrive, "
        "until the answer is sent); a connection that would pass it stops being read until "
        "others finish (0 = twice max_body_bytes)", default=0)
    header_timeout_s: float = _doc("a request head must be complete this many seconds after "
                                   "its first byte (else 408 and close)", default=10.0)
    body_idle_timeout_s: float = _doc("a request body may pause this long between bytes "
                                      "(else 408 and close)", default=10.0)
    body_min_bytes_per_s: int = _doc(
        "after its first body_idle_timeout_s, a request body must arrive at this average "
        "rate at least (else 408 and close; 0 = no rate rule)", default=1024)
    http_server: str = _doc("HTTP server: builtin (edge_runtime.api.server, httptools) or "
                            "uvicorn", default="builtin", choices=("builtin", "uvicorn"))
    metrics_token: str | None = _doc("bearer token that GET /metrics takes instead of `token` "
                                     "(for a scraper; set, it is the only one /metrics takes)",
                                     default=None, repr=False)
    metrics_open_on_loopback: bool = _doc(
        "GET /metrics needs no token from loopback or the Unix socket (a local scraper or "
        "exporter; behind a reverse proxy on the same host every client looks local; "
        "ignored when metrics_token is set)", default=False)
    trusted_keys: tuple[Path, ...] = _doc("public keys (files or dirs of *.pub) packages must be "
                                          "signed with", default=())
    allow_unsigned: bool = _doc("development only: accept unsigned packages", default=False)
    profile: str | None = _doc("device profile name or TOML path (default: detected)",
                               default=None)
    intra_op_threads: int | None = _doc("backend threads per inference (default: profile)",
                                        default=None)
    max_batch_size: int = _doc("dynamic batching: rows per batch (0 or 1 = off)", default=0)
    max_queue_delay_ms: float = _doc("dynamic batching: longest wait to fill a batch",
                                     default=1.0)
    cache_entries: int = _doc("LRU response cache size (0 = off)", default=0)
    monitoring: bool = _doc("latency/error/throughput windows and Prometheus metrics",
                            default=True)
    drift: bool = _doc("count inputs/outputs into the package's drift histograms", default=True)
    drift_max_rows_per_s: float = _doc(
        "drift counting budget per model version, in rows a second: below it every request is "
        "counted, above it requests are counted at random with the probability that keeps to "
        "it (0 = no rows limit)", default=1000.0)
    drift_max_cpu: float = _doc(
        "drift counting budget per model version, as a share of one core: requests are "
        "sampled so that counting the measured cost per row stays within it; large inputs "
        "(images) reach it before the rows budget (0 = no CPU limit)", default=0.02)
    telemetry_interval_s: float = _doc("how often monitoring is persisted to SQLite",
                                       default=10.0)
    telemetry_max_rows: int = _doc("telemetry/outbox rows kept (oldest dropped first)",
                                   default=20_000)
    telemetry_max_bytes: int = _doc("telemetry/outbox payload bytes kept", default=64 * 2**20)
    telemetry_retention_s: float = _doc("telemetry rows older than this are dropped",
                                        default=7 * 86400.0)
    log_level: str = _doc("logging level", default="info")
    fleet_url: str | None = _doc("broker URL for the fleet agent, mqtt://[user@]host:port or "
                                 "mqtts:// (unset: no fleet link); a password in it still works "
                                 "but belongs in fleet_password_file", default=None, repr=False)
    fleet_password_file: Path | None = _doc("file holding the broker password on one line "
                                            "(EDGE_FLEET_PASSWORD_FILE)", default=None)
    fleet_password: str | None = _doc("the broker password itself (EDGE_FLEET_PASSWORD); "
                                      "either this or fleet_password_file", default=None,
                                      repr=False, flag=False)
    fleet: str = _doc("fleet name (topic root edge/v1/{fleet}/...)", default="default")
    device_id: str | None = _doc("this device's id in the fleet (default: host name)",
                                 default=None)
    device_group: str | None = _doc("the device's group, for targeting", default=None)
    device_tags: tuple[str, ...] = _doc("the device's tags, for targeting", default=())
    heartbeat_s: float = _doc("fleet heartbeat period", default=30.0)
    probation_max_wait_s: float = _doc("a fleet probation that never sees its min_requests "
                                       "waits this long, then applies probation_no_data",
                                       default=300.0)
    probation_no_data: str = _doc("after probation_max_wait_s without enough requests: rollback "
                                  "(to the version that served before) or hold (keep the new "
                                  "version on probation); never commit", default="hold",
                                  choices=("rollback", "hold"))
    fleet_keys: tuple[Path, ...] = _doc("public keys (files or dirs of *.pub) desired states "
                                        "must be signed with (default: trusted_keys)",
                                        default=())
    allow_unsigned_desired: bool = _doc("development only: accept unsigned desired states",
                                        default=False)
    mqtt_ca_file: Path | None = _doc("CA bundle for mqtts://", default=None)
    mqtt_cert_file: Path | None = _doc("client certificate for mqtts://", default=None)
    mqtt_key_file: Path | None = _doc("client key for mqtts://", default=None)
    fault_kill_at: str | None = _doc("tests only: SIGKILL this process right after a swap "
                                     "record enters this state (EDGE_FAULT_KILL_AT)",
                                     default=None, flag=False)

    def __post_init__(self) -> None:
        if self.host not in LOOPBACK and not self.token:
            raise ConfigError(f"binding to {self.host} needs a bearer token (--token or "
                              "EDGE_TOKEN): only loopback may be open")
        if self.max_body_bytes <= 0 or self.port < 0:
            raise ConfigError("max_body_bytes must be > 0 and port >= 0")
        if self.body_memory_bytes and self.body_memory_bytes < self.max_body_bytes:
            raise ConfigError("body_memory_bytes must be 0 or at least max_body_bytes")
        if min(self.header_timeout_s, self.body_idle_timeout_s) <= 0 or (
                self.body_min_bytes_per_s < 0):
            raise ConfigError("header_timeout_s and body_idle_timeout_s must be > 0, "
                              "body_min_bytes_per_s >= 0")
        if not (self.drift_max_rows_per_s >= 0 and 0 <= self.drift_max_cpu <= 1):
            raise ConfigError("drift_max_rows_per_s must be >= 0 and drift_max_cpu in [0, 1]")
        if self.probation_no_data not in ("rollback", "hold") or self.probation_max_wait_s < 0:
            raise ConfigError("probation_no_data must be rollback or hold and "
                              "probation_max_wait_s >= 0")
        if self.http_server not in ("builtin", "uvicorn"):
            raise ConfigError(f"http_server must be builtin or uvicorn, not {self.http_server!r}")
        if self.fleet_password is not None and self.fleet_password_file is not None:
            raise ConfigError("give the broker password one way: fleet_password_file "
                              "(--fleet-password-file) or EDGE_FLEET_PASSWORD, not both")

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    @property
    def desired_keys(self) -> tuple[Path, ...]:
        """The keys the fleet agent trusts for desired states: the package keys unless
        fleet_keys names others (a fleet may keep its release key offline)."""
        return self.fleet_keys or self.trusted_keys

    def fleet_mqtt(self) -> MqttSettings:
        """The fleet link's broker settings; the password from fleet_password_file or
        EDGE_FLEET_PASSWORD, else the one in fleet_url (reads the file now)."""
        from edge_runtime.protocol.link import MqttSettings, read_password_file

        if not self.fleet_url:
            raise ConfigError("no broker URL (fleet_url, --fleet-url or EDGE_FLEET_URL)")
        password = (read_password_file(self.fleet_password_file)
                    if self.fleet_password_file is not None else self.fleet_password)
        return MqttSettings.from_url(self.fleet_url, password=password,
                                     ca_file=self.mqtt_ca_file, cert_file=self.mqtt_cert_file,
                                     key_file=self.mqtt_key_file)

    @classmethod
    def load(cls, *, config: Path | None = None, overrides: Mapping[str, Any] | None = None,
             env: Mapping[str, str] | None = None, base: Mapping[str, Any] | None = None
             ) -> ServeSettings:
        values: dict[str, Any] = dict(base or {})
        if config is not None:
            values.update(_read_toml(config))
        values.update(_from_env(os.environ if env is None else env))
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        values.update(_undeprecate(given, "option"))
        return cls(**_coerce(values))

    def with_(self, **changes: Any) -> ServeSettings:
        return replace(self, **changes)


_FIELDS = {f.name: f for f in fields(ServeSettings)}
#: Old spellings still taken (flags, TOML, overrides), each with a warning naming the setting.
DEPRECATED = {"threads": "intra_op_threads", "telemetry_interval": "telemetry_interval_s",
              "group": "device_group", "tags": "device_tags"}
#: EDGE_* variables that are not ServeSettings (CliSettings).
OTHER_ENV = frozenset({"EDGE_DEBUG"})
_WARNED: set[tuple[str, str]] = set()


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def flag_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def unknown_env(env: Mapping[str, str] | None = None) -> list[str]:
    """``EDGE_*`` variables set that name no setting, each with a hint when one is close."""
    env = os.environ if env is None else env
    known = {env_name(n) for n in _FIELDS} | OTHER_ENV
    out = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            out.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return out


def _undeprecate(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Old spellings renamed; each warned about once per process (settings load twice)."""
    out = dict(values)
    for old, new in DEPRECATED.items():
        if old in out:
            if (source, old) not in _WARNED:
                _WARNED.add((source, old))
                log.warning("%s: %r is deprecated, the setting is %r", source, old, new)
            value = out.pop(old)
            out.setdefault(new, value)
    return out


def _unknown(keys: set[str]) -> str:
    """``['x', 'y']``, then the setting each seems to mean."""
    hints = []
    for key in sorted(keys):
        close = difflib.get_close_matches(key, sorted(_FIELDS), n=1)
        if close:
            hints.append(f"{key} -> {close[0]}")
    return f"{sorted(keys)}" + (f" (did you mean {', '.join(hints)}?)" if hints else "")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    data = data.get("serve", data)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: [serve] must be a table of settings")
    data = _undeprecate(data, str(path))
    unknown = set(data) - set(_FIELDS)
    if unknown:
        raise ConfigError(f"{path}: unknown settings {_unknown(unknown)}")
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Every setting's EDGE_* variable; an empty one counts as unset."""
    return {key: env[env_name(key)] for key in _FIELDS if env.get(env_name(key))}


def _coerce(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {_unknown({key})}")
        out[key] = _coerce_one(key, _FIELDS[key].type, value)
    return out


def _coerce_one(key: str, annotation: Any, value: Any) -> Any:
    kind = str(annotation)
    try:
        if "tuple[Path" in kind:
            items = value.split(",") if isinstance(value, str) else value
            return tuple(Path(p) for p in items)
        if "tuple[str" in kind:
            items = value.split(",") if isinstance(value, str) else value
            return tuple(str(p) for p in items if p)
        if "Path" in kind:
            return Path(value)
        if kind.startswith("bool"):
            return _bool(value)
        if kind.startswith("int"):
            if isinstance(value, bool | float):
                raise TypeError("not an integer")
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool) or not math.isfinite(number := float(value)):
                raise ValueError("not a finite number")
            return number
        if kind.startswith("str") and not isinstance(value, str):
            raise TypeError("not a string")
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"setting {key}: {value!r} is not a valid {kind}") from exc
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in _TRUE + _FALSE:
        raise ValueError(f"not one of {', '.join(_TRUE + _FALSE[:-1])}")
    return text in _TRUE
