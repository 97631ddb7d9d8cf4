from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from edge_runtime.manifest import TensorSpec
from edge_runtime.monitor.drift import DriftAccumulator
from edge_runtime.monitor.wire import SnapshotLayout
from edge_runtime.refstats import compute_reference_stats

Arrays = dict[str, np.ndarray]


def specs(arrays: Arrays) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(k, str(v.dtype), ("batch", *v.shape[1:])) for k, v in arrays.items())


def make_data(seed: int, n: int, *, shift: float = 0.0, cat_p: list[float] | None = None,
              scale_top: float = 1.0) -> tuple[Arrays, Arrays]:
    """3 numeric features (normal, lognormal, uniform), 1 categorical, a 4-class output."""
    rng = np.random.default_rng(seed)
    x = np.stack([rng.standard_normal(n) + shift,
                  rng.lognormal(0.0, 0.5, n) + shift * 0.604,  # sd of lognormal(0, .5)
                  rng.uniform(0.0, 1.0, n) + shift * 0.29], axis=1)
    c = rng.choice(4, size=(n, 1), p=cat_p or [0.4, 0.3, 0.2, 0.1])
    logits = rng.standard_normal((n, 4)) * scale_top
    y = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"x": x.astype(np.float64), "c": c.astype(np.int64)}, {"y": y.astype(np.float32)}


@dataclass(frozen=True)
class Ref:
    stats: dict[str, Any]
    layout: SnapshotLayout

    def snapshot(self, seed: int, n: int, **kw: Any) -> dict[str, Any]:
        acc = DriftAccumulator(self.stats)
        inputs, outputs = make_data(seed, n, **kw)
        acc.update(inputs, outputs)
        return acc.snapshot()


@pytest.fixture(scope="session")
def ref() -> Ref:
    inputs, outputs = make_data(0, 20_000)
    stats = compute_reference_stats(inputs, outputs, specs(inputs), specs(outputs))
    stats = json.loads(json.dumps(stats))
    return Ref(stats, SnapshotLayout(stats))
