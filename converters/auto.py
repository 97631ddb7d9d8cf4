"""`--precision auto`: the smallest candidate inside the accuracy budget that is not much slower
than the fastest one inside it."""

from __future__ import annotations

from collections.abc import Iterable

from converters.errors import NoCandidateWithinBudget
from converters.validate import Budget, CandidateReport

# A smaller model may cost at most this much batch-1 latency against the fastest good candidate.
LATENCY_SLACK = 1.25


def _agreement(c: CandidateReport) -> str:
    parts = [f"{o.name} top-1 {100 * o.top1_agreement:.1f}%" for o in c.outputs
             if o.top1_agreement is not None]
    parts += [f"{o.name} max-abs {o.max_abs:.2g}" for o in c.outputs if o.kind == "value"]
    return ", ".join(parts)


def choose(candidates: list[CandidateReport], budget: Budget,
           allowed: Iterable[str] | None = None) -> CandidateReport:
    allowed_set = set(allowed) if allowed is not None else {c.precision for c in candidates}
    eligible = [c for c in candidates if c.precision in allowed_set]
    for c in eligible:
        if not c.within_budget:
            c.reason = f"outside budget ({_agreement(c)})"
    good = [c for c in eligible if c.within_budget]
    if not good:
        raise NoCandidateWithinBudget(budget.describe(), [c.precision for c in eligible])
    fastest = min(c.latency_ms["b1_p50"] for c in good)
    quick = [c for c in good if c.latency_ms["b1_p50"] <= LATENCY_SLACK * fastest]
    best = min(quick, key=lambda c: (c.size_bytes, c.latency_ms["b1_p50"]))
    for c in good:
        if c is best:
            continue
        if c not in quick:
            c.reason = f"within budget but > {LATENCY_SLACK:g}x the fastest batch-1 latency"
        else:
            c.reason = "within budget but larger"
    best.reason = (
        f"smallest within budget ({best.size_ratio:.2f}x fp32 size; {_agreement(best)}) with "
        f"batch-1 p50 {best.latency_ms['b1_p50']:.3f} ms <= {LATENCY_SLACK:g}x the fastest "
        f"({fastest:.3f} ms)"
    )
    return best
