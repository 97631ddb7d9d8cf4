"""Count live traffic into a package's reference bins, so the fleet can compare histograms.

The bins are the ones ``edge_runtime.refstats`` computed at conversion time; counting the
reference data through ``DriftAccumulator`` reproduces the reference counts exactly. Snapshots
hold counts only (no raw data) and add up: ``merge_snapshots`` sums any number of device
snapshots of the same reference.

``update`` runs next to every inference, so each input is counted with a fixed number of numpy
calls whatever its feature count: values are located in the sorted union of all features'
edges (or vocabularies) with one ``searchsorted``, and a precomputed [feature, union position]
table turns that position into the feature's own slot. Bad or missing tensors are counted in
``skipped`` and never raise: drift monitoring must not fail a request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.refstats import SCHEMA_VERSION, feature_matrix

Array = NDArray[Any]
Extract = Callable[[Array], Array | None]
_MERGE_SAME = ("name", "kind", "vocab")


class _Numeric:
    """Numeric features: per feature slots [underflow, bin 0..B-1, (padding), overflow, missing]."""

    def __init__(self, refs: list[dict[str, Any]]) -> None:
        edges = [np.asarray(r["edges"], dtype=np.float64) for r in refs]
        if any(e.ndim != 1 or e.size < 2 for e in edges):
            raise ValueError("every numeric feature needs at least two edges")
        self.names = [str(r["name"]) for r in refs]
        self.n_edges = np.array([e.size for e in edges])
        self.width = int(self.n_edges.max()) + 2
        # The sorted union of every feature's edges, plus the float just above each last edge:
        # a value's position in it tells which edges are <= the value, and whether it equals a
        # feature's last edge (the last bin is closed) or lies above it (overflow).
        above_last = np.nextafter([e[-1] for e in edges], np.inf)
        self.union = np.unique(np.concatenate([*edges, above_last]))
        # table[j, r]: feature j's slot for a value whose position in the union is r (r union
        # edges are <= it), already offset by j * width so one bincount counts every feature.
        table = np.zeros((len(edges), self.union.size + 1), dtype=np.int64)
        for j, e in enumerate(edges):
            below = np.searchsorted(e, self.union, side="right")  # edges <= each union edge
            below[self.union == e[-1]] = e.size - 1  # the last edge: still the last bin
            below[below == e.size] = self.width - 2  # above it: overflow
            table[j, 1:] = below
        table += (np.arange(len(edges)) * self.width)[:, None]
        self.table = table.astype(np.int32 if table.max() < 2**31 else np.int64).ravel()
        self.rows = np.arange(len(edges)) * (self.union.size + 1)
        self.offsets = np.arange(len(edges)) * self.width
        self.state = [np.zeros(len(edges) * self.width, np.int64), np.zeros(len(edges)),
                      np.zeros(len(edges))]

    def count(self, matrix: Array) -> list[Array]:
        m = np.asarray(matrix, dtype=np.float64)
        slot = self.table.take(np.searchsorted(self.union, m, side="right") + self.rows)
        finite = np.isfinite(m)
        if not finite.all():
            slot[~finite] = (self.offsets + self.width - 1)[np.nonzero(~finite)[1]]
            m = np.where(finite, m, 0.0)
        slots = np.bincount(slot.ravel(), minlength=self.state[0].size)
        return [slots, m.sum(axis=0), np.square(m).sum(axis=0)]

    def snapshot(self) -> list[dict[str, Any]]:
        slots = self.state[0].reshape(len(self.names), self.width)
        return [
            {"name": name, "kind": "numeric", "counts": row[1:ne].tolist(),
             "underflow": int(row[0]), "overflow": int(row[-2]), "missing": int(row[-1]),
             "n": int(row.sum()), "sum": float(s), "sum_sq": float(sq)}
            for name, ne, row, s, sq in zip(
                self.names, self.n_edges.tolist(), slots, self.state[1], self.state[2],
                strict=True)
        ]


def _int_keys(vocab: list[str]) -> list[int] | None:
    """The vocabulary as ints if every entry is the str() of an int (reference was integer)."""
    try:
        keys = [int(v) for v in vocab]
    except ValueError:
        return None
    return keys if [str(k) for k in keys] == vocab else None


class _Categorical:
    """Categorical features: per feature slots [vocab 0..V-1, (padding), other]."""

    def __init__(self, refs: list[dict[str, Any]]) -> None:
        self.names = [str(r["name"]) for r in refs]
        self.vocabs = [[str(v) for v in r["vocab"]] for r in refs]
        self.width = max(len(v) for v in self.vocabs) + 1
        self.offsets = np.arange(len(refs)) * self.width
        self.state = [np.zeros(len(refs) * self.width, np.int64)]
        self.by_str = self._lookup([np.array(v, dtype=str) for v in self.vocabs])
        ints = [_int_keys(v) for v in self.vocabs]
        # Integer traffic is matched as integers (no per-call str conversion); anything else
        # goes through str(), exactly as refstats built the vocabulary.
        self.by_int = None if any(k is None for k in ints) else self._lookup(
            [np.array(k, dtype=np.int64) for k in ints])

    def _lookup(self, keys: list[Array]) -> tuple[Array, Array, Array]:
        union = np.unique(np.concatenate(keys))
        table = np.full((len(keys), union.size + 1), self.width - 1, dtype=np.int64)
        for j, k in enumerate(keys):
            table[j, np.searchsorted(union, k)] = np.arange(k.size)
        return union, table.ravel(), np.arange(len(keys)) * (union.size + 1)

    def count(self, matrix: Array) -> list[Array]:
        kind = matrix.dtype.kind
        # uint64 is left to the str path: casting it to int64 could wrap onto a vocab entry.
        if self.by_int is not None and (kind == "i" or (kind == "u" and matrix.itemsize < 8)):
            (union, table, rows), values = self.by_int, matrix.astype(np.int64)
        else:
            (union, table, rows), values = self.by_str, matrix.astype(str)
        pos = np.searchsorted(union, values)
        found = union.take(np.minimum(pos, union.size - 1)) == values
        slot = table.take(np.where(found, pos, union.size) + rows)
        return [np.bincount((slot + self.offsets).ravel(), minlength=self.state[0].size)]

    def snapshot(self) -> list[dict[str, Any]]:
        slots = self.state[0].reshape(len(self.names), self.width)
        return [
            {"name": name, "kind": "categorical", "vocab": list(vocab),
             "counts": row[:len(vocab)].tolist(), "other": int(row[-1]), "n": int(row.sum())}
            for name, vocab, row in zip(self.names, self.vocabs, slots, strict=True)
        ]


class _Classes:
    """Class outputs: argmax counts, rows with non-finite scores, and the sum of top scores."""

    def __init__(self, ref: dict[str, Any]) -> None:
        self.name = str(ref["output"])
        self.classes = int(ref["classes"])
        self.state = [np.zeros(self.classes + 1, np.int64), np.zeros(1)]

    def count(self, scores: Array) -> list[Array]:
        finite = np.isfinite(scores).all(axis=1)
        good = scores if finite.all() else scores[finite]
        top = good.argmax(axis=1)
        counts = np.bincount(top, minlength=self.classes + 1)
        counts[-1] = scores.shape[0] - good.shape[0]
        return [counts, np.array([good.max(axis=1).sum(dtype=np.float64)])]

    def snapshot(self) -> list[dict[str, Any]]:
        counts = self.state[0]
        return [{"name": self.name, "kind": "class", "counts": counts[:-1].tolist(),
                 "missing": int(counts[-1]), "n": int(counts.sum()),
                 "sum_top": float(self.state[1][0])}]


Counter = _Numeric | _Categorical | _Classes


def _group(refs: list[dict[str, Any]]) -> _Numeric | _Categorical:
    kinds = {r.get("kind") for r in refs}
    if kinds == {"numeric"}:
        return _Numeric(refs)
    if kinds == {"categorical"}:
        return _Categorical(refs)
    raise ValueError(f"features of one input must share a kind, got {sorted(map(str, kinds))}")


def _input_extractor(layout: Mapping[str, Any]) -> Extract:
    """Shape check + ``refstats.feature_matrix``; None for a tensor that does not fit."""
    count = int(layout["count"])
    if layout["mode"] == "element":
        def element(a: Array) -> Array | None:
            fits = a.ndim >= 1 and int(np.prod(a.shape[1:])) == count
            return feature_matrix(layout, a) if fits else None
        return element
    axis = int(layout["axis"])

    def channel(a: Array) -> Array | None:
        # refstats uses axis 1 for rank-4 inputs and the last axis otherwise.
        fits = a.ndim >= 2 and axis == (1 if a.ndim == 4 else a.ndim - 1)
        return feature_matrix(layout, a) if fits and a.shape[axis] == count else None
    return channel


def _flat(a: Array) -> Array:
    """Per-sample values of an output, as refstats.output_stats flattens them."""
    return a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(-1, 1)


def _output_tap(ref: dict[str, Any]) -> tuple[Extract, Counter]:
    kind = ref.get("kind")
    if kind == "class":
        classes = int(ref["classes"])
        return (lambda a: a if a.ndim == 2 and a.shape[1] == classes and a.dtype.kind == "f"
                else None), _Classes(ref)
    if kind == "categorical":
        return (lambda a: f if (f := _flat(a)).shape[1] == 1 else None), _Categorical([ref])
    if kind == "numeric":
        return (lambda a: f.mean(axis=1)[:, None] if (f := _flat(a)).shape[1] else None
                ), _Numeric([ref])
    raise ValueError(f"output {ref.get('output')!r} has unknown kind {kind!r}")


class DriftAccumulator:
    """Live counts in the bins of one package's reference statistics. Thread-safe."""

    def __init__(self, reference_stats: Mapping[str, Any]) -> None:
        if reference_stats.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"reference stats schema {reference_stats.get('schema_version')!r} "
                             f"is not {SCHEMA_VERSION}")
        features = list(reference_stats["features"])
        self._inputs: list[tuple[str, Extract, Counter]] = []
        start = 0
        for layout in reference_stats["layouts"]:
            refs = features[start:start + int(layout["count"])]
            start += len(refs)
            self._inputs.append((str(layout["input"]), _input_extractor(layout), _group(refs)))
        if start != len(features):
            raise ValueError(f"layouts cover {start} features, reference has {len(features)}")
        self._outputs = [(str(r["output"]), *_output_tap(r))
                         for r in reference_stats.get("outputs", [])]
        self._lock = threading.Lock()
        self._skipped = 0

    def update(self, inputs: Mapping[str, Array], outputs: Mapping[str, Array]) -> None:
        """Count one batch. Tensors that are absent or do not fit count as ``skipped``."""
        deltas: list[tuple[Counter, list[Array]]] = []
        skipped = 0
        for taps, arrays in ((self._inputs, inputs), (self._outputs, outputs)):
            for name, extract, counter in taps:
                delta = _count(extract, counter, arrays.get(name))
                if delta is None:
                    skipped += 1
                else:
                    deltas.append((counter, delta))
        with self._lock:
            for counter, delta in deltas:
                for total, part in zip(counter.state, delta, strict=True):
                    np.add(total, part, out=total)
            self._skipped += skipped

    def snapshot(self, *, reset: bool = True) -> dict[str, Any]:
        """JSON-safe counts since the last reset; ``reset`` starts the next period at zero."""
        with self._lock:
            snap = {
                "schema_version": SCHEMA_VERSION,
                "features": [f for _, _, c in self._inputs for f in c.snapshot()],
                "outputs": [o for _, _, c in self._outputs for o in c.snapshot()],
                "skipped": self._skipped,
            }
            if reset:
                for _, _, counter in (*self._inputs, *self._outputs):
                    for total in counter.state:
                        total.fill(0)
                self._skipped = 0
        return snap


def _count(extract: Extract, counter: Counter, array: Array | None) -> list[Array] | None:
    if array is None:
        return None
    try:
        # Live data may hold inf - inf or huge values; those become missing, not warnings.
        with np.errstate(all="ignore"):
            matrix = extract(np.asarray(array))
            return None if matrix is None else counter.count(matrix)
    except (ValueError, TypeError, IndexError):
        # Wrong dtype (strings into a numeric input) or shape: skip, never fail the request.
        return None


def merge_snapshots(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Sum two snapshots of the same reference (a pure function; neither argument changes)."""
    if a.get("schema_version") != b.get("schema_version"):
        raise ValueError("snapshots have different schema versions")
    return {
        "schema_version": a["schema_version"],
        "features": _merge_entries(a["features"], b["features"]),
        "outputs": _merge_entries(a["outputs"], b["outputs"]),
        "skipped": int(a["skipped"]) + int(b["skipped"]),
    }


def _merge_entries(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(a) != len(b):
        raise ValueError(f"snapshots have {len(a)} and {len(b)} entries")
    return [_merge_entry(x, y) for x, y in zip(a, b, strict=True)]


def _merge_entry(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Identity fields must agree; lists add elementwise; numbers add."""
    if a.keys() != b.keys() or any(a.get(k) != b.get(k) for k in _MERGE_SAME):
        raise ValueError(f"entries {a.get('name')!r} and {b.get('name')!r} do not match")
    out: dict[str, Any] = {}
    for key, x in a.items():
        y = b[key]
        if key in _MERGE_SAME:
            out[key] = x
        elif isinstance(x, list):
            if len(x) != len(y):
                raise ValueError(f"{a.get('name')!r}: {key} lengths {len(x)} and {len(y)}")
            out[key] = [i + j for i, j in zip(x, y, strict=True)]
        else:
            out[key] = x + y
    return out
