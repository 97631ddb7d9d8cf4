"""Packages shared by the fleet integration tests (built once per session: conversions are slow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Keys, build_package, gemm_model
from tests.integration.conftest import DaemonFactory

BIG_IN, BIG_OUT = 512, 512  # ~1.2 MB package: 19 chunks of 64 KiB


@pytest.fixture(scope="session")
def fleet_pkgs(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> dict[str, Path]:
    """digits 1, 2, 3 signed; 4 unsigned; 5 signed and big (many artifact chunks)."""
    out = tmp_path_factory.mktemp("fleet-pkgs")
    pkgs = {v: build_package(out, keys.signer, name="digits", version=v, seed=int(v))
            for v in ("1", "2", "3")}
    pkgs["4"] = build_package(out, None, name="digits", version="4", seed=4)
    pkgs["5"] = build_package(out, keys.signer, name="digits", version="5", n_in=BIG_IN,
                              model=gemm_model(n_in=BIG_IN, n_out=BIG_OUT, seed=5))
    return pkgs


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[DaemonFactory]:
    """Real `edge-runtime serve` processes, stopped after the test."""
    factory = DaemonFactory(tmp_path)
    yield factory
    factory.close()
