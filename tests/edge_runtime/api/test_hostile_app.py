"""The daemon's app against hostile and broken requests, in-process (ASGI calls over a real
Runtime and real ONNX models): the token gate the server asks before reading a body, bounded
request ids, label feedback that is ragged or names no installed version, inputs a model
refuses at run time (400, not 500), and large bodies decoded off the event loop (a decoder
process that dies costs one request a 400)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.api.app import App
from edge_runtime.api.offload import INLINE_JSON_MAX, PROCESS_JSON_MIN, Offload
from edge_runtime.backends.onnx import input_refusal
from edge_runtime.codecs.v2 import MAX_ID_BYTES, decode_request
from edge_runtime.dataplane import HEAVY_ELEMENTS
from edge_runtime.errors import InferenceFailed, InputInvalid, PayloadInvalid
from edge_runtime.feedback import MAX_LABELS, FeedbackBook
from edge_runtime.runtime import Runtime
from tests.conftest import Keys, build_package
from tests.edge_runtime.api.test_app_paths import call as asgi_call
from tests.integration.support import build_onnx_package

GEMM = "/v2/models/gemm/infer"
SQUARE = "/v2/models/square/infer"


def square_model() -> bytes:
    """x float32 [batch, 1, h, w] -> y = mean(x + x transposed): any square image, no other
    (as a detector takes only multiples of 32: the manifest cannot say so)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2]),
         helper.make_node("Add", ["x", "t"], ["s"]),
         helper.make_node("ReduceMean", ["s"], ["y"], axes=[2, 3], keepdims=0)], "square",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Any:
    tmp = tmp_path_factory.mktemp("hostile-app")
    pkgs = [build_package(tmp / "pkgs", keys.signer),
            build_onnx_package(tmp / "pkgs", keys.signer, square_model(), name="square")]
    runtime = Runtime(tmp / "store", trusted_keys=(keys.public,))
    for pkg in pkgs:
        runtime.install(pkg)
    runtime.activate("gemm", "1")
    runtime.activate("square", "1")
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def app(rt: Runtime) -> Any:
    app = App(rt, token=None, admin_token="admin", max_body_bytes=32 << 20)
    yield app
    app.offload.close()


def call(app: App, path: str, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
         ) -> tuple[int, Any]:
    status, raw = asgi_call(app, body, path, headers)
    return status, orjson.loads(raw)


def v2(x: np.ndarray, **extra: Any) -> bytes:
    return json.dumps({**extra, "inputs": [{"name": "x", "shape": list(x.shape),
                                            "datatype": "FP32",
                                            "data": x.reshape(-1).tolist()}]}).encode()


# -- the gate ---------------------------------------------------------------------------------
def test_the_gate_asks_for_the_token_each_route_needs(rt: Runtime) -> None:
    app = App(rt, token="s3cret", admin_token="adm", max_body_bytes=1 << 20)
    try:
        user, admin = [(b"authorization", b"Bearer s3cret")], [(b"authorization", b"Bearer adm")]
        assert app.gate(b"/v2/health/ready", [], "127.0.0.1") is None
        assert app.gate(GEMM.encode(), [], "127.0.0.1") == (401, "missing or wrong bearer token")
        assert app.gate(GEMM.encode() + b"?q=1", user, "127.0.0.1") is None
        assert app.gate(b"/admin/install", user, "127.0.0.1") == (
            401, "missing or wrong admin token")
        assert app.gate(b"/%61dmin/install", user, "127.0.0.1") == (
            401, "missing or wrong admin token")  # decoded as the app routes it
        assert app.gate(b"/admin/install", admin, "127.0.0.1") is None
        assert app.gate(b"/admin/install", admin, "10.0.0.9") == (
            401, "admin endpoints answer only on loopback or the Unix socket")
    finally:
        app.offload.close()


# -- request ids ------------------------------------------------------------------------------
def test_request_ids_longer_than_256_bytes_are_refused_and_not_remembered(app: App) -> None:
    x = np.ones((1, 4), np.float32)
    call(app, GEMM, v2(x))  # the app learns the everyday path
    long_id = "i" * (1 << 20)
    for route in ("asgi", "fast"):
        if route == "fast":
            assert app.fast(GEMM.encode(), [], v2(x, id=long_id)) is None  # declined
        status, doc = call(app, GEMM, v2(x, id=long_id))
        assert status == 400 and doc["error"] == (
            f'"id" is {1 << 20} bytes long: request ids are at most {MAX_ID_BYTES} bytes')
    assert long_id not in app.rt.feedback.recent_ids()
    ok = "é" * (MAX_ID_BYTES // 2)  # 256 bytes in UTF-8
    assert call(app, GEMM, v2(x, id=ok))[0] == 200
    assert ok in app.rt.feedback.recent_ids()


def test_remembered_predictions_are_bounded_in_bytes() -> None:
    book = FeedbackBook(capacity=10_000, max_bytes=64_000)
    probabilities = {"p": np.tile(np.array([[0.2, 0.8]]), (100, 1))}  # 100 predictions
    for i in range(1000):
        book.remember(f"r{i:0250d}", "m", "1", probabilities)
    assert book.remembered_bytes <= 64_000
    assert 20 < len(book.recent_ids()) < 100  # the newest, not 1000
    assert book.recent_ids()[-1] == f"r{999:0250d}"
    book.remember("huge", "m", "1", {"p": np.zeros((50_000, 2))})  # over 1/16 of the budget
    assert "huge" not in book.recent_ids()
    label = np.arange(10)
    outputs = {"label": label}
    book.remember("view", "m", "1", outputs)
    assert book.add("m", {"id": "view", "labels": list(range(10))}, active_version="1")[
        "correct"] == 10


# -- label feedback ---------------------------------------------------------------------------
FEEDBACK = "/v2/models/gemm/feedback"
BAD_FEEDBACK = [
    ({"predictions": [1, 2], "labels": [[1], [2, 3]]}, "labels must be a flat list"),
    ({"predictions": [[1, 2], [3]], "labels": [1, 2]}, "predictions must be a flat list"),
    ({"predictions": [1], "labels": [{"a": 1}]}, "not dict values"),
    ({"predictions": [1], "labels": [None]}, "not NoneType values"),
    ({"predictions": [1], "labels": ["x" * 300]}, "at most 256 characters"),
    ({"predictions": [1] * (MAX_LABELS + 1), "labels": [1] * (MAX_LABELS + 1)},
     f"at most {MAX_LABELS} per feedback request"),
    ({"predictions": [1], "labels": [1], "version": 1}, '"version" must be a string'),
    ({"predictions": [1], "labels": [1], "version": "9"},
     "version '9' is not an installed version of gemm (installed: 1)"),
    ({"id": ["a"], "labels": [1]}, '"id" must be a V2 request id'),
    ({"id": "r" * 300, "labels": [1]}, '"id" must be a V2 request id'),
    ({"id": "never-seen", "labels": [1]}, "no recent prediction of gemm"),
    ({"predictions": [1, 2], "labels": [1]}, "1 labels for 2 predictions"),
    ({"labels": [1]}, 'feedback needs "id"'),
    ([1, 2], 'feedback needs "labels"'),
]


@pytest.mark.parametrize(("doc", "says"), BAD_FEEDBACK, ids=[s for _, s in BAD_FEEDBACK])
def test_bad_feedback_is_400_and_counts_nothing(app: App, doc: Any, says: str) -> None:
    app.rt.feedback.drain()
    status, answer = call(app, FEEDBACK, json.dumps(doc).encode())
    assert status == 400 and says in answer["error"], answer
    assert app.rt.feedback.drain() == []


scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False) | st.text(max_size=5))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=12)


@settings(max_examples=300, deadline=None, database=None)
@given(st.fixed_dictionaries({}, optional={
    "labels": st.lists(scalars, max_size=5) | values,
    "predictions": st.lists(scalars, max_size=5) | values,
    "id": st.sampled_from(["r1", "r2"]) | values,
    "version": st.sampled_from(["1", "2"]) | values}) | values)
def test_any_feedback_is_counted_or_payload_invalid(doc: Any) -> None:
    book = FeedbackBook()
    book.remember("r1", "m", "1", {"label": np.array([1, 2])})
    try:
        counted = book.add("m", doc, active_version="1", installed=["1"])
    except PayloadInvalid:
        assert book.drain() == []
    else:
        assert 0 <= counted["correct"] <= counted["n"] and counted["version"] == "1"


def test_feedback_names_the_version_it_credits(app: App) -> None:
    x = np.eye(4, dtype=np.float32)[:2]
    status, answer = call(app, GEMM, v2(x, id="fb-1"))
    assert status == 200
    predicted = np.asarray(answer["outputs"][0]["data"]).reshape(2, 3).argmax(axis=1).tolist()
    status, doc = call(app, FEEDBACK, json.dumps(
        {"id": "fb-1", "labels": [str(predicted[0]), 99], "version": "1"}).encode())
    assert (status, doc) == (200, {"accepted": 2, "correct": 1, "version": "1"})
    status, doc = call(app, FEEDBACK, json.dumps({"predictions": ["cat", 2], "labels": [
        "cat", 2.0], "version": "1"}).encode())
    assert (status, doc) == (200, {"accepted": 2, "correct": 1, "version": "1"})  # "2" != "2.0"
    status, doc = call(app, "/v2/models/nope/feedback", b"{}")
    assert status == 404


# -- inputs the model refuses -----------------------------------------------------------------
def test_an_input_the_model_refuses_is_400_naming_it(app: App) -> None:
    """A 50x60 image to a model that takes square ones: 400 from the event loop's route, and
    from the worker thread's for an image large enough to run there, counted as invalid
    input."""
    assert call(app, SQUARE, v2(np.ones((1, 1, 50, 50), np.float32)))[0] == 200
    totals = app.rt.telemetry.metrics.totals_all
    before = totals()["square", "1"].errors.get("invalid_input", 0)
    small = v2(np.ones((1, 1, 50, 60), np.float32))
    served = app.rt.registry.active("square")
    assert served is not None and served.inline
    served.inline_elements = 10_000  # (a timed estimate: pinned, so the loop's route runs it)
    answer = app.fast(SQUARE.encode(), [], small)  # decoded and run on the event loop
    assert answer is not None
    big = np.ones((1, 1, 600, 610), np.float32)  # decoded in the process, run in a thread
    assert big.size >= HEAVY_ELEMENTS
    refusals = [(answer[0], orjson.loads(answer[1])), call(app, SQUARE, small),
                call(app, SQUARE, v2(big))]
    for status, doc in refusals:
        assert status == 400, doc
        assert doc["error"].startswith("input 'x': the model refused it: Add node: ")
        assert "broadcast" in doc["error"]
    assert totals()["square", "1"].errors.get("invalid_input", 0) == before + 3


def _ort_error(kind: str, message: str) -> Exception:
    import onnxruntime.capi.onnxruntime_pybind11_state as ort_state

    error: Exception = getattr(ort_state, kind)(message)
    return error


@pytest.mark.parametrize(("kind", "message", "reason"), [
    ("InvalidArgument", "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Invalid rank for input: x "
     "Got: 3 Expected: 2", "Invalid rank for input: x Got: 3 Expected: 2"),
    ("Fail", "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running "
     "Reshape node. Name:'' Status Message: /src/reshape_helper.h:84 onnxruntime::Reshape("
     "bool) size != 0 was false. The input tensor cannot be reshaped to the requested shape.",
     "Reshape node: The input tensor cannot be reshaped to the requested shape."),
    ("Fail", "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running "
     "MatMul node. Name:'' Status Message: Failed to allocate memory for requested buffer of "
     "size 800000000", None),
    ("RuntimeException", "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : shape inference bug",
     None),
    ("EPFail", "[ONNXRuntimeError] : 11 : EP_FAIL : dimension", None),
])
def test_onnxruntime_errors_are_refusals_only_when_about_the_input(
        kind: str, message: str, reason: str | None) -> None:
    assert input_refusal(_ort_error(kind, message)) == reason


def test_a_fault_in_the_backend_stays_a_500(rt: Runtime) -> None:
    from edge_runtime.backends.onnx import OnnxModel

    model = rt.registry.active("gemm").runtime  # type: ignore[union-attr]
    assert isinstance(model, OnnxModel)
    error = model._run_error(_ort_error("RuntimeException", "[ONNXRuntimeError] : 6 : "
                                        "RUNTIME_EXCEPTION : out of threads"), ["x"])
    assert isinstance(error, InferenceFailed) and not isinstance(error, PayloadInvalid)
    assert isinstance(model._run_error(_ort_error("InvalidArgument", "INVALID_ARGUMENT : x"),
                                       ["x"]), InputInvalid)


# -- large requests off the event loop --------------------------------------------------------
def test_large_bodies_are_decoded_off_the_loop_with_the_same_answer(app: App) -> None:
    rows = np.random.default_rng(0).standard_normal((PROCESS_JSON_MIN // 60, 4)).astype(
        np.float32)
    small, big = v2(rows[:2]), v2(rows)
    assert len(small) < INLINE_JSON_MAX and len(big) > PROCESS_JSON_MIN
    assert app.fast(GEMM.encode(), [], big) is None  # the synchronous route declines it
    before = app.offload.process_bodies
    status, doc = call(app, GEMM, big)
    assert status == 200 and app.offload.process_bodies == before + 1
    expected = app.rt.predict("gemm", {"x": rows})["y"]
    np.testing.assert_allclose(np.asarray(doc["outputs"][0]["data"]).reshape(expected.shape),
                               expected, rtol=1e-6)
    status, doc = call(app, GEMM, big[:-2])  # broken JSON: the same 400 from the process
    assert status == 400 and doc["error"].startswith("the body is not valid JSON")
    middle = v2(rows[:INLINE_JSON_MAX // 30])  # decoded in a worker thread
    assert INLINE_JSON_MAX < len(middle) < PROCESS_JSON_MIN
    assert call(app, GEMM, middle)[0] == 200


def test_a_heavy_inference_runs_in_a_worker_thread(rt: Runtime) -> None:
    served = rt.registry.active("gemm")
    assert served is not None and served.inline
    threads: list[int] = []
    real = served.runtime

    class Recorder:
        def predict(self, inputs: Any) -> Any:
            threads.append(threading.get_ident())
            return real.predict(inputs)

        def unload(self) -> None:
            real.unload()

    served.runtime = Recorder()
    try:
        async def both() -> int:
            loop_thread = threading.get_ident()
            await rt.dataplane.infer_async("gemm", None, {"x": np.ones((2, 4), np.float32)})
            await rt.dataplane.infer_async("gemm", None, {
                "x": np.ones((HEAVY_ELEMENTS // 4, 4), np.float32)})
            return loop_thread

        loop_thread = asyncio.run(both())
    finally:
        served.runtime = real
    assert threads[0] == loop_thread and threads[1] != loop_thread
    assert served.inline_for(8) and served.inline_elements < 100_000_000


def die(body: bytes) -> None:
    """A decoder that kills the process it runs in (as the OOM killer would)."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_decoder_process_that_dies_costs_one_request_a_400() -> None:
    offload = Offload(idle_s=60)
    body = b"[" + b"1," * PROCESS_JSON_MIN + b"1]"

    async def run() -> None:
        with pytest.raises(PayloadInvalid, match="decoder process died"):
            await offload.decode(die, body, json_bytes=len(body))
        doc = await offload.decode(decode_request, b'{"inputs": []}' + b" " * len(body), None,
                                   json_bytes=len(body))
        assert doc.inputs == {}
        with pytest.raises(PayloadInvalid, match=r"^input 'x': unknown datatype 'FP8'"):
            await offload.decode(decode_request, json.dumps({"inputs": [
                {"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]}).encode()
                + b" " * len(body), None, json_bytes=len(body))

    try:
        asyncio.run(run())
        assert offload.process_starts == 2
    finally:
        offload.close()


def test_the_decoder_process_stops_when_idle() -> None:
    offload = Offload(idle_s=0.2)
    body = b'{"inputs": []}' + b" " * PROCESS_JSON_MIN

    async def run() -> None:
        await offload.decode(decode_request, body, None, json_bytes=len(body))
        assert offload.process_running
        for _ in range(200):
            if not offload.process_running:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("still running")

    try:
        asyncio.run(run())
    finally:
        offload.close()


@pytest.fixture(autouse=True)
def _no_stray_children() -> Any:
    """Decoder processes that died are reaped (within a few seconds: the pool's own thread
    waits for them)."""
    yield
    deadline = time.monotonic() + 15
    while [p for p in Path("/proc").glob("[0-9]*") if _is_stray(p)]:
        assert time.monotonic() < deadline, "a dead decoder process was never reaped"
        time.sleep(0.05)


def _is_stray(proc: Path) -> bool:
    try:
        status = (proc / "status").read_text()
    except OSError:
        return False
    return f"PPid:\t{os.getpid()}\n" in status and "State:\tZ" in status


def test_the_inline_estimate_without_a_second_smoke_run_is_pessimistic() -> None:
    from edge_runtime.manifest import TensorSpec
    from edge_runtime.registry import INLINE_MAX_SECONDS, _inline_elements

    class NoBatch64:
        def predict(self, inputs: Any) -> Any:
            if next(iter(inputs.values())).shape[0] > 1:
                raise InferenceFailed("m", "1", "fixed batch")
            return {}

        def unload(self) -> None:
            pass

    batched = (TensorSpec("x", "float32", ("batch", 4)),)
    fixed = (TensorSpec("x", "float32", (1, 4)),)
    slow = INLINE_MAX_SECONDS * 2
    assert _inline_elements(batched, NoBatch64(), slow) == 0  # too slow even for batch 1
    quarter = INLINE_MAX_SECONDS / 4
    assert _inline_elements(batched, NoBatch64(), quarter) == 16  # batch 1 scaled: 4 rows
    assert _inline_elements(fixed, NoBatch64(), quarter) == 16
