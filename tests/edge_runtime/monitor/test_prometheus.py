from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from edge_runtime.monitor.histogram import LogHistogram
from edge_runtime.monitor.prometheus import Gauge, render
from edge_runtime.monitor.window import ModelKey, WindowTotals

ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


@dataclass
class Family:
    type: str = ""
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def parse_labels(text: str) -> tuple[dict[str, str], str]:
    """Parse ``name="value",...}`` up to the closing brace; returns labels and the rest."""
    labels: dict[str, str] = {}
    i = 0
    while text[i] != "}":
        eq = text.index("=", i)
        name = text[i:eq]
        assert text[eq + 1] == '"', text
        i, value = eq + 2, []
        while text[i] != '"':
            if text[i] == "\\":
                value.append(ESCAPES[text[i + 1]])
                i += 2
            else:
                assert text[i] != "\n"
                value.append(text[i])
                i += 1
        labels[name] = "".join(value)
        i += 1
        if text[i] == ",":
            i += 1
    return labels, text[i + 1:]


def parse(body: str) -> dict[str, Family]:
    """A strict little parser for the text format: every line must be understood."""
    assert body.endswith("\n")
    families: dict[str, Family] = {}
    current = ""
    for line in body[:-1].split("\n"):
        if line.startswith("# HELP "):
            current, text = line[7:].split(" ", 1)
            assert current not in families, f"family {current} is not contiguous"
            families[current] = Family(help=text)
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name == current and kind in ("counter", "gauge", "histogram")
            families[name].type = kind
        else:
            name, rest = (line.split("{", 1) if "{" in line else line.split(" ", 1))
            labels, rest = parse_labels(rest) if "{" in line else ({}, " " + rest)
            assert rest.startswith(" ")
            base = name.removesuffix("_sum").removesuffix("_count").removesuffix("_bucket")
            assert current in (name, base) and families[current].type, line
            families[current].samples.append((name, labels, float(rest[1:])))
    return families


def totals_with(latencies: list[float], requests: int, errors: dict[str, int]) -> WindowTotals:
    hist = LogHistogram()
    for value in latencies:
        hist.record(value)
    return WindowTotals(requests, errors, hist.sum, hist.count, len(latencies), hist)


def sample(families: dict[str, Family], name: str, **labels: str) -> float:
    family = families[name.removesuffix("_sum").removesuffix("_count").removesuffix("_bucket")]
    (value,) = [v for n, lab, v in family.samples if n == name and lab == labels]
    return value


def test_render_parses_and_carries_the_numbers() -> None:
    keys: list[ModelKey] = [("det", "1.0.0"), ("cls", "2")]
    totals = {
        keys[0]: totals_with([0.0003, 0.004, 0.004, 0.2], 8, {"input_invalid": 3, "timeout": 1}),
        keys[1]: WindowTotals(0, {}, 0.0, 0, 0),
    }
    fams = parse(render(totals, feedback={keys[0]: (10, 7)}))
    assert {n: f.type for n, f in fams.items()} == {
        "edge_requests_total": "counter", "edge_errors_total": "counter",
        "edge_request_duration_seconds": "histogram", "edge_feedback_total": "counter",
        "edge_feedback_correct_total": "counter"}
    det = {"model": "det", "version": "1.0.0"}
    assert sample(fams, "edge_requests_total", **det) == 8
    assert sample(fams, "edge_errors_total", **det, kind="timeout") == 1
    assert sample(fams, "edge_request_duration_seconds_bucket", **det, le="0.0005") == 1
    assert sample(fams, "edge_request_duration_seconds_bucket", **det, le="0.005") == 3
    assert sample(fams, "edge_request_duration_seconds_bucket", **det, le="+Inf") == 4
    assert sample(fams, "edge_request_duration_seconds_sum", **det) == pytest.approx(0.2083)
    assert sample(fams, "edge_request_duration_seconds_count", **det) == 4
    assert sample(fams, "edge_feedback_correct_total", **det) == 7
    assert sample(fams, "edge_request_duration_seconds_count", model="cls", version="2") == 0
    assert len(fams["edge_errors_total"].samples) == 2


@pytest.mark.parametrize(
    "model",
    ['say "hi"', "back\\slash", "two\nlines", 'all \\ " \n \\n', "plain", "ünï"],
)
def test_label_values_are_escaped_and_round_trip(model: str) -> None:
    key = (model, "v\\1")
    body = render({key: totals_with([0.5], 1, {'k"\n': 1})})
    fams = parse(body)
    ids = {"model": model, "version": "v\\1"}
    assert sample(fams, "edge_requests_total", **ids) == 1
    assert sample(fams, "edge_errors_total", **ids, kind='k"\n') == 1
    assert all(line.startswith(("#", "edge_")) for line in body.splitlines())


def test_extra_gauges_are_grouped_by_name() -> None:
    gauges = [
        Gauge("edge_models_loaded", "Models loaded.", 3),
        Gauge("edge_drift_skipped", "Tensors the drift counter skipped.\nPer model.", 2,
              {"model": "det"}),
        Gauge("edge_models_loaded", "ignored duplicate help", 4, {"slot": "previous"}),
        Gauge("edge_disk_free_ratio", "Free disk.", math.inf),
    ]
    fams = parse(render({}, extra_gauges=gauges))
    assert fams["edge_models_loaded"].samples == [
        ("edge_models_loaded", {}, 3.0), ("edge_models_loaded", {"slot": "previous"}, 4.0)]
    assert fams["edge_drift_skipped"].help == "Tensors the drift counter skipped.\\nPer model."
    assert fams["edge_disk_free_ratio"].samples[0][2] == math.inf
    assert fams["edge_requests_total"].samples == []


@pytest.mark.parametrize(
    "gauge",
    [Gauge("bad-name", "h", 1), Gauge("ok", "h", 1, {"bad label": "x"}),
     Gauge("ok", "h", 1, {"__reserved": "x"})],
)
def test_invalid_names_are_refused(gauge: Gauge) -> None:
    with pytest.raises(ValueError, match="invalid"):
        render({}, extra_gauges=[gauge])
