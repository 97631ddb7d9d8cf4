"""Validate a converted model against the fp32 original: size, latency, agreement, error."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from converters import onnx_model
from converters.data import Dataset


@dataclass(frozen=True)
class Budget:
    """What a candidate may lose against fp32: top-1 points, or max-abs error for values."""

    max_accuracy_drop: float = 1.0
    max_abs_error: float | None = None  # default: 1% of the fp32 output's standard deviation
    task: str = "auto"  # classification | regression | auto (2-D float outputs are class scores)

    def describe(self) -> str:
        tol = "1% of the fp32 std" if self.max_abs_error is None else f"{self.max_abs_error:g}"
        return f"top-1 drop <= {self.max_accuracy_drop:g} points; max-abs <= {tol} for values"


@dataclass(frozen=True)
class OutputReport:
    name: str
    kind: str  # class | value
    top1_agreement: float | None
    accuracy: float | None
    max_abs: float
    max_rel: float
    tolerance: float | None


@dataclass
class CandidateReport:
    precision: str
    size_bytes: int
    size_ratio: float
    latency_ms: dict[str, float]
    outputs: list[OutputReport]
    within_budget: bool = True
    chosen: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fixed_batch(sess: Any) -> int | None:
    dims = [i.shape[0] for i in sess.get_inputs() if i.shape]
    fixed = [d for d in dims if isinstance(d, int)]
    return fixed[0] if fixed else None


def predict_all(sess: Any, data: Dataset, label: str, batch: int = 256) -> dict[str, NDArray[Any]]:
    batch = fixed_batch(sess) or batch
    parts: list[dict[str, Any]] = []
    for start in range(0, data.n, batch):
        feeds = {k: v[start:start + batch] for k, v in data.inputs.items()}
        parts.append(onnx_model.run(sess, feeds, label))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def latency(sess: Any, data: Dataset, batch: int, *, budget_s: float = 0.4,
            max_iters: int = 300) -> tuple[float, float]:
    """p50/p95 in ms of one inference at this batch size, within a time budget."""
    batch = fixed_batch(sess) or batch
    reps = -(-batch // data.n)
    feeds = {k: np.concatenate([v] * reps)[:batch] for k, v in data.inputs.items()}
    names = [o.name for o in sess.get_outputs()]
    for _ in range(3):
        sess.run(names, feeds)
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_iters and (len(times) < 10 or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        sess.run(names, feeds)
        times.append(time.perf_counter() - t0)
    p50, p95 = np.percentile(times, [50, 95]) * 1000.0
    return float(p50), float(p95)


def is_class_output(array: NDArray[Any], task: str = "auto") -> bool:
    if task == "regression":
        return False
    return (array.ndim == 2 and array.shape[1] >= 2 and array.dtype.kind == "f") or (
        array.ndim == 1 and array.dtype.kind in "iu"
    )


def _top1(array: NDArray[Any]) -> NDArray[Any]:
    return array.argmax(axis=1) if array.ndim == 2 else array


def compare(
    reference: dict[str, NDArray[Any]],
    candidate: dict[str, NDArray[Any]],
    labels: NDArray[Any] | None,
    budget: Budget,
) -> list[OutputReport]:
    reports = []
    for name, ref in reference.items():
        got = candidate[name]
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        max_abs = float(diff.max()) if diff.size else 0.0
        denom = np.maximum(np.abs(ref.astype(np.float64)), 1e-6)
        max_rel = float((diff / denom).max()) if diff.size else 0.0
        if is_class_output(ref, budget.task):
            agree = float(np.mean(_top1(got) == _top1(ref)))
            acc = None if labels is None else float(np.mean(_top1(got) == labels))
            reports.append(OutputReport(name, "class", agree, acc, max_abs, max_rel, None))
        else:
            tol = budget.max_abs_error
            if tol is None:
                tol = max(0.01 * float(np.std(ref.astype(np.float64))), 1e-6)
            reports.append(OutputReport(name, "value", None, None, max_abs, max_rel, tol))
    return reports


def within_budget(cand: list[OutputReport], fp32: list[OutputReport], budget: Budget) -> bool:
    drop = budget.max_accuracy_drop / 100.0
    base = {o.name: o for o in fp32}
    for out in cand:
        if out.kind == "class":
            assert out.top1_agreement is not None
            if out.top1_agreement < 1.0 - drop:
                return False
            ref_acc = base[out.name].accuracy
            if out.accuracy is not None and ref_acc is not None and ref_acc - out.accuracy > drop:
                return False
        elif out.tolerance is not None and out.max_abs > out.tolerance:
            return False
    return True


def measure(
    precision: str,
    model_bytes: bytes,
    data: Dataset,
    reference: dict[str, NDArray[Any]] | None,
    budget: Budget,
    *,
    fp32_size: int,
    batch_n: int,
    threads: int = 1,
    session: Any = None,
) -> tuple[CandidateReport, dict[str, NDArray[Any]]]:
    """Load and run the model (every candidate, before it can be packaged) and measure it.

    ``session``: an already loaded model with the slice of onnxruntime's InferenceSession used
    here (``get_inputs``, ``get_outputs``, ``run``); default: onnxruntime on ``model_bytes``.
    """
    sess = session or onnx_model.session(model_bytes, threads=threads, label=precision)
    outputs = predict_all(sess, data, precision)
    b1 = latency(sess, data, 1)
    bn = latency(sess, data, batch_n)
    cmp = compare(reference if reference is not None else outputs, outputs, data.labels, budget)
    report = CandidateReport(
        precision=precision,
        size_bytes=len(model_bytes),
        size_ratio=len(model_bytes) / fp32_size,
        latency_ms={"b1_p50": b1[0], "b1_p95": b1[1], f"b{batch_n}_p50": bn[0],
                    f"b{batch_n}_p95": bn[1]},
        outputs=cmp,
    )
    return report, outputs
