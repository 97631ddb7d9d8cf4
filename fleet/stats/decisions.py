"""Turn drift statistics into warn/alert levels that stay sound across a whole fleet.

Two conditions, in this order of importance:

1. Effect size. With a million samples a 0.02 sd shift is "significant" every time, so a level
   is set only by how large the change is: PSI, KS statistic, Wasserstein (sd units) and the
   mean shift (sd units) for numeric entries, total variation and PSI for categorical ones.
2. Evidence. With 1,000 devices x 20 features, 20,000 tests run at each check, and 1,000 of them
   would pass p < 0.05 by chance. An entry counts only if its p-value survives Benjamini-
   Hochberg over every device x entry judged together, at false discovery rate ``fdr``. Under
   no drift at all, BH at ``fdr`` makes *any* alert in the fleet happen in at most ``fdr`` of
   checks (bench: 1 in 300 simulated checks of 1,000 devices x 20 features at the default
   0.01). Judge the per-device views and the group views of one check in one call, so they
   share that budget.

Entries with fewer than ``min_samples`` values are "insufficient data", not "ok", and are left
out of the BH family.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fleet.stats.drift import DriftReport, EntryDrift, NumericDrift
from fleet.stats.errors import InvalidConfig


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    ALERT = "alert"
    INSUFFICIENT = "insufficient data"


@dataclass(frozen=True)
class Band:
    """Effect-size thresholds: at or above ``warn`` warns, at or above ``alert`` alerts."""

    warn: float
    alert: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.warn <= self.alert:
            raise InvalidConfig("band", f"need 0 <= warn <= alert, got {self.warn}, {self.alert}")

    def level(self, value: float) -> Level:
        if value >= self.alert:
            return Level.ALERT
        return Level.WARN if value >= self.warn else Level.OK


@dataclass(frozen=True)
class DriftThresholds:
    """Per-model drift thresholds. Defaults: the usual PSI 0.1/0.25 bands; KS and TV 0.1/0.2;
    Wasserstein and mean shift in baseline standard deviations (0.1/0.25 and 0.05/0.2: a
    location shift moves both by the same amount, and the mean test sees it first)."""

    psi: Band = Band(0.1, 0.25)
    ks: Band = Band(0.1, 0.2)
    wasserstein: Band = Band(0.1, 0.25)
    mean_shift: Band = Band(0.05, 0.2)
    tv: Band = Band(0.1, 0.2)
    fdr: float = 0.01
    min_samples: int = 100

    def __post_init__(self) -> None:
        if not 0.0 < self.fdr < 1.0:
            raise InvalidConfig("fdr", f"must be in (0, 1), got {self.fdr}")
        if self.min_samples < 1:
            raise InvalidConfig("min_samples", f"must be >= 1, got {self.min_samples}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DriftThresholds:
        """From a model's config, e.g. ``{"psi": {"warn": 0.2, "alert": 0.4}, "fdr": 0.05}``;
        keys left out keep their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidConfig(sorted(unknown)[0], f"unknown threshold (known: {sorted(known)})")
        kwargs: dict[str, Any] = {}
        try:
            for key, value in data.items():
                if key in ("fdr", "min_samples"):
                    kwargs[key] = type(getattr(cls(), key))(value)
                else:
                    kwargs[key] = Band(float(value["warn"]), float(value["alert"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidConfig(str(key), f"cannot read {value!r}: {exc}") from exc
        return cls(**kwargs)


def bh_adjust(p_values: Any) -> NDArray[np.float64]:
    """Benjamini-Hochberg adjusted p-values (q-values): reject where q <= fdr."""
    p = np.asarray(p_values, dtype=np.float64).ravel()
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def benjamini_hochberg(p_values: Any, fdr: float) -> NDArray[np.bool_]:
    """Which hypotheses BH rejects at false discovery rate ``fdr`` (valid under independence
    and positive dependence, as between devices compared with one shared reference)."""
    return bh_adjust(p_values) <= fdr


@dataclass(frozen=True)
class EntryVerdict:
    unit: str  # a device id, a group, or "" for a single report
    name: str
    output: bool
    level: Level
    q_value: float  # BH-adjusted p-value within the judged family
    reasons: tuple[str, ...]


def judge_drift(reports: Mapping[str, DriftReport],
                thresholds: DriftThresholds | None = None) -> list[EntryVerdict]:
    """Levels for every unit x entry, with BH across all of them together."""
    t = thresholds or DriftThresholds()
    items = [(unit, e) for unit, r in reports.items() for e in r.entries]
    tested = [i for i, (_, e) in enumerate(items) if _enough(e, t)]
    q = np.ones(len(items))
    q[tested] = bh_adjust([items[i][1].p_value for i in tested])
    judged = frozenset(tested)
    out = []
    for i, (unit, e) in enumerate(items):
        if i not in judged:
            out.append(EntryVerdict(unit, e.name, e.output, Level.INSUFFICIENT, 1.0, ()))
            continue
        level, reasons = _effect_level(e, t) if q[i] <= t.fdr else (Level.OK, ())
        out.append(EntryVerdict(unit, e.name, e.output, level, float(q[i]), reasons))
    return out


def _enough(e: EntryDrift, t: DriftThresholds) -> bool:
    return min(e.n, e.n_baseline) >= t.min_samples


def _effect_level(e: EntryDrift, t: DriftThresholds) -> tuple[Level, tuple[str, ...]]:
    if isinstance(e, NumericDrift):
        effects = [("psi", e.psi, t.psi), ("ks", e.ks, t.ks),
                   ("wasserstein", e.wasserstein, t.wasserstein),
                   ("mean shift", abs(e.mean_shift), t.mean_shift)]
    else:
        effects = [("tv", e.tv, t.tv), ("psi", e.psi, t.psi)]
    levels = [(band.level(v), f"{name} {v:.3g} >= {_crossed(band, v):.3g}")
              for name, v, band in effects]
    worst = max((lv for lv, _ in levels), key=_RANK.__getitem__, default=Level.OK)
    return worst, tuple(msg for lv, msg in levels if lv is not Level.OK)


def _crossed(band: Band, value: float) -> float:
    return band.alert if value >= band.alert else band.warn


_RANK = {Level.OK: 0, Level.INSUFFICIENT: 0, Level.WARN: 1, Level.ALERT: 2}


def worst_level(levels: Any) -> Level:
    """The most severe of some levels (ALERT > WARN > OK); INSUFFICIENT only if all are."""
    seen = list(levels)
    if seen and all(lv is Level.INSUFFICIENT for lv in seen):
        return Level.INSUFFICIENT
    return max(seen, key=_RANK.__getitem__, default=Level.OK)
