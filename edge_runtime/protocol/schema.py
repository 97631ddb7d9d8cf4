"""Validation primitives of the wire schemas: every field a decoder reads goes through `Fields`.

Anything that crosses MQTT is hostile until decoded: integers must fit SQLite (and the
protocol's own tighter ranges), floats must be finite, strings and lists are bounded, and every
failure is a `MessageInvalid` carrying the message kind, a readable reason and a `Defect` (the
stable reason code receivers count drops by).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from enum import StrEnum
from typing import Any

import orjson

from edge_runtime.errors import EdgeRuntimeError

SCHEMA_VERSION = 1
MAX_INT = 2**63 - 1  # SQLite's INTEGER
MAX_TS = 1e11  # seconds since the epoch: year 5138; beyond it a clock is broken, not early
MAX_NAME = 256  # ids, names, versions, states, message ids
MAX_TEXT = 4096  # free text (reasons)
MAX_ITEMS = 1024  # any list or map the schema does not bound more tightly
_MISSING: Any = object()


class Defect(StrEnum):
    """Why a message was dropped: the key receivers count drops by."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    SCHEMA_VERSION = "schema_version"
    MISSING = "missing_field"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    TOO_LONG = "too_long"
    BAD_VALUE = "bad_value"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_DEVICE = "unknown_device"
    UNKNOWN_VERSION = "unknown_version"
    UNDECODABLE = "undecodable"
    BUSY = "busy"
    ERROR = "error"


class MessageInvalid(EdgeRuntimeError):
    def __init__(self, kind: str, reason: str, defect: Defect = Defect.BAD_VALUE) -> None:
        super().__init__(f"invalid {kind} message: {reason}")
        self.kind = kind
        self.reason = reason
        self.defect = defect


class Fields:
    """Typed, range-checked reads of one JSON object: ``Fields.load("status", payload)`` then
    ``f.integer("session")``. A key that is absent or null takes the default; without a default it
    is a `Defect.MISSING`."""

    __slots__ = ("doc", "kind")

    def __init__(self, kind: str, doc: Any) -> None:
        if not isinstance(doc, dict):
            raise MessageInvalid(kind, "not a JSON object", Defect.NOT_OBJECT)
        self.kind = kind
        self.doc: dict[str, Any] = doc

    @classmethod
    def load(cls, kind: str, payload: bytes) -> Fields:
        """A message body: JSON, an object, the current ``schema_version``."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise MessageInvalid(kind, f"not JSON ({exc})", Defect.NOT_JSON) from exc
        f = cls(kind, doc)
        version = f.doc.get("schema_version")
        if type(version) is not int or version != SCHEMA_VERSION:
            raise MessageInvalid(kind, f"schema_version {str(version)[:20]!r} is not "
                                 f"{SCHEMA_VERSION}", Defect.SCHEMA_VERSION)
        return f

    def fail(self, reason: str, defect: Defect = Defect.BAD_VALUE) -> MessageInvalid:
        return MessageInvalid(self.kind, reason, defect)

    def _value(self, key: str, default: Any) -> Any:
        value = self.doc.get(key)
        if value is None and default is _MISSING:
            raise self.fail(f"missing {key!r}", Defect.MISSING)
        return value

    def integer(self, key: str, default: Any = _MISSING, *, lo: int = 0, hi: int = MAX_INT) -> Any:
        value = self._value(key, default)
        return default if value is None else self.check_int(key, value, lo, hi)

    def check_int(self, what: str, value: Any, lo: int = 0, hi: int = MAX_INT) -> int:
        if type(value) is not int:
            raise self.fail(f"{what!r} must be an integer", Defect.WRONG_TYPE)
        if not lo <= value <= hi:
            raise self.fail(f"{what!r} must be in [{lo}, {hi}]", Defect.OUT_OF_RANGE)
        return value

    def number(self, key: str, default: Any = _MISSING, *, lo: float = 0.0,
            hi: float = math.inf) -> Any:
        value = self._value(key, default)
        return default if value is None else self.check_num(key, value, lo, hi)

    def check_num(self, what: str, value: Any, lo: float = 0.0, hi: float = math.inf) -> float:
        if type(value) is not float and type(value) is not int:
            raise self.fail(f"{what!r} must be a number", Defect.WRONG_TYPE)
        try:
            out = float(value)
        except OverflowError:
            raise self.fail(f"{what!r} is out of range", Defect.OUT_OF_RANGE) from None
        if not (math.isfinite(out) and lo <= out <= hi):
            raise self.fail(f"{what!r} must be finite, in [{lo:g}, {hi:g}]", Defect.OUT_OF_RANGE)
        return out

    def timestamp(self, key: str, default: Any = _MISSING) -> Any:
        """A wall-clock time in seconds since the epoch."""
        return self.number(key, default, hi=MAX_TS)

    def string(self, key: str, default: Any = _MISSING, *, max_len: int = MAX_NAME,
            choices: Collection[str] | None = None) -> Any:
        value = self._value(key, default)
        if value is None:
            return default
        text = self.check_str(key, value, max_len)
        if choices is not None and text not in choices:
            raise self.fail(f"{key!r} is not one of {', '.join(sorted(choices))}")
        return text

    def check_str(self, what: str, value: Any, max_len: int = MAX_NAME) -> str:
        if type(value) is not str:
            raise self.fail(f"{what!r} must be a string", Defect.WRONG_TYPE)
        if len(value) > max_len:
            raise self.fail(f"{what!r} is longer than {max_len}", Defect.TOO_LONG)
        if max_len <= MAX_NAME and not value.isprintable():  # names: no control characters
            raise self.fail(f"{what!r} holds unprintable characters")
        return value

    def array(self, key: str, default: Any = _MISSING, *, max_items: int = MAX_ITEMS) -> Any:
        value = self._value(key, default)
        if value is None:
            return default
        if type(value) is not list:
            raise self.fail(f"{key!r} must be a list", Defect.WRONG_TYPE)
        if len(value) > max_items:
            raise self.fail(f"{key!r} has more than {max_items} items", Defect.TOO_LONG)
        return value

    def strings(self, key: str, *, max_items: int = MAX_ITEMS,
             max_len: int = MAX_NAME) -> tuple[str, ...]:
        return tuple(self.check_str(key, v, max_len) for v in self.array(key, [],
                                                                        max_items=max_items))

    def integers(self, key: str, *, lo: int = 0, hi: int = MAX_INT,
             max_items: int = MAX_ITEMS) -> tuple[int, ...]:
        return tuple(self.check_int(key, v, lo, hi)
                     for v in self.array(key, max_items=max_items))

    def mapping(self, key: str, default: Any = _MISSING, *,
            max_items: int = MAX_ITEMS) -> dict[str, Any]:
        """A JSON object used as a map; its keys are checked as names."""
        value = self._value(key, default)
        if value is None:
            return dict(default)
        if type(value) is not dict:
            raise self.fail(f"{key!r} must be an object", Defect.WRONG_TYPE)
        if len(value) > max_items:
            raise self.fail(f"{key!r} has more than {max_items} entries", Defect.TOO_LONG)
        for name in value:
            self.check_str(f"{key} key", name)
        return value

    def sub(self, key: str, default: Any = _MISSING) -> Fields:
        """A nested object, read with the same kind."""
        value = self._value(key, default)
        return Fields(self.kind, default if value is None else value)
