"""Label feedback: the accuracy a model version really has in the field.

Clients send true labels for earlier predictions, either by the V2 request ``id`` (the daemon
remembers the top-1 predictions of the last ``capacity`` identified requests) or together with the
predictions themselves. Counts per model version are flushed with the telemetry and sent to the
fleet like the rest of it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import PayloadInvalid


@dataclass
class Counts:
    n: int = 0
    correct: int = 0


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


class FeedbackBook:
    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._recent: OrderedDict[str, tuple[str, str, NDArray[Any]]] = OrderedDict()
        self._counts: dict[tuple[str, str], Counts] = {}
        self._lock = threading.Lock()

    def remember(self, request_id: str, name: str, version: str,
                 outputs: Mapping[str, NDArray[Any]]) -> None:
        pred = top1(outputs)
        if pred is None:
            return
        with self._lock:
            self._recent[request_id] = (name, version, pred)
            while len(self._recent) > self.capacity:
                self._recent.popitem(last=False)

    def add(self, name: str, doc: Any, *, active_version: str | None) -> dict[str, Any]:
        """Apply one feedback body; returns what was counted."""
        if not isinstance(doc, dict) or not isinstance(doc.get("labels"), list):
            raise PayloadInvalid('feedback needs "labels" (a list) and "id" or "predictions"')
        labels = np.asarray(doc["labels"])
        if "id" in doc:
            version, preds = self._lookup(name, str(doc["id"]))
        elif isinstance(doc.get("predictions"), list):
            version = str(doc.get("version") or active_version or "")
            preds = np.asarray(doc["predictions"])
            if not version:
                raise PayloadInvalid(f"model {name} has no active version to credit")
        else:
            raise PayloadInvalid('feedback needs "id" (a V2 request id) or "predictions"')
        if preds.shape != labels.shape:
            raise PayloadInvalid(f"{labels.size} labels for {preds.size} predictions")
        correct = int(np.sum(preds.astype(str) == labels.astype(str)))
        with self._lock:
            c = self._counts.setdefault((name, version), Counts())
            c.n += int(labels.size)
            c.correct += correct
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

    def recent_ids(self) -> Sequence[str]:
        return list(self._recent)
