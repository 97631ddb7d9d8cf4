from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from fleet.stats import (
    Band,
    CategoricalDrift,
    DriftReport,
    DriftThresholds,
    InvalidConfig,
    Level,
    NumericDrift,
    benjamini_hochberg,
    bh_adjust,
    judge_drift,
    worst_level,
)


def reference_bh(p: list[float], q: float) -> list[bool]:
    """The step-up procedure as the 1995 paper states it."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    k = max((r + 1 for r, i in enumerate(order) if p[i] <= (r + 1) * q / m), default=0)
    rejected = set(order[:k])
    return [i in rejected for i in range(m)]


P_FIXED = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240,
           0.4262, 0.5719, 0.6528, 0.7590, 1.000]  # Benjamini & Hochberg (1995), table 1


@pytest.mark.parametrize("q", [0.01, 0.05, 0.1, 0.2])
def test_bh_matches_the_step_up_procedure(q: float) -> None:
    assert benjamini_hochberg(P_FIXED, q).tolist() == reference_bh(P_FIXED, q)
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 0.01, size=5)]).tolist()
        assert benjamini_hochberg(p, q).tolist() == reference_bh(p, q)


def test_bh_paper_example_and_adjusted_values() -> None:
    assert benjamini_hochberg(P_FIXED, 0.05).sum() == 4  # the paper rejects four
    np.testing.assert_allclose(bh_adjust(P_FIXED), stats.false_discovery_control(P_FIXED))
    np.testing.assert_allclose(bh_adjust([0.01, 0.02, 0.03, 0.04, 0.05]), [0.05] * 5)
    assert bh_adjust([]).size == 0


def numeric(n: int = 1000, p: float = 1.0, **effects: float) -> NumericDrift:
    base = {"ks": 0.0, "psi": 0.0, "wasserstein": 0.0, "mean_shift": 0.0}
    base.update(effects)
    return NumericDrift("x[0]", False, n, 20_000, base["ks"], p, base["psi"],
                        base["wasserstein"], base["mean_shift"], p, 0.0, 0.0)


@pytest.mark.parametrize(("entry", "level"), [
    # a million samples make a tiny shift "significant": effect size says ok
    (numeric(1_000_000, 1e-30, ks=0.01, psi=0.001, wasserstein=0.02, mean_shift=0.02),
     Level.OK),
    # a large PSI on few samples is noise (PSI's small-sample bias): not significant
    (numeric(150, 0.2, psi=0.4, ks=0.08), Level.OK),
    (numeric(5000, 1e-12, mean_shift=-0.07), Level.WARN),
    (numeric(5000, 1e-12, psi=0.3, ks=0.15), Level.ALERT),
    (numeric(50, 1e-12, psi=0.3), Level.INSUFFICIENT),
    (CategoricalDrift("c", False, 5000, 5000, 0.15, 0.05, 100.0, 1e-12, 0.0), Level.WARN),
])
def test_levels_need_both_effect_and_evidence(entry: NumericDrift | CategoricalDrift,
                                              level: Level) -> None:
    (verdict,) = judge_drift({"dev": DriftReport((entry,))})
    assert verdict.level is level
    assert (verdict.unit, verdict.name) == ("dev", entry.name)


def test_reasons_name_the_crossed_thresholds() -> None:
    (v,) = judge_drift({"d": DriftReport((numeric(5000, 1e-12, psi=0.3, mean_shift=0.06),))})
    assert v.reasons == ("psi 0.3 >= 0.25", "mean shift 0.06 >= 0.05")


def test_bh_runs_across_every_device_and_entry() -> None:
    reports = {f"d{i}": DriftReport((numeric(p=0.5, psi=0.3),)) for i in range(999)}
    reports["odd"] = DriftReport((numeric(p=0.0005, psi=0.3),))  # 1e-3 after Bonferroni x2
    verdicts = judge_drift(reports)
    assert all(v.level is Level.OK for v in verdicts)  # 1e-3 * 1000 tests: not a discovery
    alone = judge_drift({"odd": reports["odd"]})
    assert alone[0].level is Level.ALERT
    assert alone[0].q_value == pytest.approx(0.001)


def test_thresholds_from_config() -> None:
    t = DriftThresholds.from_mapping({"psi": {"warn": 0.2, "alert": 0.4}, "fdr": 0.05,
                                      "min_samples": 500})
    assert (t.psi, t.fdr, t.min_samples, t.ks) == (Band(0.2, 0.4), 0.05, 500, Band(0.1, 0.2))
    assert DriftThresholds.from_mapping({}) == DriftThresholds()
    for bad in ({"psi": {"warn": 0.5, "alert": 0.1}}, {"psy": {}}, {"fdr": 2},
                {"ks": {"warn": 0.1}}, {"min_samples": 0}, {"tv": "high"}):
        with pytest.raises(InvalidConfig):
            DriftThresholds.from_mapping(bad)
    custom = replace(DriftThresholds(), mean_shift=Band(0.5, 1.0))
    (v,) = judge_drift({"d": DriftReport((numeric(5000, 1e-12, mean_shift=0.3),))}, custom)
    assert v.level is Level.OK


def test_worst_level() -> None:
    assert worst_level([Level.OK, Level.ALERT, Level.WARN]) is Level.ALERT
    assert worst_level([Level.INSUFFICIENT, Level.WARN]) is Level.WARN
    assert worst_level([Level.INSUFFICIENT]) is Level.INSUFFICIENT
    assert worst_level([]) is Level.OK
