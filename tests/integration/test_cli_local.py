"""`edge-runtime install/activate/rollback/models/inspect` on a store with no daemon running.

Exit code 0 and a one-line report, or exit code 1 and a one-line `error: ...` on stderr (no
traceback). Most commands run through the console script's entry point in this process (fast);
``test_real_processes`` runs a few in fresh processes, as a user does.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import Keys, build_package
from tests.integration.support import edge, edge_here, one_line_error


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory, keys: Keys, other_keys: Keys
             ) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("cli-pkgs")
    pkgs = {v: build_package(out / v, keys.signer, version=v, seed=int(v)) for v in ("1", "2")}
    pkgs["unsigned"] = build_package(out / "unsigned", None, version="3")
    pkgs["other"] = build_package(out / "other", other_keys.signer, version="4")
    pkgs["tampered"] = out / "tampered.edgepkg"
    with zipfile.ZipFile(pkgs["1"]) as src, zipfile.ZipFile(pkgs["tampered"], "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"\0" if item.filename == "model.onnx" else data)
    (out / "junk.edgepkg").write_text("not a zip")
    pkgs["junk"] = out / "junk.edgepkg"
    return pkgs


def ok(*args: str | Path) -> str:
    proc = edge_here(*args)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout.strip()


def test_install_activate_rollback_on_the_store(tmp_path: Path, keys: Keys,
                                                packages: dict[str, Path]) -> None:
    store = str(tmp_path / "store")
    assert ok("models", "--store", store) == "no models installed"
    trust = ("--trusted-keys", str(keys.public))
    assert ok("install", packages["1"], "--store", store, *trust) == (
        "install gemm 1: installed  [via store]")
    assert ok("activate", "gemm", "1", "--store", store) == (
        "activate gemm 1: committed  [via store]")
    doc = json.loads(ok("install", packages["2"], "--store", store, *trust, "--json"))
    assert (doc["kind"], doc["name"], doc["version"], doc["state"]) == (
        "install", "gemm", "2", "installed")
    assert doc["history"] == ["verifying", "installing", "installed"]
    doc = json.loads(ok("activate", "gemm", "2", "--store", store, "--json"))
    assert (doc["state"], doc["previous"]) == ("committed", "1")
    assert doc["history"] == ["loading", "switching", "probation", "committed"]
    # activating the active version again keeps its rollback target
    assert json.loads(ok("activate", "gemm", "2", "--store", store, "--json"))["previous"] == "1"

    rows = json.loads(ok("models", "--store", store, "--json"))
    signer = keys.signer.key_id
    assert [(r["version"], r["active"], r["previous"], r["signed_by"]) for r in rows] == [
        ("1", False, True, signer), ("2", True, False, signer)]
    table = ok("models", "--store", store).splitlines()
    assert table[0].split() == ["name", "version", "format", "precision", "active", "rollback",
                                "signed", "by"]

    assert ok("rollback", "gemm", "--store", store) == (
        "rollback gemm 2: rolled_back (requested)  [via store]")
    rows = json.loads(ok("models", "--store", store, "--json"))
    assert [(r["version"], r["active"], r["previous"]) for r in rows] == [
        ("1", True, False), ("2", False, True)]


def test_errors_are_one_line_with_exit_code_1(tmp_path: Path, keys: Keys,
                                              packages: dict[str, Path]) -> None:
    store = str(tmp_path / "store")
    trust = ("--trusted-keys", str(keys.public))
    missing = tmp_path / "nope.edgepkg"
    line = one_line_error(edge_here("install", missing, "--store", store, *trust))
    assert str(missing) in line and "not a model package" in line
    assert "not a model package" in one_line_error(
        edge_here("install", packages["junk"], "--store", store, *trust))
    line = one_line_error(edge_here("install", packages["unsigned"], "--store", store, *trust))
    assert "install failed" in line and "package is not signed" in line
    line = one_line_error(edge_here("install", packages["other"], "--store", store, *trust))
    assert "which is not in the trusted keys" in line
    line = one_line_error(edge_here("install", packages["1"], "--store", store))  # no trusted keys
    assert "not in the trusted keys" in line
    line = one_line_error(edge_here("install", packages["tampered"], "--store", store, *trust))
    assert "sha256 of 'model.onnx'" in line

    assert one_line_error(edge_here("activate", "gemm", "1", "--store", store)) == (
        "error: model gemm version 1 not found")
    ok("install", packages["1"], "--store", store, *trust)
    assert one_line_error(edge_here("activate", "gemm", "9", "--store", store)) == (
        "error: model gemm version 9 not found")
    assert one_line_error(edge_here("rollback", "gemm", "--store", store)) == (
        "error: gemm: no previous version to roll back to")
    ok("activate", "gemm", "1", "--store", store)
    assert one_line_error(edge_here("rollback", "gemm", "--store", store)) == (
        "error: gemm: no previous version to roll back to")

    # nothing above changed the store: only gemm 1 is installed, and it is active
    rows = json.loads(ok("models", "--store", store, "--json"))
    assert [(r["name"], r["version"], r["active"]) for r in rows] == [("gemm", "1", True)]


def test_unsigned_needs_allow_unsigned(tmp_path: Path, packages: dict[str, Path]) -> None:
    store = str(tmp_path / "store")
    assert ok("install", packages["unsigned"], "--store", store, "--allow-unsigned") == (
        "install gemm 3: installed  [via store]")
    rows = json.loads(ok("models", "--store", store, "--json"))
    assert [(r["version"], r["signed_by"]) for r in rows] == [("3", None)]


def test_bad_config_file(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text("[serve]\nmax_body_bytez = 1\n")
    line = one_line_error(edge_here("models", "--store", tmp_path / "s", "--config", config))
    assert "unknown settings ['max_body_bytez']" in line


def test_inspect_verifies_the_package(keys: Keys, packages: dict[str, Path]) -> None:
    lines = ok("inspect", packages["1"], "--trusted-keys", keys.public).splitlines()
    assert lines[0].startswith("gemm 1  onnx/fp32")
    assert lines[0].endswith(f"signed_by={keys.signer.key_id}")
    assert "sha256 of 'model.onnx'" in one_line_error(
        edge_here("inspect", packages["tampered"], "--trusted-keys", keys.public))


def test_real_processes(tmp_path: Path, keys: Keys, packages: dict[str, Path]) -> None:
    store = tmp_path / "store"
    installed = edge("install", packages["1"], "--store", store, "--trusted-keys", keys.public)
    assert (installed.returncode, installed.stdout) == (
        0, "install gemm 1: installed  [via store]\n")
    line = one_line_error(edge("activate", "gemm", "9", "--store", store))
    assert line == "error: model gemm version 9 not found"
    line = one_line_error(edge("install", packages["unsigned"], "--store", store))
    assert "package is not signed (use --allow-unsigned only for development)" in line
