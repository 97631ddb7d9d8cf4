"""TFLite backend through ``ai_edge_litert`` (``tflite_runtime`` on numpy < 2), imported lazily.

A TFLite interpreter is not thread-safe, so a model keeps a small pool of interpreters (one by
default, ``pool_size`` in the backend options) and each predict borrows one. Inputs and outputs
are bound by signature names when the model has a signature, else by tensor name, else by order.
A model with a fixed batch dimension (the converter's TFLite export fixes it to 1) serves any
number of rows in chunks of that batch.

An input the interpreter refuses (a shape its graph cannot be prepared for, though the
manifest's dynamic dimensions allow it, or a tensor it cannot take) raises ``InputInvalid``
(400); a failure while running is ``InferenceFailed`` (500).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
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
from edge_runtime.manifest import Manifest, TensorSpec

_HINT = "pip install edge-runtime[tflite]"
Run = Callable[["_Slot", Arrays], dict[str, NDArray[Any]]]


def import_interpreter_module() -> Any:
    """The module holding ``Interpreter`` and ``OpResolverType``."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        if int(np.__version__.split(".")[0]) >= 2:
            raise BackendUnavailable("tflite", hint=_HINT) from None
        try:  # tflite_runtime wheels are built against numpy 1.x only
            interpreter = importlib.import_module("tflite_runtime.interpreter")
        except ImportError as exc:
            raise BackendUnavailable("tflite", hint=_HINT) from exc
    return interpreter


class TfliteBackend:
    name = "tflite"

    def load(self, model_path: Path, manifest: Manifest, options: BackendOptions) -> TfliteModel:
        lib = import_interpreter_module()
        pool_size = extra_option(manifest, options, "pool_size", 1)
        if pool_size < 1:
            _fail(manifest, f"backend option pool_size={pool_size} is not >= 1")
        xnnpack = extra_option(manifest, options, "xnnpack", True)
        resolver = (lib.OpResolverType.AUTO if xnnpack
                    else lib.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        try:
            content = model_path.read_bytes()
            interpreters = [
                lib.Interpreter(model_content=content, experimental_op_resolver_type=resolver,
                                num_threads=options.intra_op_threads or None)
                for _ in range(pool_size)]
        except (OSError, ValueError, RuntimeError) as exc:
            raise SwapError(manifest.name, manifest.version,
                            f"TFLite cannot load {model_path.name}: {exc}") from exc
        key = extra_option(manifest, options, "signature_key", "")
        if interpreters[0].get_signature_list():
            slots = [_signature_slot(i, manifest, key) for i in interpreters]
            return TfliteModel(slots, manifest, _run_signature)
        slots = [_tensor_slot(i, manifest) for i in interpreters]
        return TfliteModel(slots, manifest, _run_tensors)


@dataclass
class _Slot:
    interpreter: Any
    runner: Any = None  # SignatureRunner, when the model has a signature
    inputs: dict[str, int] = field(default_factory=dict)  # manifest name -> tensor index
    outputs: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # current input shapes
    batch: int | None = None  # the model's fixed batch size, None when it is dynamic


def _signature_slot(interpreter: Any, manifest: Manifest, key: str) -> _Slot:
    signatures = interpreter.get_signature_list()
    if not key:
        key = next(iter(signatures)) if len(signatures) == 1 else "serving_default"
    if key not in signatures:
        _fail(manifest, f"signature {key!r} not in {sorted(signatures)}")
    runner = interpreter.get_signature_runner(key)
    slot = _Slot(interpreter, runner=runner)
    slot.inputs = _bind(manifest, "input", manifest.inputs, runner.get_input_details(),
                        exact=True)
    slot.outputs = _bind(manifest, "output", manifest.outputs, runner.get_output_details(),
                         exact=False)
    slot.batch = _fixed_batch(runner.get_input_details().values())
    return slot


def _fixed_batch(details: Any) -> int | None:
    """The batch size every input fixes (``shape_signature[0] != -1``), else None."""
    sizes = {int(d["shape_signature"][0]) if len(d["shape_signature"]) else -1 for d in details}
    if len(sizes) != 1 or -1 in sizes:
        return None
    size = sizes.pop()
    return size if size > 0 else None


def run_in_batches(run: Callable[[Arrays], dict[str, NDArray[Any]]], inputs: Arrays,
                   batch: int) -> dict[str, NDArray[Any]]:
    """``run`` on chunks of ``batch`` rows (the last one padded by repeating its final row),
    results concatenated back to the number of rows given."""
    n = int(next(iter(inputs.values())).shape[0])
    if n == batch:
        return run(inputs)
    parts: list[dict[str, NDArray[Any]]] = []
    for start in range(0, n, batch):
        chunk = {k: v[start:start + batch] for k, v in inputs.items()}
        short = batch - int(next(iter(chunk.values())).shape[0])
        if short:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], short, axis=0)])
                     for k, v in chunk.items()}
        out = run(chunk)
        parts.append({k: v[:batch - short] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _tensor_slot(interpreter: Any, manifest: Manifest) -> _Slot:
    ins = {d["name"]: d for d in interpreter.get_input_details()}
    outs = {d["name"]: d for d in interpreter.get_output_details()}
    slot = _Slot(interpreter)
    slot.inputs = _bind(manifest, "input", manifest.inputs, ins, exact=True, by_order=True)
    slot.outputs = _bind(manifest, "output", manifest.outputs, outs, exact=False, by_order=True)
    interpreter.allocate_tensors()
    current = {d["index"]: tuple(int(n) for n in d["shape"])
               for d in interpreter.get_input_details()}
    slot.batch = _fixed_batch(interpreter.get_input_details())
    slot.shapes = {name: current[index] for name, index in slot.inputs.items()}
    return slot


def _bind(manifest: Manifest, kind: str, specs: Sequence[TensorSpec], details: dict[str, Any],
          *, exact: bool, by_order: bool = False) -> dict[str, int]:
    """Manifest name -> tensor index: by name, else by position when ``by_order``.

    ``exact``: the model must have no other tensors of this kind (extra outputs are fine).
    """
    names = [s.name for s in specs]
    if all(n in details for n in names) and (not exact or len(names) == len(details)):
        chosen = [details[n] for n in names]
    elif by_order and len(names) == len(details):
        chosen = list(details.values())
    else:
        _fail(manifest, f"model {kind}s {sorted(details)} do not match the manifest {names}")
    for spec, d in zip(specs, chosen, strict=True):
        if np.dtype(d["dtype"]) != np.dtype(spec.dtype):
            _fail(manifest, f"{kind} {spec.name!r} is {np.dtype(d['dtype'])} in the model, "
                  f"{spec.dtype} in the manifest (quantized I/O is not supported)")
    return {spec.name: int(d["index"]) for spec, d in zip(specs, chosen, strict=True)}


def _fail(manifest: Manifest, reason: str) -> NoReturn:
    raise SwapError(manifest.name, manifest.version, reason)


def _run_signature(slot: _Slot, inputs: Arrays) -> dict[str, NDArray[Any]]:
    # The runner resizes inputs itself; TFLite skips a resize to the current shape.
    results = slot.runner(**inputs)
    slot.shapes = {name: array.shape for name, array in inputs.items()}
    return {name: results[name] for name in slot.outputs}


def _run_tensors(slot: _Slot, inputs: Arrays) -> dict[str, NDArray[Any]]:
    interp = slot.interpreter
    changed = False
    for name, index in slot.inputs.items():
        shape = inputs[name].shape
        if slot.shapes.get(name) != shape:  # resize only when the batch size changes
            interp.resize_tensor_input(index, shape)
            slot.shapes[name] = shape
            changed = True
    if changed:
        interp.allocate_tensors()
    for name, index in slot.inputs.items():
        interp.set_tensor(index, inputs[name])
    interp.invoke()
    return {name: interp.get_tensor(index) for name, index in slot.outputs.items()}


class TfliteModel:
    def __init__(self, slots: list[_Slot], manifest: Manifest, run: Run) -> None:
        self._free = slots
        self._cond = threading.Condition()
        self._run = run
        self._name = manifest.name
        self._version = manifest.version
        self._first_input = manifest.inputs[0].name
        self._unloaded = False

    def predict(self, inputs: Arrays) -> dict[str, NDArray[Any]]:
        slot = self._acquire(inputs[self._first_input].shape)
        try:
            if slot.batch is None:
                return self._run(slot, inputs)
            return run_in_batches(lambda part: self._run(slot, part), inputs, slot.batch)
        except Exception as exc:  # the interpreter raises ValueError/RuntimeError
            slot.shapes.clear()  # a failed resize/allocate must not be taken as done
            raise self._run_error(exc, list(inputs)) from exc
        finally:
            self._release(slot)

    def _run_error(self, exc: Exception, inputs: list[str]) -> EdgeRuntimeError:
        text = str(exc).strip()
        # ValueError: set_tensor refused the array; "failed to prepare": no plan for the
        # resized shapes. Both are about this input; a failure to invoke is not.
        if not isinstance(exc, ValueError) and "failed to prepare" not in text:
            return InferenceFailed(self._name, self._version, text)
        if len(inputs) == 1:
            return InputInvalid(inputs[0], f"the model refused it: {text}")
        names = ", ".join(map(repr, inputs))
        return PayloadInvalid(f"inputs {names}: the model refused them: {text}")

    def unload(self) -> None:
        with self._cond:
            self._unloaded = True
            self._free = []  # interpreters still borrowed are dropped on release
            self._cond.notify_all()

    def _acquire(self, shape: tuple[int, ...]) -> _Slot:
        """Borrow an interpreter, preferring one already sized for this input shape."""
        with self._cond:
            while not self._free and not self._unloaded:
                self._cond.wait()
            if self._unloaded:
                raise InferenceFailed(self._name, self._version, "model is unloaded")
            for i, slot in enumerate(self._free):
                if slot.shapes.get(self._first_input) == shape:
                    return self._free.pop(i)
            return self._free.pop()

    def _release(self, slot: _Slot) -> None:
        with self._cond:
            if not self._unloaded:
                self._free.append(slot)
                self._cond.notify()
