"""Load a .tflite candidate so the pipeline's validation (agreement, error, latency) runs on it
exactly as on ONNX candidates: an adapter with the slice of onnxruntime's InferenceSession that
``converters.validate`` uses. A fixed-batch model runs any number of rows in chunks, as the
runtime's TFLite backend serves it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray

from converters.errors import CandidateFailed
from edge_runtime.backends.tflite import import_interpreter_module, run_in_batches


@dataclass(frozen=True)
class Arg:
    name: str
    shape: tuple[int | str, ...]


class TfliteSession:
    def __init__(self, content: bytes, *, threads: int = 1, label: str = "fp32") -> None:
        lib = import_interpreter_module()
        self._label = label
        try:
            interp = lib.Interpreter(model_content=content, num_threads=threads)
            self._runner = interp.get_signature_runner()
        except (ValueError, RuntimeError) as exc:
            raise CandidateFailed(label, f"TFLite cannot load it: {exc}") from exc
        ins = self._runner.get_input_details()
        self._inputs = [Arg(k, ("batch", *map(int, d["shape"][1:]))) for k, d in ins.items()]
        self._outputs = [Arg(k, ("batch", *map(int, d["shape"][1:])))
                         for k, d in self._runner.get_output_details().items()]
        self.batch = int(next(iter(ins.values()))["shape"][0])

    def get_inputs(self) -> list[Arg]:
        return self._inputs

    def get_outputs(self) -> list[Arg]:
        return self._outputs

    def run(self, names: Sequence[str] | None, feeds: dict[str, NDArray[Any]]
            ) -> list[NDArray[Any]]:
        try:
            out = run_in_batches(lambda part: dict(self._runner(**part)), feeds, self.batch)
        except (ValueError, RuntimeError) as exc:
            raise CandidateFailed(self._label, f"TFLite cannot run it: {exc}") from exc
        return [out[n] for n in (names or [o.name for o in self._outputs])]


def op_names(content: bytes) -> list[str]:
    """The TFLite ops of the model's main subgraph, in execution order."""
    lib = import_interpreter_module()
    return [str(op["op_name"]) for op in lib.Interpreter(model_content=content)._get_ops_details()]


def count_ops(content: bytes, name: str) -> int:
    return op_names(content).count(name)

