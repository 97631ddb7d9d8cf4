"""Real conversions of small models trained here, through the library API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters import examples, sources
from converters.errors import CalibrationRequired, NoCandidateWithinBudget
from converters.pipeline import ConvertRequest, convert
from converters.quantize import QuantOptions
from converters.validate import Budget
from edge_runtime.package import REFERENCE_STATS, VALIDATION, open_package
from tests.conftest import Keys

pytestmark = pytest.mark.convert


@pytest.fixture(scope="module")
def mlp_source() -> sources.Source:
    return sources.from_sklearn(examples.train_digits_mlp(), description="digits-mlp")


def request(tmp_path: Path, keys: Keys, files: dict[str, Path], precision: str,
            **kw: object) -> ConvertRequest:
    return ConvertRequest(name="digits", version="1", precision=precision, out_dir=tmp_path,
                          signer=keys.signer, calibration=files["calib"],
                          validation=files["valid"], **kw)  # type: ignore[arg-type]


def run_model(pkg_path: Path, keys: Keys, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    pkg = open_package(pkg_path, keys.trust)
    sess = ort.InferenceSession(pkg.read(pkg.manifest.model_file))
    return list(sess.run(None, {pkg.manifest.inputs[0].name: x}))


def test_auto_on_mlp_picks_within_budget(tmp_path: Path, keys: Keys, mlp_source: sources.Source,
                                         digits_files: dict[str, Path]) -> None:
    logs: list[str] = []
    result = convert(mlp_source, request(tmp_path, keys, digits_files, "auto"), log=logs.append)
    assert {c.precision for c in result.candidates} == {"fp32", "fp16", "int8-dynamic",
                                                         "int8-static"}
    assert result.chosen.within_budget
    assert any(m.startswith("chose ") for m in logs)
    # The rule (converters/auto.py), checked on the latencies this run measured: the smallest
    # candidate within budget whose batch-1 p50 is within 1.25x the fastest one's. (Which one
    # that is depends on timings of ~0.02 ms: int8 usually, not on a loaded machine.)
    good = [c for c in result.candidates if c.within_budget]
    fastest = min(c.latency_ms["b1_p50"] for c in good)
    assert result.chosen.latency_ms["b1_p50"] <= 1.25 * fastest
    for c in good:
        if c.size_bytes < result.chosen.size_bytes:
            assert c.latency_ms["b1_p50"] > 1.25 * fastest, c.precision
    pkg = open_package(result.package, keys.trust)
    assert pkg.manifest.precision == result.chosen.precision
    assert pkg.manifest.task == "classification"
    assert pkg.manifest.source["kind"] == "sklearn"
    report = pkg.read_json(VALIDATION)
    assert report["chosen"] == result.chosen.precision and report["samples"] == 497
    stats = pkg.read_json(REFERENCE_STATS)
    assert len(stats["features"]) == 64
    assert {o["output"] for o in stats["outputs"]} == {"label", "probabilities"}


def test_int8_static_agreement_and_sizes(tmp_path: Path, keys: Keys, mlp_source: sources.Source,
                                         digits_files: dict[str, Path]) -> None:
    sizes = {}
    for precision in ("fp32", "fp16", "int8-static"):
        result = convert(mlp_source, request(tmp_path, keys, digits_files, precision),
                         log=lambda _m: None)
        sizes[precision] = result.chosen.size_bytes
        result.package.rename(tmp_path / f"{precision}.edgepkg")
        if precision == "int8-static":
            probs = next(o for o in result.chosen.outputs if o.name == "probabilities")
            assert probs.top1_agreement is not None and probs.top1_agreement >= 0.99
    assert sizes["int8-static"] <= 0.30 * sizes["fp32"]
    assert sizes["fp16"] <= 0.52 * sizes["fp32"]
    x, _ = examples.digits()
    (label, probs), = [run_model(tmp_path / "int8-static.edgepkg", keys, x[:5])]
    assert label.shape == (5,) and probs.shape == (5, 10)


def test_per_channel_entropy_and_csv_data(tmp_path: Path, keys: Keys,
                                          mlp_source: sources.Source,
                                          digits_files: dict[str, Path]) -> None:
    req = ConvertRequest(
        name="digits", version="2", precision="int8-static", out_dir=tmp_path, signer=None,
        calibration=digits_files["calib_npy"], validation=digits_files["valid_csv"],
        label_column="label", quant=QuantOptions(per_channel=True, calibration_method="entropy"),
    )
    result = convert(mlp_source, req, log=lambda _m: None)
    label = next(o for o in result.chosen.outputs if o.name == "label")
    assert label.accuracy is not None and label.accuracy > 0.85
    assert open_package(result.package, None, allow_unsigned=True).signed_by is None


def test_static_without_calibration_refused(tmp_path: Path, keys: Keys,
                                            mlp_source: sources.Source) -> None:
    req = ConvertRequest(name="d", version="1", precision="int8-static", out_dir=tmp_path,
                         signer=keys.signer)
    with pytest.raises(CalibrationRequired):
        convert(mlp_source, req, log=lambda _m: None)
    assert list(tmp_path.iterdir()) == []


def test_no_candidate_within_budget(tmp_path: Path, keys: Keys, mlp_source: sources.Source,
                                    digits_files: dict[str, Path]) -> None:
    # int8 only, and a budget no int8 model meets: a regression-style max-abs of zero on the
    # probabilities cannot apply, so demand exact top-1 accuracy and zero drop of a value output
    req = request(tmp_path, keys, digits_files, "auto", auto_candidates=("int8-dynamic",),
                  budget=Budget(max_accuracy_drop=0.0))
    try:
        result = convert(mlp_source, req, log=lambda _m: None)
    except NoCandidateWithinBudget as exc:
        assert exc.tried == ["int8-dynamic"]
        assert list(tmp_path.iterdir()) == []
    else:  # int8 happened to agree 100%: then it must have been within budget
        assert result.chosen.within_budget


def test_regressor_uses_max_abs_budget(tmp_path: Path, keys: Keys) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    src = sources.from_sklearn(Ridge().fit(x, y))
    req = ConvertRequest(name="diab", version="1", precision="auto", out_dir=tmp_path / "o",
                         signer=keys.signer, calibration=tmp_path / "x.npy",
                         budget=Budget(max_abs_error=1e-9),
                         auto_candidates=("fp16", "int8-static"))
    with pytest.raises(NoCandidateWithinBudget):
        convert(src, req, log=lambda _m: None)
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []
    req = ConvertRequest(name="diab", version="1", precision="auto", out_dir=tmp_path / "o",
                         signer=keys.signer, calibration=tmp_path / "x.npy")
    result = convert(src, req, log=lambda _m: None)
    assert result.manifest.task == "regression"
    out = result.chosen.outputs[0]
    assert out.kind == "value" and out.tolerance is not None and out.max_abs <= out.tolerance


@pytest.mark.torch
def test_torch_cnn_export_and_int8(tmp_path: Path, keys: Keys) -> None:
    pytest.importorskip("torch", reason="torch is installed by ./scripts/test")
    x, y = examples.digits()
    np.savez(tmp_path / "calib.npz", input=x[:300].reshape(-1, 1, 8, 8))
    np.savez(tmp_path / "valid.npz", input=x[1300:].reshape(-1, 1, 8, 8), labels=y[1300:])
    src = sources.from_torch(examples.trained_digits_cnn(), (1, 1, 8, 8), description="cnn")
    assert src.kind == "torch"
    req = ConvertRequest(name="cnn", version="1", precision="int8-static", out_dir=tmp_path,
                         signer=keys.signer, calibration=tmp_path / "calib.npz",
                         validation=tmp_path / "valid.npz")
    result = convert(src, req, log=lambda _m: None)
    out = result.chosen.outputs[0]
    assert out.top1_agreement is not None and out.top1_agreement >= 0.99
    assert out.accuracy is not None and out.accuracy > 0.9
    assert result.chosen.size_ratio <= 0.30
    pkg = open_package(result.package, keys.trust)
    assert pkg.manifest.inputs[0].shape == ("batch", 1, 8, 8)
