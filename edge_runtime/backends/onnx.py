"""onnxruntime backend (CPU). ``import onnxruntime`` happens only when a model is loaded.

A run that onnxruntime refuses because of the input (INVALID_ARGUMENT, or a kernel's shape
check: an image size the graph cannot take though the manifest's dynamic dimensions allow it)
raises ``InputInvalid`` naming the input and onnxruntime's reason, which the API answers with
400; anything else is a fault of the model or the runtime: ``InferenceFailed`` (500).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from edge_runtime.backends.base import Arrays, BackendOptions, extra_option
from edge_runtime.errors import (
    BackendUnavailable,
    EdgeRuntimeError,
    InferenceFailed,
    InputInvalid,
    PayloadInvalid,
    SwapError,
)
from edge_runtime.manifest import Manifest

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
           "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
_ERROR_LOGS_ONLY = 3
# onnxruntime's status text for a kernel that refused its input's shape
_SHAPE_WORDS = re.compile(r"shape|dimension|broadcast|rank|axis|reshape", re.IGNORECASE)
_NODE = re.compile(r"running (\w+) node")
_SOURCE = re.compile(r"^\S+\.(?:h|cc|cpp):\d+ ")  # "path/file.h:563 " before the message


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable("onnx", hint="pip install edge-runtime[onnx]") from exc
    return onnxruntime


class OnnxBackend:
    name = "onnx"

    def load(self, model_path: Path, manifest: Manifest, options: BackendOptions) -> OnnxModel:
        ort = import_onnxruntime()
        so = session_options(ort, manifest, options)
        try:
            session = ort.InferenceSession(
                str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise SwapError(manifest.name, manifest.version,
                            f"onnxruntime cannot load {model_path.name}: {exc}") from exc
        check_names(manifest, session)
        return OnnxModel(session, manifest)


def session_options(ort: Any, manifest: Manifest, options: BackendOptions) -> Any:
    """Session options for serving: fixed thread pools, full graph optimisation, quiet logs."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.log_severity_level = _ERROR_LOGS_ONLY
    level = extra_option(manifest, options, "graph_optimization_level", "all")
    mode = extra_option(manifest, options, "execution_mode", "sequential")
    for key, value, table in (("graph_optimization_level", level, _LEVELS),
                              ("execution_mode", mode, _MODES)):
        if value not in table:
            raise SwapError(manifest.name, manifest.version,
                            f"backend option {key}={value!r} is not one of {sorted(table)}")
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    so.execution_mode = getattr(ort.ExecutionMode, _MODES[mode])
    for key, value in options.extra.items():
        if key.startswith("session."):
            so.add_session_config_entry(key, str(value))
    return so


def check_names(manifest: Manifest, session: Any) -> None:
    have_in = {i.name for i in session.get_inputs()}
    have_out = {o.name for o in session.get_outputs()}
    want_in = {t.name for t in manifest.inputs}
    missing_out = [t.name for t in manifest.outputs if t.name not in have_out]
    if have_in != want_in or missing_out:
        raise SwapError(
            manifest.name, manifest.version,
            f"model inputs {sorted(have_in)} / outputs {sorted(have_out)} do not match the "
            f"manifest inputs {sorted(want_in)} / outputs {[t.name for t in manifest.outputs]}")


class OnnxModel:
    """A loaded session. ``InferenceSession.run`` is thread-safe, so no lock is taken."""

    def __init__(self, session: Any, manifest: Manifest) -> None:
        self._session: Any = session
        self._name = manifest.name
        self._version = manifest.version
        # Only the manifest's outputs are computed; extra model outputs are pruned by the run.
        self._output_names = [t.name for t in manifest.outputs]
        # The C++ session's run, without the Python wrapper's per-call checks (input names,
        # CUDA graph capture, OrtValue ownership): the data plane has validated the inputs
        # against the manifest, whose names check_names matched with the model's, and on the
        # CPU provider there is no fallback to take. ~3 us a request; the wrapper otherwise.
        inner = getattr(session, "_sess", None)
        self._run: Any = inner.run if inner is not None and hasattr(inner, "run") else (
            session.run)

    def predict(self, inputs: Arrays) -> dict[str, NDArray[Any]]:
        run = self._run  # a local reference keeps a concurrent unload() harmless
        if run is None:
            raise InferenceFailed(self._name, self._version, "model is unloaded")
        feed = inputs if isinstance(inputs, dict) else dict(inputs)
        try:
            results = run(self._output_names, feed, None)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise self._run_error(exc, list(feed)) from exc
        return dict(zip(self._output_names, results, strict=True))

    def _run_error(self, exc: Exception, inputs: list[str]) -> EdgeRuntimeError:
        reason = input_refusal(exc)
        if reason is None:
            return InferenceFailed(self._name, self._version, str(exc))
        named = [n for n in inputs if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", reason)]
        if len(inputs) == 1 or len(named) == 1:
            return InputInvalid((named or inputs)[0], f"the model refused it: {reason}")
        names = ", ".join(map(repr, inputs))
        return PayloadInvalid(f"inputs {names}: the model refused them: {reason}")

    def unload(self) -> None:
        self._session = self._run = None


def input_refusal(exc: Exception) -> str | None:
    """onnxruntime's reason when ``exc`` refuses the input rather than reports a fault."""
    kind = type(exc).__name__
    text = str(exc)
    if kind == "InvalidArgument":
        return text.split("INVALID_ARGUMENT : ", 1)[-1].strip()
    if kind != "Fail" or "Status Message: " not in text:
        return None
    node = _NODE.search(text)
    detail = _SOURCE.sub("", text.split("Status Message: ", 1)[1].strip())
    if " was false. " in detail:  # "<function> <condition> was false. <what it means>"
        detail = detail.split(" was false. ", 1)[1]
    if not _SHAPE_WORDS.search(detail):
        return None
    return f"{node.group(1)} node: {detail}" if node else detail
