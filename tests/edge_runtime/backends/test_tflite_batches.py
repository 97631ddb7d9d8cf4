"""A fixed-batch TFLite model (the converter fixes the batch) serves any number of rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.backends.tflite import _fixed_batch, run_in_batches


def test_rows_run_in_chunks_of_the_fixed_batch_last_one_padded() -> None:
    seen: list[tuple[int, ...]] = []

    def run(inputs: Any) -> dict[str, np.ndarray]:
        seen.append(inputs["x"].shape)
        return {"y": inputs["x"] * 2.0, "n": np.arange(len(inputs["x"]))}

    x = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    out = run_in_batches(run, {"x": x}, 3)
    assert seen == [(3, 3), (3, 3), (3, 3)]
    np.testing.assert_array_equal(out["y"], x * 2.0)
    assert out["n"].tolist() == [0, 1, 2, 0, 1, 2, 0]
    seen.clear()
    assert run_in_batches(run, {"x": x[:3]}, 3)["y"].shape == (3, 3) and len(seen) == 1


def test_fixed_batch_read_from_shape_signatures() -> None:
    def detail(*sig: int) -> dict[str, Any]:
        return {"shape_signature": np.array(sig)}

    assert _fixed_batch([detail(1, 4), detail(1, 2, 2)]) == 1
    assert _fixed_batch([detail(-1, 4)]) is None
    assert _fixed_batch([detail(2, 4), detail(1, 4)]) is None
    assert _fixed_batch([detail()]) is None
