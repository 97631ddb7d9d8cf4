"""Telemetry payloads (``metrics``, ``drift``, ``feedback``): checked and normalised while the
message is decoded, so a receiver stores only what the schema defines, in range.

Drift counts travel in the compact wire form only (``{"encoding": "EDW1", "data": base64}``);
whether they fit the package's reference layout is checked by the fleet manager, which has the
registry. Everything else is checked here.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from edge_runtime.protocol.schema import MAX_INT, Defect, Fields

KINDS = ("metrics", "drift", "feedback")
DRIFT_ENCODING = "EDW1"
MAX_ERROR_KINDS = 64
MAX_BINS = 4096  # a latency histogram at 1% accuracy spans 1 ns .. 1 h in ~1400 bins
MAX_DRIFT_BYTES = 1 << 20  # base64 text of one compact drift snapshot (~2 KB in practice)
_BIN_KEYS = re.compile(r"-?[0-9]{1,7}(?:\x00-?[0-9]{1,7})*")  # the keys joined by NUL


def check(f: Fields, kind: str) -> dict[str, Any]:
    """The payload of a telemetry message of ``kind``, normalised; ``f`` reads the payload."""
    if kind == "metrics":
        return _metrics(f)
    if kind == "feedback":
        return _feedback(f)
    return _drift(f)


def _metrics(f: Fields) -> dict[str, Any]:
    errors = f.mapping("errors", {}, max_items=MAX_ERROR_KINDS)
    out: dict[str, Any] = {
        "requests": f.integer("requests"),
        "errors": {k: f.check_int(f"errors[{k}]", n) for k, n in errors.items()},
        "latency": latency(f.sub("latency", {})),
    }
    if sum(out["errors"].values()) > MAX_INT:
        raise f.fail("metrics error counts overflow", Defect.OUT_OF_RANGE)
    items = f.integer("items", None)
    if items is not None:
        out["items"] = items
    return out


def latency(f: Fields) -> dict[str, Any]:
    """A ``LogHistogram.to_dict`` form, bounded and consistent (an empty one is allowed). Runs
    for every metrics message the manager ingests, so the per-bin checks are C-level calls."""
    if not f.doc:
        return {}
    bins = f.doc.get("bins")
    if type(bins) is not dict:
        raise f.fail("latency 'bins' must be an object", Defect.WRONG_TYPE)
    if len(bins) > MAX_BINS:
        raise f.fail(f"latency has more than {MAX_BINS} bins", Defect.TOO_LONG)
    counts = list(bins.values())
    if bins and not _BIN_KEYS.fullmatch("\x00".join(bins)):
        raise f.fail("latency bin keys must be integers")
    if counts and set(map(type, counts)) != {int}:  # (bool is not int here)
        raise f.fail("latency bin counts must be integers", Defect.WRONG_TYPE)
    zero = f.integer("zero", 0)
    total = zero + sum(counts)
    if (counts and min(counts) < 1) or total > MAX_INT:
        raise f.fail("latency bin counts must be positive and fit", Defect.OUT_OF_RANGE)
    doc = {"relative_accuracy": f.number("relative_accuracy", lo=1e-6, hi=0.5),
           "min_value": f.number("min_value", lo=1e-12, hi=1.0), "zero": zero, "bins": bins,
           "sum": f.number("sum", 0.0), "min": f.number("min", None),
           "max": f.number("max", None)}
    if total and (doc["min"] is None or doc["max"] is None or doc["min"] > doc["max"]):
        raise f.fail("latency min/max do not agree with its counts")
    return doc


def _feedback(f: Fields) -> dict[str, Any]:
    n = f.integer("n")
    correct = f.integer("correct")
    if correct > n:
        raise f.fail("feedback 'correct' exceeds 'n'", Defect.OUT_OF_RANGE)
    return {"n": n, "correct": correct}


def _drift(f: Fields) -> dict[str, Any]:
    f.string("encoding", choices=(DRIFT_ENCODING,))
    data = f.string("data", max_len=MAX_DRIFT_BYTES)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise f.fail(f"drift data is not base64 ({exc})", Defect.UNDECODABLE) from exc
    if not raw.startswith(DRIFT_ENCODING.encode()):
        raise f.fail("drift data is not an EDW1 snapshot", Defect.UNDECODABLE)
    return {"encoding": DRIFT_ENCODING, "data": data}
