"""Every MQTT message decoder against hostile input (hypothesis): arbitrary bytes, arbitrary JSON,
and valid messages with one field replaced by something nasty. A decoder either raises
`MessageInvalid` (with a `Defect`) or returns a message whose every number fits SQLite and is
finite and whose every string and list is bounded; valid messages round-trip unchanged."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import struct
from collections.abc import Callable
from copy import deepcopy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.protocol import messages as m
from edge_runtime.protocol.schema import MAX_INT, MAX_TEXT, Defect, MessageInvalid

SHA = "ab" * 32
LATENCY = {"relative_accuracy": 0.01, "min_value": 1e-6, "bins": {"10": 3, "-4": 1}, "zero": 1,
           "sum": 0.01, "min": 0.0, "max": 0.004}
DRIFT = base64.b64encode(b"EDW1" + b"\x00" * 16).decode()
ARTIFACT = {"sha256": SHA, "size": 10, "chunk_size": 4, "chunks": [SHA] * 3, "url": None}
TARGET = {"version": "2", "deployment": "dep-1", "artifact": ARTIFACT,
          "probation": {"seconds": 1.5, "max_error_rate": 0.1, "max_error_increase": 0.02,
                        "max_p95_ratio": 1.5, "min_requests": 3},
          "experiment": {"id": "ex-1", "version": "3", "artifact": ARTIFACT, "split": 12.5}}
REPORT = {"active": "2", "previous": "1", "installed": ["1", "2"], "state": "committed",
          "deployment": "dep-1", "reason": ""}
# A valid document per decoder: the base the mutations start from.
VALID: dict[str, dict[str, Any]] = {
    "status": {"state": "online", "session": 3, "ts": 1.7e9},
    "heartbeat": {"session": 3, "uptime_s": 12.5, "ts": 1.7e9},
    "desired": {"generation": 7, "models": {"digits": TARGET}, "ts": 1.7e9},
    "reported": {"generation": 7, "session": 3, "models": {"digits": REPORT},
                 "tags": ["cam"], "group": "lab", "profile": "rpi4", "ts": 1.7e9},
    "event": {"seq": 4, "name": "digits", "version": "2", "state": "probation",
              "deployment": "dep-1", "reason": "", "ts": 1.7e9, "msg_id": "e-1"},
    "metrics": {"msg_id": "t-1", "kind": "metrics", "model": "digits", "version": "2",
                "start": 1.7e9, "end": 1.7e9 + 1,
                "payload": {"requests": 4, "errors": {"inference": 1}, "items": 4,
                            "latency": LATENCY}},
    "feedback": {"msg_id": "t-2", "kind": "feedback", "model": "digits", "version": "2",
                 "start": 1.7e9, "end": 1.7e9, "payload": {"n": 5, "correct": 4}},
    "drift": {"msg_id": "t-3", "kind": "drift", "model": "digits", "version": "2",
              "start": 1.7e9, "end": 1.7e9, "payload": {"encoding": "EDW1", "data": DRIFT}},
    "artifact_req": {"sha256": SHA, "chunks": [0, 2]},
}
DECODERS: dict[str, Callable[[bytes], Any]] = {
    "status": m.Status.decode, "heartbeat": m.Heartbeat.decode, "desired": m.Desired.decode,
    "reported": m.Reported.decode, "event": m.Event.decode, "metrics": m.Telemetry.decode,
    "feedback": m.Telemetry.decode, "drift": m.Telemetry.decode,
    "artifact_req": m.ArtifactRequest.decode, "chunk": m.ArtifactChunk.decode,
}
FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# What a hostile device sends instead of a value.
NASTY: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([2**64 - 1, 2**63, -1, -(2**63) - 1, 10**30, 1e300, -1e300, 1e-320, -0.0,
                     True, False, None, "", "x" * (1 << 20), "\x00\n\x1b[31m", "NaN", "inf",
                     [], {}, [1, 2], {"a": 1}, [[[[[[]]]]]], "ab" * 32, 0]),
    st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=300), st.lists(st.integers(), max_size=5),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20)


def _json(doc: Any) -> bytes:
    """Any JSON document, integers beyond 64 bits included (as a device may send them)."""
    return json.dumps(doc).encode()


def _doc(**kw: Any) -> bytes:
    return _json({"schema_version": 1, **kw})


def _chunk(header: dict[str, Any], data: bytes = b"abcd") -> bytes:
    raw = _json({"schema_version": 1, **header})
    return struct.pack(">I", len(raw)) + raw + data


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into a document (dict keys and list indices)."""
    out = [prefix] if prefix else []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(
        doc, list) else ()
    for key, value in items:
        out += _paths(value, (*prefix, key))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = deepcopy(doc)
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def _sane(value: Any, where: str = "") -> None:
    """Every number fits SQLite and is finite; every string and list is bounded."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _sane(getattr(value, f.name), f"{where}.{f.name}")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        assert 0 <= value <= MAX_INT, where
    elif isinstance(value, float):
        assert math.isfinite(value) and value >= 0, where
    elif isinstance(value, str):
        assert len(value) <= max(MAX_TEXT, 1 << 20), where
    elif isinstance(value, bytes):
        return
    elif isinstance(value, (list, tuple)):
        assert len(value) <= 1 << 16, where
        for item in value:
            _sane(item, where)
    elif isinstance(value, dict):
        assert len(value) <= 1 << 12, where
        for key, item in value.items():
            _sane(key, where)
            _sane(item, f"{where}[{key}]")
    else:
        raise AssertionError(f"{where}: unexpected {type(value)}")


def _decode(name: str, payload: bytes) -> Any:
    """The decoder's result, or None when it refused with MessageInvalid (and a Defect)."""
    try:
        out = DECODERS[name](payload)
    except MessageInvalid as exc:
        assert isinstance(exc.defect, Defect) and exc.reason
        return None
    _sane(out, name)
    return out


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_messages_round_trip(name: str) -> None:
    msg = _decode(name, _doc(**VALID[name]))
    assert msg is not None
    assert DECODERS[name](m.encode(msg)) == msg


def test_chunk_round_trips() -> None:
    chunk = m.ArtifactChunk(SHA, 3, b"\x00\xffdata")
    assert m.ArtifactChunk.decode(chunk.encode()) == chunk


@pytest.mark.parametrize("name", sorted(DECODERS))
@FUZZ
@given(payload=st.binary(max_size=300))
def test_any_bytes(name: str, payload: bytes) -> None:
    _decode(name, payload)
    _decode(name, _doc()[:-1] + b"," + payload + b"}")


@pytest.mark.parametrize("name", sorted(DECODERS))
@FUZZ
@given(doc=JSON)
def test_any_json(name: str, doc: Any) -> None:
    _decode(name, _json(doc))
    if isinstance(doc, dict):
        _decode(name, _doc(**doc))


@pytest.mark.parametrize("name", sorted(VALID))
@FUZZ
@given(data=st.data(), value=NASTY)
def test_one_field_replaced(name: str, data: st.DataObject, value: Any) -> None:
    base = VALID[name]
    path = data.draw(st.sampled_from(_paths(base)))
    _decode(name, _doc(**_replace(base, path, value)))


@FUZZ
@given(header=st.dictionaries(st.sampled_from(["sha256", "index", "size", "extra"]), NASTY),
       data=st.binary(max_size=64), hlen=st.integers(0, 2**32 - 1))
def test_chunk_headers(header: dict[str, Any], data: bytes, hlen: int) -> None:
    _decode("chunk", _chunk(header, data))
    _decode("chunk", struct.pack(">I", hlen) + _json(header) + data)


# The issue's cases, each with the reason it is dropped for.
CASES = [
    ("status", _doc(state="online", session=2**64 - 1, ts=1.0), Defect.OUT_OF_RANGE),
    ("heartbeat", _doc(session=1, uptime_s=1e300, ts=1.0), None),  # finite: fine
    ("heartbeat", _doc(session=1, uptime_s=[1], ts=1.0), Defect.WRONG_TYPE),
    ("status", _doc(state="online", session=1, ts=1e300), Defect.OUT_OF_RANGE),
    ("desired", _doc(generation=2**64 - 1, models={}, ts=1.0), Defect.OUT_OF_RANGE),
    ("metrics", _doc(**{**VALID["metrics"], "msg_id": ["x"]}), Defect.WRONG_TYPE),
    ("feedback", _doc(**{**VALID["feedback"], "payload": {"n": -5, "correct": 100}}),
     Defect.OUT_OF_RANGE),
    ("feedback", _doc(**{**VALID["feedback"], "payload": {"n": 5, "correct": 100}}),
     Defect.OUT_OF_RANGE),
    ("feedback", _doc(**{**VALID["feedback"], "payload": {"n": 1e300, "correct": 1}}),
     Defect.WRONG_TYPE),
    ("drift", _doc(**{**VALID["drift"], "payload": {"encoding": "EDW1", "data": "%%%"}}),
     Defect.UNDECODABLE),
    ("drift", _doc(**{**VALID["drift"], "payload": {"features": []}}), Defect.MISSING),
    ("metrics", _doc(**{**VALID["metrics"], "kind": "bogus"}), Defect.BAD_VALUE),
    ("reported", _doc(**{**VALID["reported"], "tags": [{"a": 1}]}), Defect.WRONG_TYPE),
    ("reported", _doc(**{**VALID["reported"], "group": "x" * (1 << 20)}), Defect.TOO_LONG),
    ("event", _doc(**{**VALID["event"], "state": "exploded"}), Defect.BAD_VALUE),
    ("artifact_req", _doc(sha256=SHA, chunks=[2**64 - 1]), Defect.OUT_OF_RANGE),
    ("artifact_req", _doc(sha256="../../etc/passwd", chunks=[0]), Defect.BAD_VALUE),
    ("status", b"\xff\xfe{", Defect.NOT_JSON),
    ("status", b"[" * 5000 + b"]" * 5000, Defect.NOT_JSON),
    ("status", b'{"schema_version": 1, "state": NaN, "session": 1, "ts": 1}', Defect.NOT_JSON),
    ("status", _doc(state="online", session=1.5, ts=1.0), Defect.WRONG_TYPE),
    ("chunk", _chunk({"sha256": SHA, "index": 2**63, "size": 4}), Defect.OUT_OF_RANGE),
]


@pytest.mark.parametrize(("name", "payload", "defect"), CASES)
def test_issue_cases(name: str, payload: bytes, defect: Defect | None) -> None:
    if defect is None:
        assert _decode(name, payload) is not None
        return
    with pytest.raises(MessageInvalid) as info:
        DECODERS[name](payload)
    assert info.value.defect is defect, info.value
