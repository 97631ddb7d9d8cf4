from __future__ import annotations

import numpy as np

from edge_runtime.manifest import TensorSpec
from edge_runtime.refstats import compute_reference_stats
from fleet.simdata import InputSampler


def test_samples_follow_the_reference_and_shift_by_sd() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(5.0, 2.0, 5000), rng.uniform(0, 1, 5000)])
    ref = compute_reference_stats({"x": x}, {}, (TensorSpec("x", "float64", ("batch", 2)),), ())
    sampler = InputSampler(ref)
    assert sampler.ok
    rows = np.array([sampler.sample(rng, 0.0) for _ in range(4000)])
    assert abs(rows[:, 0].mean() - 5.0) < 0.15 and abs(rows[:, 0].std() - 2.0) < 0.15
    assert rows[:, 1].min() >= 0.0 and rows[:, 1].max() <= 1.0
    shifted = np.array([sampler.sample(rng, 1.0) for _ in range(4000)])
    assert abs(shifted[:, 0].mean() - 7.0) < 0.2
