"""Issue 22.1: a probation without enough requests never commits. It waits up to the wait limit,
then applies the no-data policy (roll back by default, or hold). Traces of the pure judge over
the polls an agent makes, and a property over any traffic below ``min_requests``."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.agent.probation import NoDataPolicy, Observed, judge
from edge_runtime.protocol.messages import Probation

LIMITS = Probation(seconds=30.0, max_error_rate=0.05, max_error_increase=0.02,
                   max_p95_ratio=1.5, min_requests=20)
OLD = Observed(500, 0, 0.010)


@dataclass(frozen=True)
class Case:
    name: str
    polls: tuple[tuple[float, int, int], ...]  # (elapsed s, requests, errors) seen at each poll
    verdicts: tuple[str, ...]  # per poll: "wait", "commit" or "rollback"
    policy: NoDataPolicy = NoDataPolicy.ROLL_BACK
    max_wait_s: float = 120.0


def _verdict(v: tuple[bool, str] | None) -> str:
    return "wait" if v is None else "commit" if v[0] else "rollback"


CASES = [
    Case("no_traffic_waits_then_rolls_back",
         ((0.0, 0, 0), (30.0, 0, 0), (119.0, 0, 0), (120.0, 0, 0)),
         ("wait", "wait", "wait", "rollback")),
    Case("too_little_traffic_waits_then_rolls_back",
         ((31.0, 19, 0), (200.0, 19, 0)), ("wait", "rollback")),
    Case("no_traffic_holds_forever", ((30.0, 0, 0), (120.0, 0, 0), (1e6, 5, 0)),
         ("wait", "wait", "wait"), policy=NoDataPolicy.HOLD),
    Case("late_traffic_then_commits", ((30.0, 0, 0), (60.0, 25, 0)), ("wait", "commit")),
    Case("late_failing_traffic_rolls_back_at_once", ((30.0, 0, 0), (40.0, 25, 5)),
         ("wait", "rollback"), policy=NoDataPolicy.HOLD),
    # the promote-b case: 20% errors, seen as soon as min_requests arrive
    Case("failing_version_rolls_back_before_the_period", ((1.0, 10, 2), (2.0, 40, 8)),
         ("wait", "rollback")),
    Case("the_wait_limit_never_shortens_the_period", ((10.0, 0, 0), (29.0, 25, 0)),
         ("wait", "wait"), max_wait_s=5.0),
]


def test_probation_traces() -> None:
    for case in CASES:
        got = tuple(_verdict(judge(LIMITS, Observed(n, e, 0.010), OLD, elapsed_s=t,
                                   max_wait_s=case.max_wait_s, no_data=case.policy))
                    for t, n, e in case.polls)
        assert got == case.verdicts, case.name


def test_no_data_reason_says_why() -> None:
    verdict = judge(LIMITS, Observed(3, 0, None), OLD, elapsed_s=300.0, max_wait_s=120.0)
    assert verdict is not None and not verdict[0]
    assert "no data: 3 requests (< 20)" in verdict[1]


@settings(max_examples=300, deadline=None)
@given(seen=st.tuples(st.integers(0, 19), st.integers(0, 19)),
       times=st.tuples(st.floats(0.0, 1e7), st.floats(0.0, 1e4)),
       policy=st.sampled_from(list(NoDataPolicy)), has_old=st.booleans())
def test_below_min_requests_never_commits(seen: tuple[int, int], times: tuple[float, float],
                                          policy: NoDataPolicy, has_old: bool) -> None:
    (requests, errors), (elapsed, max_wait) = seen, times
    new = Observed(requests, min(errors, requests), None)
    verdict = judge(LIMITS, new, OLD if has_old else None, elapsed_s=elapsed,
                    max_wait_s=max_wait, no_data=policy)
    assert verdict is None or verdict[0] is False
    if policy is NoDataPolicy.HOLD:
        assert verdict is None
