from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters import examples


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Calibration (no labels) and validation (with labels) data as .npz, .npy and .csv."""
    d = tmp_path_factory.mktemp("digits")
    x, y = examples.digits()
    np.savez(d / "calib.npz", input=x[:400])
    np.savez(d / "valid.npz", input=x[1300:], labels=y[1300:])
    np.save(d / "calib.npy", x[:400])
    header = ",".join([f"p{i}" for i in range(64)] + ["label"])
    np.savetxt(d / "valid.csv", np.column_stack([x[1300:], y[1300:]]), delimiter=",",
               header=header, comments="", fmt="%.6g")
    return {"calib": d / "calib.npz", "valid": d / "valid.npz", "calib_npy": d / "calib.npy",
            "valid_csv": d / "valid.csv"}


@pytest.fixture(scope="session")
def mlp_joblib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import joblib

    path = tmp_path_factory.mktemp("mlp") / "mlp.joblib"
    joblib.dump(examples.train_digits_mlp(), path)
    return path
