"""The backend boundary: a backend loads a model file into a ``LoadedModel`` that predicts.

A runtime is three methods, MLServer style: ``Backend.load``, ``LoadedModel.predict`` and
``LoadedModel.unload``. ``predict`` receives arrays that the caller has already validated against
the manifest (names, dtypes, shapes) and returns every manifest output by name. It may be called
from several threads at once. Load failures raise ``SwapError``; run failures raise
``InferenceFailed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from numpy.typing import NDArray

from edge_runtime.errors import ConfigError, SwapError
from edge_runtime.manifest import Manifest

Arrays = Mapping[str, NDArray[Any]]
T = TypeVar("T")


@dataclass(frozen=True)
class BackendOptions:
    #: Threads one inference may use (onnxruntime intra-op, TFLite num_threads); 0 = default.
    intra_op_threads: int = 1
    #: Threads running independent graph branches in parallel (onnxruntime only); 0 = default.
    inter_op_threads: int = 1
    #: Backend-specific settings. Each backend reads the keys it knows and ignores the others, so
    #: one options object fits every backend. onnx: ``graph_optimization_level`` ("disable",
    #: "basic", "extended", "all"), ``execution_mode`` ("sequential", "parallel"), and any
    #: ``session.*`` onnxruntime config entry. tflite: ``xnnpack`` (bool), ``pool_size``
    #: (interpreters, int >= 1), ``signature_key`` (str).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"backend option {name}: {value!r} is not an int >= 0")


class LoadedModel(Protocol):
    def predict(self, inputs: Arrays) -> dict[str, NDArray[Any]]: ...

    def unload(self) -> None: ...


class Backend(Protocol):
    name: str

    def load(self, model_path: Path, manifest: Manifest, options: BackendOptions) -> LoadedModel:
        ...


def extra_option(manifest: Manifest, options: BackendOptions, key: str, default: T) -> T:
    """``options.extra[key]`` if set, checked to have the type of ``default``."""
    value = options.extra.get(key, default)
    kind = type(default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SwapError(manifest.name, manifest.version,
                        f"backend option {key}={value!r} is not a {kind.__name__}")
    return value
