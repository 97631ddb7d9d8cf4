"""A mergeable log-bucket latency histogram (DDSketch-style) with bounded relative error.

Bucket ``k`` holds values in ``(gamma**(k-1), gamma**k]`` with ``gamma = (1+a)/(1-a)``, so the
bucket's representative ``2*gamma**k/(gamma+1)`` is within relative error ``a`` of every value in
it. Counts per bucket add up, so device windows, intervals and fleet aggregates merge exactly,
and the wire form is a small map of bucket index to count instead of raw samples.

Not thread-safe: callers (``ModelMetrics``) hold a lock around it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

DEFAULT_ACCURACY = 0.01
DEFAULT_MIN_VALUE = 1e-7
# Products of log(v)/log(gamma) this close to an integer are recomputed with math.log in
# record_many, because np.log and math.log may differ by an ulp and land in adjacent buckets.
_BOUNDARY_EPS = 1e-9


class LogHistogram:
    """Counts of positive values (seconds) in log buckets; values <= min_value count as zero."""

    def __init__(
        self, relative_accuracy: float = DEFAULT_ACCURACY, *, min_value: float = DEFAULT_MIN_VALUE
    ) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy}")
        if not min_value > 0.0:
            raise ValueError(f"min_value must be > 0, got {min_value}")
        self.relative_accuracy = relative_accuracy
        self.min_value = min_value
        self._gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._inv_log_gamma = 1.0 / math.log(self._gamma)
        self._bins: dict[int, int] = {}
        self._zero = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    def record(self, value: float) -> None:
        """Count one value. Hot path: one log, one dict increment, no numpy."""
        if not math.isfinite(value):
            raise ValueError(f"cannot record non-finite value {value}")
        if value > self.min_value:
            key = math.ceil(math.log(value) * self._inv_log_gamma)
            self._bins[key] = self._bins.get(key, 0) + 1
        else:
            self._zero += 1
        self._count += 1
        self._sum += value
        self._min = min(self._min, value)
        self._max = max(self._max, value)

    def record_many(self, values: NDArray[Any]) -> None:
        """Count a batch with one vectorised pass; buckets match what ``record`` would give."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return
        if not np.isfinite(v).all():
            raise ValueError("cannot record non-finite values")
        positive = v[v > self.min_value]
        scaled = np.log(positive) * self._inv_log_gamma
        keys = np.ceil(scaled).astype(np.int64)
        near = np.flatnonzero(np.abs(scaled - np.rint(scaled)) < _BOUNDARY_EPS)
        for i in near.tolist():
            keys[i] = math.ceil(math.log(float(positive[i])) * self._inv_log_gamma)
        uniq, counts = np.unique(keys, return_counts=True)
        for key, n in zip(uniq.tolist(), counts.tolist(), strict=True):
            self._bins[key] = self._bins.get(key, 0) + n
        self._zero += int(v.size - positive.size)
        self._count += int(v.size)
        self._sum += float(v.sum())
        self._min = min(self._min, float(v.min()))
        self._max = max(self._max, float(v.max()))

    def merge(self, other: LogHistogram) -> None:
        """Add another histogram's counts into this one (both must use the same buckets)."""
        if (other.relative_accuracy, other.min_value) != (self.relative_accuracy, self.min_value):
            raise ValueError(
                f"cannot merge histograms with accuracy/min {other.relative_accuracy}/"
                f"{other.min_value} into {self.relative_accuracy}/{self.min_value}"
            )
        for key, n in other._bins.items():
            self._bins[key] = self._bins.get(key, 0) + n
        self._zero += other._zero
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def copy(self) -> LogHistogram:
        out = LogHistogram(self.relative_accuracy, min_value=self.min_value)
        out.merge(self)
        return out

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile: the bucket of sample ``floor(q*(count-1))`` of the sorted data.

        The answer is clamped to the observed [min, max], which can only bring it closer to the
        true sample because that sample lies in the same bucket and inside [min, max].
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self._count == 0:
            raise ValueError("quantile of an empty histogram")
        rank = int(q * (self._count - 1))
        value = 0.0
        seen = self._zero
        if seen <= rank:
            for key in sorted(self._bins):
                seen += self._bins[key]
                if seen > rank:
                    value = 2.0 * self._gamma**key / (self._gamma + 1.0)
                    break
        return min(max(value, self._min), self._max)

    @property
    def count(self) -> int:
        return self._count

    @property
    def sum(self) -> float:
        return self._sum

    @property
    def min(self) -> float | None:
        """Smallest recorded value, None when empty."""
        return self._min if self._count else None

    @property
    def max(self) -> float | None:
        """Largest recorded value, None when empty."""
        return self._max if self._count else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe compact form; bucket keys are strings because JSON object keys must be."""
        return {
            "relative_accuracy": self.relative_accuracy,
            "min_value": self.min_value,
            "zero": self._zero,
            "bins": {str(k): n for k, n in sorted(self._bins.items())},
            "sum": self._sum,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogHistogram:
        """Inverse of ``to_dict``; raises ValueError on anything malformed (it crosses the wire)."""
        try:
            out = cls(float(data["relative_accuracy"]), min_value=float(data["min_value"]))
            bins = {int(k): int(n) for k, n in dict(data["bins"]).items()}
            zero = int(data["zero"])
            total = zero + sum(bins.values())
            if zero < 0 or any(n <= 0 for n in bins.values()):
                raise ValueError("counts must be positive")
            out._bins, out._zero, out._count = bins, zero, total
            out._sum = float(data["sum"])
            if total:
                out._min, out._max = float(data["min"]), float(data["max"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a LogHistogram dict: {exc}") from exc
        return out

    def __repr__(self) -> str:
        return f"LogHistogram(count={self._count}, buckets={len(self._bins)})"
