"""Optional LRU response cache keyed on the exact input bytes (off by default)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from numpy.typing import NDArray

Outputs = dict[str, NDArray[Any]]


def input_key(name: str, version: str, inputs: Mapping[str, NDArray[Any]]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{name}\0{version}".encode())
    for key in sorted(inputs):
        arr = inputs[key]
        h.update(f"\0{key}\0{arr.dtype.str}\0{arr.shape}".encode())
        h.update(arr.tobytes() if arr.dtype != object else repr(arr.tolist()).encode())
    return h.digest()


class ResponseCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[bytes, Outputs] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> Outputs | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: bytes, outputs: Outputs) -> None:
        frozen = {k: v.copy() for k, v in outputs.items()}
        for v in frozen.values():
            v.flags.writeable = False
        with self._lock:
            self._items[key] = frozen
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
