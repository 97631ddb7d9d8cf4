"""The validation table printed by `edgectl convert`."""

from __future__ import annotations

from converters.validate import CandidateReport
from edge_runtime.textable import render


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def table(candidates: list[CandidateReport], batch_n: int) -> str:
    headers = ["precision", "size", "x fp32", "b1 p50 ms", "b1 p95 ms", f"b{batch_n} p50 ms",
               f"b{batch_n} p95 ms", "output", "top-1 agree", "accuracy", "max-abs", "budget", ""]
    rows: list[list[object]] = []
    for c in candidates:
        for i, out in enumerate(c.outputs):
            first = i == 0
            rows.append([
                c.precision if first else "", _size(c.size_bytes) if first else "",
                f"{c.size_ratio:.3f}" if first else "",
                *(f"{c.latency_ms[k]:.3f}" if first else "" for k in
                  ("b1_p50", "b1_p95", f"b{batch_n}_p50", f"b{batch_n}_p95")),
                out.name, _pct(out.top1_agreement), _pct(out.accuracy), f"{out.max_abs:.3g}",
                ("ok" if c.within_budget else "FAIL") if first else "",
                "<- chosen" if first and c.chosen else "",
            ])
    return render(headers, rows)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"
