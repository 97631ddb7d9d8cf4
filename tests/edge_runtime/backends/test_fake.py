from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.backends import BackendOptions, FakeBackend
from edge_runtime.backends.base import Arrays
from edge_runtime.errors import InferenceFailed, SwapError
from tests.edge_runtime.backends.helpers import X_4, batch, make_manifest

NOWHERE = Path("/nonexistent/model.onnx")  # the fake never reads the model file


def test_default_outputs_are_deterministic_and_checkable() -> None:
    manifest = make_manifest(outputs=[
        ("probs", "float32", ("batch", 3)), ("label", "int64", ("batch",)),
        ("grid", "float16", ("batch", "h", 2)), ("wide", "float64", ("batch", 9)),
        ("flag", "bool", ("batch", 1)), ("name", "string", ("batch",)),
    ])
    x = batch(5)
    out = FakeBackend().load(NOWHERE, manifest, BackendOptions()).predict({"x": x})
    assert list(out) == ["probs", "label", "grid", "wide", "flag", "name"]
    e = np.exp(x[:, :3] - x[:, :3].max(axis=1, keepdims=True))
    np.testing.assert_allclose(out["probs"], e / e.sum(axis=1, keepdims=True), rtol=1e-6)
    assert out["probs"].dtype == np.float32
    np.testing.assert_array_equal(out["label"], x.argmax(axis=1))
    assert out["label"].dtype == np.int64
    assert out["grid"].shape == (5, 1, 2)
    assert out["grid"].dtype == np.float16
    np.testing.assert_allclose(out["grid"].sum(axis=(1, 2)), 1.0, rtol=1e-3)
    np.testing.assert_array_equal(out["wide"], np.zeros((5, 9)))  # 9 > the 4 features
    assert out["flag"].shape == (5, 1)
    assert out["name"].tolist() == [""] * 5


def test_non_numeric_first_input_gives_zeros() -> None:
    manifest = make_manifest(inputs=[("text", "string", ("batch",))],
                             outputs=[("score", "float32", ("batch", 2))])
    text = np.array(["a", "b"], dtype=object)
    out = FakeBackend().load(NOWHERE, manifest, BackendOptions()).predict({"text": text})
    np.testing.assert_array_equal(out["score"], np.zeros((2, 2), np.float32))


def test_custom_fn_and_counters() -> None:
    def double(inputs: Arrays) -> dict[str, Any]:
        return {"y": inputs["x"] * 2}

    backend = FakeBackend(double)
    options = BackendOptions(intra_op_threads=2)
    first = backend.load(NOWHERE, make_manifest(), options)
    second = backend.load(NOWHERE, make_manifest(), options)
    np.testing.assert_array_equal(first.predict({"x": np.ones((1, 4))})["y"], np.full((1, 4), 2))
    second.predict({"x": np.ones((1, 4))})
    first.unload()
    first.unload()
    assert (backend.loads, backend.unloads, backend.predicts, backend.live) == (2, 1, 2, 1)
    assert backend.last_options is options
    with pytest.raises(InferenceFailed, match="unloaded"):
        first.predict({"x": np.ones((1, 4))})


def test_injected_errors_are_typed_and_can_change_later() -> None:
    backend = FakeBackend(load_error="corrupt file", predict_error="out of memory")
    with pytest.raises(SwapError) as load_info:
        backend.load(NOWHERE, make_manifest(), BackendOptions())
    assert (load_info.value.name, load_info.value.version, load_info.value.reason) == (
        "m", "1", "corrupt file")
    backend.load_error = None
    model = backend.load(NOWHERE, make_manifest(), BackendOptions())
    with pytest.raises(InferenceFailed, match="out of memory"):
        model.predict({"x": batch(1)})
    backend.predict_error = None
    assert model.predict({"x": batch(1)})["y"].shape == (1, 3)
    assert (backend.loads, backend.predicts) == (1, 2)


def test_a_raising_fn_is_inference_failed() -> None:
    def broken(inputs: Arrays) -> dict[str, Any]:
        raise ZeroDivisionError("boom")

    model = FakeBackend(broken).load(NOWHERE, make_manifest(), BackendOptions())
    with pytest.raises(InferenceFailed, match="ZeroDivisionError: boom"):
        model.predict({"x": batch(1)})


def test_delay_and_concurrent_counting() -> None:
    backend = FakeBackend(delay_s=0.01, name="slow")
    model = backend.load(NOWHERE, make_manifest(inputs=[X_4]), BackendOptions())
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: model.predict({"x": batch(2)}), range(80)))
    assert backend.predicts == 80
    assert time.perf_counter() - started >= 0.01 * 80 / 8
    assert backend.name == "slow"
