from __future__ import annotations

import subprocess
import sys

import pytest

from edge_runtime import backends
from edge_runtime.backends import FakeBackend, backend_for, get_backend
from edge_runtime.backends.onnx import OnnxBackend
from edge_runtime.backends.tflite import TfliteBackend
from edge_runtime.errors import BackendUnavailable, ConfigError
from tests.edge_runtime.backends.helpers import make_manifest


def test_public_surface() -> None:
    assert sorted(backends.__all__) == [
        "BACKEND_NAMES", "Backend", "BackendOptions", "FakeBackend", "LoadedModel",
        "backend_for", "get_backend"]
    for name in backends.__all__:
        assert hasattr(backends, name)


def test_built_in_backends_by_name_and_by_manifest_format() -> None:
    assert isinstance(get_backend("onnx"), OnnxBackend)
    assert isinstance(get_backend("tflite"), TfliteBackend)
    assert isinstance(get_backend("fake"), FakeBackend)
    assert isinstance(backend_for(make_manifest("tflite")), TfliteBackend)
    assert {get_backend(n).name for n in backends.BACKEND_NAMES} == set(backends.BACKEND_NAMES)


def test_registry_overrides_built_ins() -> None:
    fake = FakeBackend(name="onnx")
    assert get_backend("onnx", registry={"onnx": fake}) is fake
    assert backend_for(make_manifest("onnx"), registry={"onnx": fake}) is fake
    assert isinstance(get_backend("tflite", registry={"onnx": fake}), TfliteBackend)


def test_unknown_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'openvino'.*known: custom, fake, onnx, tflite"):
        get_backend("openvino", registry={"custom": FakeBackend()})


def test_importing_the_package_imports_no_backend_library() -> None:
    code = ("import sys, edge_runtime.backends, edge_runtime.profiles; "
            "print(sorted(m for m in ('onnxruntime', 'ai_edge_litert') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("name", "blocked", "extra"), [
    ("onnx", "onnxruntime", "[onnx]"), ("tflite", "ai_edge_litert", "[tflite]")])
def test_missing_library_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch, name: str,
                                                blocked: str, extra: str) -> None:
    # A None entry in sys.modules makes `import blocked` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, blocked, None)
    monkeypatch.setitem(sys.modules, f"{blocked}.interpreter", None)
    with pytest.raises(BackendUnavailable) as info:
        get_backend(name)
    assert info.value.backend == name
    assert info.value.hint == f"pip install edge-runtime{extra}"
