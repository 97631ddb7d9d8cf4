"""Label feedback: the accuracy a model version really has in the field.

Clients send true labels for earlier predictions, either by the V2 request ``id`` (the daemon
remembers the top-1 predictions of recent identified requests) or together with the
predictions themselves. Counts per model version are flushed with the telemetry and sent to the
fleet like the rest of it.

What is remembered is bounded twice: at most ``capacity`` requests and ``max_bytes`` of ids
and predictions (oldest forgotten first; ids are at most 256 bytes, the V2 decoder refuses
longer ones, and a request whose predictions alone would take over a sixteenth of
``max_bytes`` is not remembered). A feedback body is decoded and checked whole before
anything is counted (``decode_feedback``, which the app may run in its decoder process).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from edge_runtime.codecs.v2 import MAX_ID_BYTES
from edge_runtime.errors import PayloadInvalid

MAX_LABELS = 100_000  # per feedback request
MAX_LABEL_CHARS = 256
_ENTRY_OVERHEAD = 200  # bytes an entry costs besides its id and predictions (dict, tuple)
_USAGE = 'feedback needs "labels" (a list) and "id" or "predictions"'


@dataclass
class Counts:
    n: int = 0
    correct: int = 0


@dataclass(frozen=True)
class Feedback:
    """One checked feedback body: labels for a request id, or with the predictions."""

    labels: NDArray[Any]
    request_id: str | None = None
    predictions: NDArray[Any] | None = None
    version: str | None = None


def top1(outputs: Mapping[str, NDArray[Any]]) -> NDArray[Any] | None:
    """Class predictions from a model's outputs: an integer label output, else the argmax of
    the first 2-D float output."""
    for arr in outputs.values():
        if arr.ndim == 1 and arr.dtype.kind in "iu":
            return arr
    for arr in outputs.values():
        if arr.ndim == 2 and arr.dtype.kind == "f" and arr.shape[1] >= 2:
            return np.asarray(arr.argmax(axis=1))
    return None


def decode_feedback(body: bytes | memoryview) -> Feedback:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadInvalid(f"feedback body is not JSON ({exc})") from exc
    return parse_feedback(doc)


def parse_feedback(doc: Any) -> Feedback:
    """A parsed feedback document, checked: ``PayloadInvalid`` names what is wrong."""
    if not isinstance(doc, dict) or not isinstance(doc.get("labels"), list):
        raise PayloadInvalid(_USAGE)
    labels = _flat(doc["labels"], "labels")
    version = doc.get("version")
    if version is not None and not isinstance(version, str):
        raise PayloadInvalid('"version" must be a string naming an installed version')
    if "id" in doc:
        rid = doc["id"]
        if not isinstance(rid, str) or len(rid.encode()) > MAX_ID_BYTES:
            raise PayloadInvalid(f'"id" must be a V2 request id: a string of at most '
                                 f"{MAX_ID_BYTES} bytes")
        return Feedback(labels, request_id=rid, version=version)
    if isinstance(doc.get("predictions"), list):
        return Feedback(labels, predictions=_flat(doc["predictions"], "predictions"),
                        version=version)
    raise PayloadInvalid('feedback needs "id" (a V2 request id) or "predictions"')


def _flat(values: list[Any], what: str) -> NDArray[Any]:
    """A flat list of numbers or strings as an array (strings as an object array: a fixed-width
    string array would take the longest string's size for every element)."""
    if len(values) > MAX_LABELS:
        raise PayloadInvalid(f"{len(values)} {what}: at most {MAX_LABELS} per feedback request")
    strings = False
    for v in values:
        kind = type(v)
        if kind is str:
            if len(v) > MAX_LABEL_CHARS:
                raise PayloadInvalid(f"{what} are at most {MAX_LABEL_CHARS} characters long")
            strings = True
        elif kind is not int and kind is not float and kind is not bool:
            raise PayloadInvalid(f"{what} must be a flat list of numbers or strings, not "
                                 f"{type(v).__name__} values")
        elif kind is int and not -(2**63) <= v < 2**64:
            raise PayloadInvalid(f"{what} hold an integer beyond 64 bits")
    if strings:
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.asarray(values)


def _correct(preds: NDArray[Any], labels: NDArray[Any]) -> int:
    """How many predictions equal their labels: as numbers when both are numbers, else as
    text (label "3" matches prediction 3)."""
    if preds.dtype.kind in "biuf" and labels.dtype.kind in "biuf":
        return int(np.count_nonzero(preds == labels))
    return sum(1 for p, q in zip(preds.tolist(), labels.tolist(), strict=True) if str(p) == str(q))


class FeedbackBook:
    def __init__(self, capacity: int = 10_000, *, max_bytes: int = 16 << 20) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._recent: OrderedDict[str, tuple[str, str, NDArray[Any], int]] = OrderedDict()
        self._bytes = 0
        self._counts: dict[tuple[str, str], Counts] = {}
        self._totals: dict[tuple[str, str], Counts] = {}  # since start: /metrics, status
        self._lock = threading.Lock()

    @property
    def remembered_bytes(self) -> int:
        return self._bytes

    def remember(self, request_id: str, name: str, version: str,
                 outputs: Mapping[str, NDArray[Any]]) -> None:
        pred = top1(outputs)
        if pred is None or len(request_id) > MAX_ID_BYTES:
            return
        cost = sys.getsizeof(request_id) + pred.nbytes + _ENTRY_OVERHEAD
        if cost > self.max_bytes // 16:
            return
        if pred.base is not None:  # a view would keep the whole output alive
            pred = pred.copy()
        with self._lock:
            old = self._recent.pop(request_id, None)
            if old is not None:
                self._bytes -= old[3]
            self._recent[request_id] = (name, version, pred, cost)
            self._bytes += cost
            while len(self._recent) > self.capacity or self._bytes > self.max_bytes:
                self._bytes -= self._recent.popitem(last=False)[1][3]

    def add(self, name: str, doc: Any, *, active_version: str | None,
            installed: Collection[str] | None = None) -> dict[str, Any]:
        """Apply one parsed feedback document; returns what was counted."""
        return self.apply(name, parse_feedback(doc), active_version=active_version,
                          installed=installed)

    def apply(self, name: str, fb: Feedback, *, active_version: str | None,
              installed: Collection[str] | None = None) -> dict[str, Any]:
        """Count one checked feedback body. ``installed`` (the model's installed versions)
        is what a given ``version`` must name."""
        if fb.version is not None and installed is not None and fb.version not in installed:
            raise PayloadInvalid(
                f"version {fb.version!r} is not an installed version of {name} (installed: "
                f"{', '.join(sorted(installed)) or 'none'})")
        if fb.request_id is not None:
            version, preds = self._lookup(name, fb.request_id)
            if fb.version is not None and fb.version != version:
                raise PayloadInvalid(f"request {fb.request_id!r} was answered by version "
                                     f"{version}, not {fb.version}")
        else:
            assert fb.predictions is not None
            version, preds = fb.version or active_version or "", fb.predictions
            if not version:
                raise PayloadInvalid(f"model {name} has no active version to credit")
        labels = fb.labels
        if preds.shape != labels.shape:
            raise PayloadInvalid(f"{labels.size} labels for {preds.size} predictions")
        correct = _correct(preds, labels)
        with self._lock:
            c = self._counts.setdefault((name, version), Counts())
            c.n += int(labels.size)
            c.correct += correct
            t = self._totals.setdefault((name, version), Counts())
            t.n += int(labels.size)
            t.correct += correct
        return {"model": name, "version": version, "n": int(labels.size), "correct": correct}

    def _lookup(self, name: str, request_id: str) -> tuple[str, NDArray[Any]]:
        with self._lock:
            found = self._recent.get(request_id)
        if found is None or found[0] != name:
            raise PayloadInvalid(f"no recent prediction of {name} with id {request_id!r} "
                                 f"(the last {self.capacity} identified requests are kept)")
        return found[1], found[2]

    def drain(self) -> list[tuple[str, str, Counts]]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return [(n, v, c) for (n, v), c in sorted(counts.items()) if c.n]

    def totals(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(labels, correct) per model version since this book was made; never drained."""
        with self._lock:
            return {key: (c.n, c.correct) for key, c in sorted(self._totals.items())}

    def recent_ids(self) -> Sequence[str]:
        with self._lock:
            return list(self._recent)
