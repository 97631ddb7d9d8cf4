"""Prometheus text exposition (format 0.0.4) of the per-model-version request metrics (and of
extra samples: the daemon's task health and fault counters, `edge_runtime.monitor.health`).

Pure formatting: the caller takes ``ModelMetrics.snapshot_all`` / ``totals_all`` under its lock
and the HTTP layer serves the string with ``CONTENT_TYPE``. Latency is a summary, as the
Prometheus clients export one: quantiles over the rolling window, ``_sum``/``_count``
cumulative; a quantile with no data in the window is NaN, so the series does not flap away.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from edge_runtime.monitor.window import ModelKey, WindowSnapshot, WindowTotals

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
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
    if kind not in ("counter", "gauge", "summary"):
        raise ValueError(f"invalid metric type {kind!r}")
    return [f"# HELP {name} {_escape_help(help_text)}", f"# TYPE {name} {kind}", *samples]


def _ids(key: ModelKey) -> dict[str, str]:
    return {"model": key[0], "version": key[1]}


def _latency(snapshots: Mapping[ModelKey, WindowSnapshot],
             totals: Mapping[ModelKey, WindowTotals]) -> list[str]:
    samples = []
    for key in sorted(set(snapshots) | set(totals)):
        if key in snapshots:
            for label, attr in QUANTILES:
                value = getattr(snapshots[key], attr)
                samples.append(_sample("edge_latency_seconds", {**_ids(key), "quantile": label},
                                       math.nan if value is None else value))
        if key in totals:
            samples.append(_sample("edge_latency_seconds_sum", _ids(key), totals[key].latency_sum))
            samples.append(
                _sample("edge_latency_seconds_count", _ids(key), totals[key].latency_count))
    return _family("edge_latency_seconds", "summary",
                   "Latency of served requests in seconds (quantiles over the rolling window).",
                   samples)


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
    snapshots: Mapping[ModelKey, WindowSnapshot],
    totals: Mapping[ModelKey, WindowTotals],
    *,
    extra_gauges: Iterable[Gauge] = (),
) -> str:
    """The whole /metrics body, families in a fixed order, model versions sorted."""
    lines = _family(
        "edge_requests_total", "counter", "Requests received, served or failed.",
        [_sample("edge_requests_total", _ids(k), totals[k].requests) for k in sorted(totals)])
    lines += _family(
        "edge_errors_total", "counter", "Failed requests by error kind.",
        [_sample("edge_errors_total", {**_ids(k), "kind": kind}, n)
         for k in sorted(totals) for kind, n in sorted(totals[k].errors.items())])
    lines += _latency(snapshots, totals)
    lines += _family(
        "edge_throughput_rps", "gauge", "Requests per second over the rolling window.",
        [_sample("edge_throughput_rps", _ids(k), snapshots[k].throughput_rps)
         for k in sorted(snapshots)])
    lines += _extra(extra_gauges)
    return "\n".join(lines) + "\n"
