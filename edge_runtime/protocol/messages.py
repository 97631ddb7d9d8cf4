"""Versioned message schemas shared by the device agent and the fleet manager.

Every payload is a JSON object with ``schema_version``; decoders check types and raise
``MessageInvalid`` (carrying the kind and the reason) for anything malformed, so a bad payload is
logged and dropped, never crashes a receiver. Artifact chunks are binary: a 4-byte big-endian
header length, a JSON header, then the chunk bytes.
"""

from __future__ import annotations

import struct
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from edge_runtime.errors import EdgeRuntimeError

SCHEMA_VERSION = 1
_HASH_LEN = 64


class MessageInvalid(EdgeRuntimeError):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"invalid {kind} message: {reason}")
        self.kind = kind
        self.reason = reason


def _obj(kind: str, payload: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MessageInvalid(kind, f"not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise MessageInvalid(kind, "not a JSON object")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise MessageInvalid(kind, f"schema_version {doc.get('schema_version')!r} is not "
                             f"{SCHEMA_VERSION}")
    return doc


def _get(kind: str, doc: dict[str, Any], key: str, typ: type | tuple[type, ...],
         default: Any = ...) -> Any:
    if key not in doc:
        if default is ...:
            raise MessageInvalid(kind, f"missing {key!r}")
        return default
    value = doc[key]
    if isinstance(value, bool) and typ in (int, float, (int, float)):
        raise MessageInvalid(kind, f"{key!r} must be a number")
    if not isinstance(value, typ) and not (default is not ... and value is None):
        raise MessageInvalid(kind, f"{key!r} has the wrong type")
    return value


def encode(msg: Any) -> bytes:
    return orjson.dumps({"schema_version": SCHEMA_VERSION, **asdict(msg)})


@dataclass(frozen=True)
class Status:
    state: str  # online | offline
    session: int
    ts: float = field(default_factory=time.time)

    @classmethod
    def decode(cls, payload: bytes) -> Status:
        d = _obj("status", payload)
        state = _get("status", d, "state", str)
        if state not in ("online", "offline"):
            raise MessageInvalid("status", f"state {state!r}")
        return cls(state, _get("status", d, "session", int), _get("status", d, "ts", (int, float)))


@dataclass(frozen=True)
class Heartbeat:
    session: int
    uptime_s: float
    ts: float = field(default_factory=time.time)

    @classmethod
    def decode(cls, payload: bytes) -> Heartbeat:
        d = _obj("heartbeat", payload)
        return cls(_get("heartbeat", d, "session", int),
                   _get("heartbeat", d, "uptime_s", (int, float)),
                   _get("heartbeat", d, "ts", (int, float)))


@dataclass(frozen=True)
class Artifact:
    sha256: str
    size: int
    chunk_size: int
    chunks: tuple[str, ...]
    url: str | None = None

    @classmethod
    def from_dict(cls, d: Any) -> Artifact:
        k = "artifact"
        if not isinstance(d, dict):
            raise MessageInvalid(k, "not an object")
        chunks = _get(k, d, "chunks", list)
        if not all(isinstance(c, str) and len(c) == _HASH_LEN for c in chunks):
            raise MessageInvalid(k, "chunks must be sha256 hex strings")
        sha, size, chunk = (_get(k, d, "sha256", str), _get(k, d, "size", int),
                            _get(k, d, "chunk_size", int))
        if len(sha) != _HASH_LEN or size < 0 or chunk <= 0 or len(chunks) != -(-size // chunk):
            raise MessageInvalid(k, "sha256/size/chunk_size/chunks do not agree")
        return cls(sha, size, chunk, tuple(chunks), _get(k, d, "url", str, None))


@dataclass(frozen=True)
class Probation:
    seconds: float = 30.0
    max_error_rate: float = 0.05  # absolute error rate the new version may not exceed ...
    max_error_increase: float = 0.02  # ... nor exceed the old version's by more than this
    max_p95_ratio: float = 1.5  # new p95 latency / old p95 latency
    min_requests: int = 20  # below this the verdict waits (until the probation time is over)

    @classmethod
    def from_dict(cls, d: Any) -> Probation:
        k, base = "probation", cls()
        if not isinstance(d, dict):
            raise MessageInvalid(k, "not an object")
        num = (int, float)
        return cls(float(_get(k, d, "seconds", num, base.seconds)),
                   float(_get(k, d, "max_error_rate", num, base.max_error_rate)),
                   float(_get(k, d, "max_error_increase", num, base.max_error_increase)),
                   float(_get(k, d, "max_p95_ratio", num, base.max_p95_ratio)),
                   int(_get(k, d, "min_requests", int, base.min_requests)))


@dataclass(frozen=True)
class Experiment:
    """A request-level A/B test on the device: ``split`` percent of request units (the V2
    request id) go to version ``version``; the rest to the model's target version (arm A)."""

    id: str
    version: str
    artifact: Artifact
    split: float

    @classmethod
    def from_dict(cls, d: Any) -> Experiment:
        k = "experiment"
        if not isinstance(d, dict):
            raise MessageInvalid(k, "not an object")
        split = float(_get(k, d, "split", (int, float)))
        if not 0.0 <= split <= 100.0:
            raise MessageInvalid(k, "split must be a percentage")
        return cls(_get(k, d, "id", str), _get(k, d, "version", str),
                   Artifact.from_dict(d.get("artifact")), split)


@dataclass(frozen=True)
class ModelTarget:
    version: str
    deployment: str
    artifact: Artifact
    probation: Probation = field(default_factory=Probation)
    experiment: Experiment | None = None

    @classmethod
    def from_dict(cls, d: Any) -> ModelTarget:
        if not isinstance(d, dict):
            raise MessageInvalid("desired", "model entry is not an object")
        exp = d.get("experiment")
        return cls(_get("desired", d, "version", str), _get("desired", d, "deployment", str),
                   Artifact.from_dict(d.get("artifact")),
                   Probation.from_dict(d.get("probation", {})),
                   Experiment.from_dict(exp) if exp is not None else None)


@dataclass(frozen=True)
class Desired:
    generation: int
    models: dict[str, ModelTarget]
    ts: float = field(default_factory=time.time)

    @classmethod
    def decode(cls, payload: bytes) -> Desired:
        d = _obj("desired", payload)
        models = _get("desired", d, "models", dict)
        return cls(_get("desired", d, "generation", int),
                   {str(k): ModelTarget.from_dict(v) for k, v in models.items()},
                   _get("desired", d, "ts", (int, float)))


@dataclass(frozen=True)
class ModelReport:
    active: str | None
    previous: str | None
    installed: tuple[str, ...]
    state: str
    deployment: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Reported:
    generation: int
    session: int
    models: dict[str, ModelReport]
    tags: tuple[str, ...] = ()
    group: str | None = None
    profile: str | None = None
    ts: float = field(default_factory=time.time)

    @classmethod
    def decode(cls, payload: bytes) -> Reported:
        k = "reported"
        d = _obj(k, payload)
        models = {}
        for name, m in _get(k, d, "models", dict).items():
            if not isinstance(m, dict):
                raise MessageInvalid(k, f"model {name!r} is not an object")
            models[str(name)] = ModelReport(
                _get(k, m, "active", str, None), _get(k, m, "previous", str, None),
                tuple(_get(k, m, "installed", list, [])), _get(k, m, "state", str),
                _get(k, m, "deployment", str, None), _get(k, m, "reason", str, ""))
        return cls(_get(k, d, "generation", int), _get(k, d, "session", int), models,
                   tuple(_get(k, d, "tags", list, [])), _get(k, d, "group", str, None),
                   _get(k, d, "profile", str, None), _get(k, d, "ts", (int, float)))


@dataclass(frozen=True)
class Event:
    seq: int
    name: str
    version: str | None
    state: str
    deployment: str | None = None
    reason: str = ""
    ts: float = field(default_factory=time.time)

    @classmethod
    def decode(cls, payload: bytes) -> Event:
        k = "event"
        d = _obj(k, payload)
        return cls(_get(k, d, "seq", int), _get(k, d, "name", str),
                   _get(k, d, "version", str, None), _get(k, d, "state", str),
                   _get(k, d, "deployment", str, None), _get(k, d, "reason", str, ""),
                   _get(k, d, "ts", (int, float)))


@dataclass(frozen=True)
class Telemetry:
    msg_id: str
    kind: str  # metrics | drift | feedback
    model: str | None
    version: str | None
    start: float
    end: float
    payload: dict[str, Any]

    @classmethod
    def decode(cls, data: bytes) -> Telemetry:
        k = "telemetry"
        d = _obj(k, data)
        return cls(_get(k, d, "msg_id", str), _get(k, d, "kind", str),
                   _get(k, d, "model", str, None), _get(k, d, "version", str, None),
                   _get(k, d, "start", (int, float)), _get(k, d, "end", (int, float)),
                   _get(k, d, "payload", dict))


@dataclass(frozen=True)
class ArtifactRequest:
    sha256: str
    chunks: tuple[int, ...]

    @classmethod
    def decode(cls, payload: bytes) -> ArtifactRequest:
        k = "artifact request"
        d = _obj(k, payload)
        chunks = _get(k, d, "chunks", list)
        if not chunks or not all(isinstance(c, int) and c >= 0 for c in chunks):
            raise MessageInvalid(k, "chunks must be a non-empty list of indices")
        return cls(_get(k, d, "sha256", str), tuple(chunks))


@dataclass(frozen=True)
class ArtifactChunk:
    sha256: str
    index: int
    data: bytes

    def encode(self) -> bytes:
        header = orjson.dumps({"schema_version": SCHEMA_VERSION, "sha256": self.sha256,
                               "index": self.index, "size": len(self.data)})
        return struct.pack(">I", len(header)) + header + self.data

    @classmethod
    def decode(cls, payload: bytes) -> ArtifactChunk:
        k = "artifact chunk"
        if len(payload) < 4:
            raise MessageInvalid(k, "too short")
        (hlen,) = struct.unpack(">I", payload[:4])
        if 4 + hlen > len(payload):
            raise MessageInvalid(k, "header length beyond the payload")
        d = _obj(k, payload[4:4 + hlen])
        data = payload[4 + hlen:]
        if _get(k, d, "size", int) != len(data):
            raise MessageInvalid(k, "size does not match the data")
        return cls(_get(k, d, "sha256", str), _get(k, d, "index", int), bytes(data))


@dataclass(frozen=True)
class Alert:
    kind: str
    severity: str  # warn | alert
    model: str | None
    version: str | None
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)
