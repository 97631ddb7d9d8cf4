"""The device's own verdict on a new version during probation, against the version it replaced.

Pure: metrics in, verdict out. ``None`` means "not decided yet".
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_runtime.protocol.messages import Probation


@dataclass(frozen=True)
class Observed:
    requests: int
    errors: int
    p95_s: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def judge(limits: Probation, new: Observed, old: Observed | None, *, elapsed_s: float
          ) -> tuple[bool, str] | None:
    """(ok, reason) once decided. Breaking a limit with enough requests fails at once; passing
    needs the whole probation period."""
    if new.requests >= limits.min_requests:
        if new.error_rate > limits.max_error_rate:
            return False, (f"error rate {new.error_rate:.3f} > limit {limits.max_error_rate:.3f} "
                           f"over {new.requests} requests")
        if old is not None and old.requests >= limits.min_requests and (
                new.error_rate > old.error_rate + limits.max_error_increase):
            return False, (f"error rate {new.error_rate:.3f} > previous version's "
                           f"{old.error_rate:.3f} + {limits.max_error_increase:.3f}")
        if (old is not None and old.p95_s and new.p95_s
                and new.p95_s > limits.max_p95_ratio * old.p95_s):
            return False, (f"p95 latency {1000 * new.p95_s:.2f} ms > {limits.max_p95_ratio:g}x "
                           f"the previous version's {1000 * old.p95_s:.2f} ms")
    if elapsed_s < limits.seconds:
        return None
    if new.requests < limits.min_requests:
        return True, f"probation over with {new.requests} requests (< {limits.min_requests})"
    return True, f"probation passed ({new.requests} requests, error rate {new.error_rate:.3f})"
