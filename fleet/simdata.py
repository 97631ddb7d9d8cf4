"""Simulated inputs that look like a package's reference data: each numeric feature drawn from
its reference histogram (a bin by its reference count, then uniform inside it), so undrifted
simulated devices match the reference and the drift knob shifts them by a share of each
feature's standard deviation."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.package import REFERENCE_STATS


class InputSampler:
    def __init__(self, reference: dict[str, Any]) -> None:
        feats = [f for f in reference.get("features", []) if f.get("kind") == "numeric"]
        layouts = reference.get("layouts", [])
        self.ok = bool(feats) and all(lay.get("mode") == "element" for lay in layouts) and len(
            feats) == len(reference.get("features", []))
        if not self.ok:
            return
        width = max(len(f["edges"]) for f in feats)
        self.edges = np.array([f["edges"] + [f["edges"][-1]] * (width - len(f["edges"]))
                               for f in feats], dtype=np.float64)
        cdf = np.ones((len(feats), width - 1))
        for i, f in enumerate(feats):
            counts = np.asarray(f["counts"], dtype=np.float64)
            cdf[i, :counts.size] = np.cumsum(counts) / max(counts.sum(), 1.0)
        self.cdf = cdf
        n = np.array([max(f["n"] - f["missing"], 1) for f in feats], dtype=np.float64)
        mean = np.array([f["sum"] for f in feats]) / n
        std = np.sqrt(np.maximum(np.array([f["sum_sq"] for f in feats]) / n - mean**2, 0.0))
        # a feature constant in the reference has no sd to shift by: drifted, it stays put
        self.std = np.where(self.edges[:, 0] == self.edges[:, -1], 0.0, std)
        self.rows = np.arange(len(feats))

    def sample(self, rng: np.random.Generator, shift_sd: float) -> NDArray[np.float64]:
        """One row of features (call only when ``ok``)."""
        idx = (rng.random(len(self.rows))[:, None] > self.cdf).sum(axis=1)
        lo, hi = self.edges[self.rows, idx], self.edges[self.rows, idx + 1]
        row: NDArray[np.float64] = lo + (hi - lo) * rng.random(len(self.rows))
        return row + shift_sd * self.std


@lru_cache(maxsize=32)
def sampler_for(model_dir: str) -> InputSampler | None:
    try:
        ref = json.loads((Path(model_dir) / REFERENCE_STATS).read_text())
        s = InputSampler(ref)
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return s if s.ok else None
