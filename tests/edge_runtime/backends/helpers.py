"""Manifests and data shared by the backend tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.manifest import Dim, Format, Manifest, TensorSpec

Spec = tuple[str, str, Sequence[Dim]]


X_4: Spec = ("x", "float32", ("batch", 4))
Y_3: Spec = ("y", "float32", ("batch", 3))


def make_manifest(fmt: Format = "onnx", *, inputs: Sequence[Spec] = (X_4,),
                  outputs: Sequence[Spec] = (Y_3,)) -> Manifest:
    model_file = f"model.{fmt}"
    return Manifest(
        name="m", version="1", format=fmt, precision="fp32", model_file=model_file,
        inputs=tuple(TensorSpec(n, d, tuple(s)) for n, d, s in inputs),
        outputs=tuple(TensorSpec(n, d, tuple(s)) for n, d, s in outputs),
        files={model_file: "0" * 64}, source={}, converter={}, created_at="",
    )


def gemm_weights(n_in: int = 4, n_out: int = 3, seed: int = 0
                 ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The w and b that tests.conftest.gemm_model draws for the same arguments."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    return w, b


def batch(n: int, n_in: int = 4, seed: int = 1) -> NDArray[np.float32]:
    return np.random.default_rng(seed + n).standard_normal((n, n_in)).astype(np.float32)
