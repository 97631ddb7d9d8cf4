"""Model backends: ``get_backend("onnx" | "tflite" | "fake")``; a manifest's format names one.

Libraries are imported only when their backend is asked for, so a device that installs one extra
never imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge_runtime.backends.base import Backend, BackendOptions, LoadedModel
from edge_runtime.backends.fake import FakeBackend
from edge_runtime.errors import ConfigError
from edge_runtime.manifest import Manifest

__all__ = ["BACKEND_NAMES", "Backend", "BackendOptions", "FakeBackend", "LoadedModel",
           "backend_for", "get_backend"]

BACKEND_NAMES = ("fake", "onnx", "tflite")


def get_backend(name: str, *, registry: Mapping[str, Backend] | None = None) -> Backend:
    """The backend called ``name``: from ``registry`` when it has one, else a built-in one.

    Raises ``BackendUnavailable`` (with the pip extra to install) when the library is missing and
    ``ConfigError`` for an unknown name.
    """
    if registry is not None and name in registry:
        return registry[name]
    if name == "onnx":
        from edge_runtime.backends.onnx import OnnxBackend, import_onnxruntime

        import_onnxruntime()
        return OnnxBackend()
    if name == "tflite":
        from edge_runtime.backends.tflite import TfliteBackend, import_interpreter_module

        import_interpreter_module()
        return TfliteBackend()
    if name == "fake":
        return FakeBackend()
    known = sorted({*BACKEND_NAMES, *(registry or {})})
    raise ConfigError(f"unknown backend {name!r} (known: {', '.join(known)})")


def backend_for(manifest: Manifest, *, registry: Mapping[str, Backend] | None = None) -> Backend:
    """The backend for the manifest's model format ("onnx" or "tflite")."""
    return get_backend(manifest.format, registry=registry)
