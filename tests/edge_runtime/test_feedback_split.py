"""Label feedback and request-level A/B splits in the runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.errors import PayloadInvalid
from edge_runtime.feedback import FeedbackBook
from edge_runtime.protocol.assignment import assign, bucket
from edge_runtime.registry import Split
from edge_runtime.runtime import Runtime
from tests.conftest import Keys, build_package


def test_feedback_by_id_and_by_predictions() -> None:
    book = FeedbackBook(capacity=2)
    book.remember("r1", "m", "1", {"probabilities": np.array([[0.1, 0.9], [0.8, 0.2]])})
    assert book.add("m", {"id": "r1", "labels": [1, 1]}, active_version="1") == {
        "model": "m", "version": "1", "n": 2, "correct": 1}
    assert book.add("m", {"predictions": [3, 4], "labels": [3, 5]}, active_version="2")[
        "correct"] == 1
    book.remember("r2", "m", "1", {"label": np.array([1])})
    book.remember("r3", "m", "1", {"label": np.array([1])})  # r1 falls out (capacity 2)
    with pytest.raises(PayloadInvalid, match="no recent prediction"):
        book.add("m", {"id": "r1", "labels": [1, 1]}, active_version="1")
    with pytest.raises(PayloadInvalid, match="labels"):
        book.add("m", {"id": "r2"}, active_version="1")
    with pytest.raises(PayloadInvalid, match="2 labels for 1"):
        book.add("m", {"id": "r2", "labels": [1, 2]}, active_version="1")
    drained = {(n, v): (c.n, c.correct) for n, v, c in book.drain()}
    assert drained == {("m", "1"): (2, 1), ("m", "2"): (2, 1)}
    assert book.drain() == []


def test_assignment_is_stable_and_balanced() -> None:
    assert bucket("exp", "unit-1") == bucket("exp", "unit-1")
    arms = [assign("exp-7", f"u{i}", split=30.0) for i in range(10_000)]
    assert 0.28 < arms.count("b") / len(arms) < 0.32
    assert assign("exp", "u", split=0.0) == "a" and assign("exp", "u", split=100.0) == "b"


def test_request_split_routes_by_unit(tmp_path: Path, keys: Keys) -> None:
    pkgs = {v: build_package(tmp_path / "p", keys.signer, version=v, seed=int(v))
            for v in ("1", "2")}
    with Runtime(tmp_path / "store", trusted_keys=(keys.public,)) as rt:
        for v in ("1", "2"):
            rt.install(pkgs[v])
        rt.activate("gemm", "1")
        b = rt.registry.load(rt.store.get("gemm", "2"))
        rt.registry.set_split("gemm", Split("exp-1", b, 50.0))
        x = np.ones((1, 4), np.float32)
        versions = {rt.dataplane.infer("gemm", None, {"x": x}, unit=f"u{i}").version
                    for i in range(40)}
        assert versions == {"1", "2"}
        for i in range(10):  # the same unit always lands on the same arm
            expect = "2" if assign("exp-1", f"u{i}") == "b" else "1"
            assert rt.dataplane.infer("gemm", None, {"x": x}, unit=f"u{i}").version == expect
        assert rt.dataplane.infer("gemm", "2", {"x": x}).version == "2"
        rt.registry.clear_split("gemm")
        b.unload()
        assert rt.dataplane.infer("gemm", None, {"x": x}, unit="u1").version == "1"
