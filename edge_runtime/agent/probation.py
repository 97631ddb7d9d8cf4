"""The device's own verdict on a new version during probation, against the version it replaced.

Pure: metrics in, verdict out. ``None`` means "not decided yet". Too few requests never
commits: the verdict waits up to ``max_wait_s``, then applies the ``no_data`` policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edge_runtime.protocol.messages import Probation


class NoDataPolicy(StrEnum):
    """What a probation that never saw ``min_requests`` does once ``max_wait_s`` is over."""

    # The default is HOLD: an idle device has no evidence against the version it was sent, and a
    # rollback after the wait would undo deployments to quiet devices (and fail their canaries).
    ROLL_BACK = "rollback"  # back to the version that served before: it is the known-good one
    HOLD = "hold"  # keep serving the new version in probation until data or a new desired state


@dataclass(frozen=True)
class Observed:
    requests: int
    errors: int
    p95_s: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def judge(limits: Probation, new: Observed, old: Observed | None, *, elapsed_s: float,
          max_wait_s: float = 300.0, no_data: NoDataPolicy = NoDataPolicy.ROLL_BACK
          ) -> tuple[bool, str] | None:
    """(ok, reason) once decided. Breaking a limit with enough requests fails at once; passing
    needs the whole probation period and ``min_requests``."""
    if new.requests >= limits.min_requests:
        broken = _broken(limits, new, old)
        if broken is not None:
            return False, broken
        if elapsed_s < limits.seconds:
            return None
        return True, f"probation passed ({new.requests} requests, error rate {new.error_rate:.3f})"
    if elapsed_s < max(limits.seconds, max_wait_s) or no_data is NoDataPolicy.HOLD:
        return None
    return False, (f"no data: {new.requests} requests (< {limits.min_requests}) after "
                   f"{elapsed_s:.0f} s of probation; rolling back")


def _broken(limits: Probation, new: Observed, old: Observed | None) -> str | None:
    if new.error_rate > limits.max_error_rate:
        return (f"error rate {new.error_rate:.3f} > limit {limits.max_error_rate:.3f} "
                f"over {new.requests} requests")
    if old is not None and old.requests >= limits.min_requests and (
            new.error_rate > old.error_rate + limits.max_error_increase):
        return (f"error rate {new.error_rate:.3f} > previous version's "
                f"{old.error_rate:.3f} + {limits.max_error_increase:.3f}")
    if (old is not None and old.p95_s and new.p95_s
            and new.p95_s > limits.max_p95_ratio * old.p95_s):
        return (f"p95 latency {1000 * new.p95_s:.2f} ms > {limits.max_p95_ratio:g}x "
                f"the previous version's {1000 * old.p95_s:.2f} ms")
    return None
