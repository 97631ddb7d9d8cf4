"""Versioned message schemas shared by the device agent and the fleet manager.

Every payload is a JSON object with ``schema_version``; decoders check types and ranges
(`edge_runtime.protocol.schema`: integers that fit SQLite, finite floats, bounded strings and
lists) and raise ``MessageInvalid`` (carrying the kind, the reason and a `Defect` code) for
anything malformed, so a bad payload is logged, counted and dropped, never stored and never
crashes a receiver. Artifact chunks are binary: a 4-byte big-endian header length, a JSON
header, then the chunk bytes.
"""

from __future__ import annotations

import re
import struct
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from edge_runtime.protocol import payloads
from edge_runtime.protocol.schema import (
    MAX_TEXT,
    SCHEMA_VERSION,
    Defect,
    Fields,
    MessageInvalid,
)
from edge_runtime.swap.machine import State

__all__ = ["SCHEMA_VERSION", "Defect", "MessageInvalid", "Status", "Heartbeat", "Artifact",
           "Probation", "Experiment", "ModelTarget", "Desired", "ModelReport", "Reported",
           "Event", "Telemetry", "ArtifactRequest", "ArtifactChunk", "Alert", "encode"]

SWAP_STATES = frozenset(s.value for s in State)
REPORT_STATES = SWAP_STATES | {"idle"}  # a model with no swap record yet
MAX_MODELS = 256
MAX_TAGS = 64
MAX_CHUNKS = 1 << 16  # chunks of one artifact (4 GB at the default 64 KiB)
MAX_CHUNK_SIZE = 1 << 26
MAX_URL = 2048
MAX_CHUNK_HEADER = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _sha256(f: Fields, key: str) -> str:
    value = f.string(key)
    if not _SHA256.fullmatch(value):
        raise f.fail(f"{key!r} must be a lowercase sha256 hex digest")
    return str(value)


def encode(msg: Any) -> bytes:
    return orjson.dumps({"schema_version": SCHEMA_VERSION, **asdict(msg)})


@dataclass(frozen=True)
class Status:
    state: str  # online | offline
    session: int
    ts: float = field(default_factory=time.time)

    @classmethod
    def decode(cls, payload: bytes) -> Status:
        f = Fields.load("status", payload)
        return cls(f.string("state", choices=("online", "offline")), f.integer("session"),
                   f.timestamp("ts"))


@dataclass(frozen=True)
class Heartbeat:
    session: int
    uptime_s: float
    ts: float = field(default_factory=time.time)

    @classmethod
    def decode(cls, payload: bytes) -> Heartbeat:
        f = Fields.load("heartbeat", payload)
        return cls(f.integer("session"), f.number("uptime_s"), f.timestamp("ts"))


@dataclass(frozen=True)
class Artifact:
    sha256: str
    size: int
    chunk_size: int
    chunks: tuple[str, ...]
    url: str | None = None

    @classmethod
    def from_dict(cls, d: Any) -> Artifact:
        f = Fields("artifact", d)
        chunks = f.strings("chunks", max_items=MAX_CHUNKS)
        if not all(_SHA256.fullmatch(c) for c in chunks):
            raise f.fail("chunks must be sha256 hex strings")
        size = f.integer("size", hi=MAX_CHUNKS * MAX_CHUNK_SIZE)
        chunk = f.integer("chunk_size", lo=1, hi=MAX_CHUNK_SIZE)
        if len(chunks) != -(-size // chunk):
            raise f.fail("sha256/size/chunk_size/chunks do not agree")
        return cls(_sha256(f, "sha256"), size, chunk, chunks,
                   f.string("url", None, max_len=MAX_URL))


@dataclass(frozen=True)
class Probation:
    seconds: float = 30.0
    max_error_rate: float = 0.05  # absolute error rate the new version may not exceed ...
    max_error_increase: float = 0.02  # ... nor exceed the old version's by more than this
    max_p95_ratio: float = 1.5  # new p95 latency / old p95 latency
    min_requests: int = 20  # below this the verdict waits (until the probation time is over)

    @classmethod
    def from_dict(cls, d: Any) -> Probation:
        f, base = Fields("probation", d), cls()
        return cls(f.number("seconds", base.seconds), f.number("max_error_rate",
                                                                base.max_error_rate),
                   f.number("max_error_increase", base.max_error_increase),
                   f.number("max_p95_ratio", base.max_p95_ratio),
                   f.integer("min_requests", base.min_requests))


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
        f = Fields("experiment", d)
        return cls(f.string("id"), f.string("version"), Artifact.from_dict(f.doc.get("artifact")),
                   f.number("split", hi=100.0))


@dataclass(frozen=True)
class ModelTarget:
    version: str
    deployment: str
    artifact: Artifact
    probation: Probation = field(default_factory=Probation)
    experiment: Experiment | None = None

    @classmethod
    def from_dict(cls, d: Any) -> ModelTarget:
        f = Fields("desired", d)
        exp, probation = f.doc.get("experiment"), f.doc.get("probation")
        return cls(f.string("version"), f.string("deployment"),
                   Artifact.from_dict(f.doc.get("artifact")),
                   Probation.from_dict({} if probation is None else probation),
                   Experiment.from_dict(exp) if exp is not None else None)


@dataclass(frozen=True)
class Desired:
    generation: int
    models: dict[str, ModelTarget]
    ts: float = field(default_factory=time.time)

    @classmethod
    def decode(cls, payload: bytes) -> Desired:
        f = Fields.load("desired", payload)
        models = f.mapping("models", max_items=MAX_MODELS)
        return cls(f.integer("generation"),
                   {k: ModelTarget.from_dict(v) for k, v in models.items()}, f.timestamp("ts"))


@dataclass(frozen=True)
class ModelReport:
    active: str | None
    previous: str | None
    installed: tuple[str, ...]
    state: str
    deployment: str | None = None
    reason: str = ""

    @classmethod
    def from_dict(cls, d: Any) -> ModelReport:
        f = Fields("reported", d)
        return cls(f.string("active", None), f.string("previous", None), f.strings("installed"),
                   f.string("state", choices=REPORT_STATES), f.string("deployment", None),
                   f.string("reason", "", max_len=MAX_TEXT))


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
        f = Fields.load("reported", payload)
        models = {name: ModelReport.from_dict(m)
                  for name, m in f.mapping("models", max_items=MAX_MODELS).items()}
        return cls(f.integer("generation"), f.integer("session"), models,
                   f.strings("tags", max_items=MAX_TAGS), f.string("group", None),
                   f.string("profile", None), f.timestamp("ts"))


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
        return cls.decode_with_id(payload)[0]

    @classmethod
    def decode_with_id(cls, payload: bytes) -> tuple[Event, str | None]:
        """The event and the outbox message id the device sent it with (None: none)."""
        f = Fields.load("event", payload)
        event = cls(f.integer("seq"), f.string("name"), f.string("version", None),
                    f.string("state", choices=SWAP_STATES), f.string("deployment", None),
                    f.string("reason", "", max_len=MAX_TEXT), f.timestamp("ts"))
        return event, f.string("msg_id", None)


@dataclass(frozen=True)
class Telemetry:
    msg_id: str
    kind: str  # metrics | drift | feedback
    model: str | None
    version: str | None
    start: float
    end: float
    payload: dict[str, Any]  # normalised by `payloads.check`: only what the kind defines

    @classmethod
    def decode(cls, data: bytes) -> Telemetry:
        f = Fields.load("telemetry", data)
        kind = f.string("kind", choices=payloads.KINDS)
        return cls(f.string("msg_id"), kind, f.string("model", None), f.string("version", None),
                   f.timestamp("start"), f.timestamp("end"),
                   payloads.check(f.sub("payload"), kind))


@dataclass(frozen=True)
class ArtifactRequest:
    sha256: str
    chunks: tuple[int, ...]

    @classmethod
    def decode(cls, payload: bytes) -> ArtifactRequest:
        f = Fields.load("artifact request", payload)
        chunks = f.integers("chunks", hi=MAX_CHUNKS - 1)
        if not chunks:
            raise f.fail("chunks must be a non-empty list of indices", Defect.MISSING)
        return cls(_sha256(f, "sha256"), chunks)


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
            raise MessageInvalid(k, "too short", Defect.NOT_OBJECT)
        (hlen,) = struct.unpack(">I", payload[:4])
        if hlen > MAX_CHUNK_HEADER or 4 + hlen > len(payload):
            raise MessageInvalid(k, "header length beyond the payload", Defect.OUT_OF_RANGE)
        f = Fields.load(k, payload[4:4 + hlen])
        data = payload[4 + hlen:]
        if f.integer("size", hi=MAX_CHUNK_SIZE) != len(data):
            raise f.fail("size does not match the data")
        return cls(_sha256(f, "sha256"), f.integer("index", hi=MAX_CHUNKS - 1), bytes(data))


@dataclass(frozen=True)
class Alert:
    kind: str
    severity: str  # warn | alert
    model: str | None
    version: str | None
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)
