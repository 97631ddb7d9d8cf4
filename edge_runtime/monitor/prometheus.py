"""Prometheus text exposition (format 0.0.4) of the per-model-version request metrics (and of
extra samples: the daemon's task health and fault counters, `edge_runtime.monitor.health`).

Pure formatting: the caller takes ``ModelMetrics.totals_all`` under its lock and the HTTP layer
serves the string with ``CONTENT_TYPE``. Only cumulative counters and a histogram: rates and
quantiles are PromQL's (``rate(edge_requests_total[5m])``, ``histogram_quantile``), so they
aggregate across devices. Latency buckets are the fixed ``LATENCY_BUCKETS`` on every device:
the daemon's log histogram (1% relative error) is mapped onto them by each log bucket's
representative value, so a count lands in a neighbouring ``le`` only within that 1%.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from edge_runtime.monitor.histogram import LogHistogram
from edge_runtime.monitor.window import ModelKey, WindowTotals

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class Gauge:
    """One extra sample, e.g. ``Gauge("edge_models_loaded", "Models loaded.", 3)``; a
    cumulative count says ``kind="counter"`` (its name should end in ``_total``)."""

    name: str
    help: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    kind: str = "gauge"


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Go-parsable number: integers stay exact, and NaN/Inf use Prometheus spelling."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _sample(name: str, labels: Mapping[str, str], value: float) -> str:
    for label in labels:
        if not _LABEL_NAME.match(label) or label.startswith("__"):
            raise ValueError(f"invalid label name {label!r}")
    body = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
    return f"{name}{{{body}}} {format_value(value)}" if body else f"{name} {format_value(value)}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    if not _METRIC_NAME.match(name):
        raise ValueError(f"invalid metric name {name!r}")
    if kind not in ("counter", "gauge", "histogram"):
        raise ValueError(f"invalid metric type {kind!r}")
    return [f"# HELP {name} {_escape_help(help_text)}", f"# TYPE {name} {kind}", *samples]


def _ids(key: ModelKey) -> dict[str, str]:
    return {"model": key[0], "version": key[1]}


def bucket_counts(hist: LogHistogram, bounds: Iterable[float] = LATENCY_BUCKETS
                  ) -> list[int]:
    """Cumulative counts of ``hist`` at each of ``bounds`` (ascending), then +Inf (= count)."""
    doc = hist.to_dict()
    accuracy = float(doc["relative_accuracy"])
    gamma = (1.0 + accuracy) / (1.0 - accuracy)
    values = [(0.0, int(doc["zero"]))] + [(2.0 * gamma ** int(k) / (gamma + 1.0), int(n))
                                           for k, n in doc["bins"].items()]
    values.sort()
    out, seen, i = [], 0, 0
    for bound in bounds:
        while i < len(values) and values[i][0] <= bound:
            seen += values[i][1]
            i += 1
        out.append(seen)
    out.append(hist.count)
    return out


def _latency(totals: Mapping[ModelKey, WindowTotals]) -> list[str]:
    name = "edge_request_duration_seconds"
    samples = []
    for key in sorted(totals):
        t = totals[key]
        bounds = [*(format_value(b) for b in LATENCY_BUCKETS), "+Inf"]
        for le, n in zip(bounds, bucket_counts(t.latency), strict=True):
            samples.append(_sample(f"{name}_bucket", {**_ids(key), "le": le}, n))
        samples.append(_sample(f"{name}_sum", _ids(key), t.latency.sum))
        samples.append(_sample(f"{name}_count", _ids(key), t.latency.count))
    return _family(name, "histogram", "Latency of served requests in seconds (failed requests "
                   "are counted in edge_errors_total only).", samples)


def _feedback(feedback: Mapping[ModelKey, tuple[int, int]]) -> list[str]:
    keys = sorted(feedback)
    lines = _family("edge_feedback_total", "counter", "Labels received as feedback.",
                    [_sample("edge_feedback_total", _ids(k), feedback[k][0]) for k in keys])
    return lines + _family(
        "edge_feedback_correct_total", "counter",
        "Feedback labels the model had predicted (accuracy = correct / total).",
        [_sample("edge_feedback_correct_total", _ids(k), feedback[k][1]) for k in keys])


def _extra(gauges: Iterable[Gauge]) -> list[str]:
    """Group extra gauges by name: a metric family must be contiguous with one HELP/TYPE."""
    families: dict[str, list[Gauge]] = {}
    for gauge in gauges:
        families.setdefault(gauge.name, []).append(gauge)
    lines = []
    for name, members in families.items():
        samples = [_sample(name, g.labels, g.value) for g in members]
        lines.extend(_family(name, members[0].kind, members[0].help, samples))
    return lines


def render(
    totals: Mapping[ModelKey, WindowTotals],
    *,
    feedback: Mapping[ModelKey, tuple[int, int]] | None = None,
    extra_gauges: Iterable[Gauge] = (),
) -> str:
    """The whole /metrics body, families in a fixed order, model versions sorted.
    ``feedback``: (labels, correct) per model version since the daemon started."""
    lines = _family(
        "edge_requests_total", "counter", "Requests received, served or failed.",
        [_sample("edge_requests_total", _ids(k), totals[k].requests) for k in sorted(totals)])
    lines += _family(
        "edge_errors_total", "counter", "Failed requests by error kind.",
        [_sample("edge_errors_total", {**_ids(k), "kind": kind}, n)
         for k in sorted(totals) for kind, n in sorted(totals[k].errors.items())])
    lines += _latency(totals)
    lines += _feedback(feedback or {})
    lines += _extra(extra_gauges)
    return "\n".join(lines) + "\n"
