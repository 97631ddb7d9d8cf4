from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from edge_runtime.backends import BackendOptions
from edge_runtime.errors import ConfigError
from edge_runtime.profiles import (
    PROFILES_DIR,
    DeviceProfile,
    available_profiles,
    backend_options,
    detect_profile_name,
    load_profile,
)

SHIPPED = ("arm64", "rpi4", "rpi5", "x86_64")


def test_shipped_profiles_are_found_and_complete() -> None:
    assert available_profiles() == SHIPPED
    for name in SHIPPED:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.description
        assert profile.intra_op_threads <= profile.cores
        assert set(profile.preferred_formats) == {"onnx", "tflite"}
        # Every field is set by the file, so no shipped profile silently relies on a default.
        text = (PROFILES_DIR / f"{name}.toml").read_text()
        keys = ["description", "arch", "cores", "memory_mb", "preferred_formats",
                "intra_op_threads", "inter_op_threads", "interval_s", "max_telemetry_rows",
                "max_bytes"]
        assert all(f"\n{k} = " in text or text.startswith(f"{k} = ") for k in keys), name


@pytest.mark.parametrize(("name", "arch", "cores", "memory_mb", "first_format"), [
    ("rpi4", "aarch64", 4, 4096, "tflite"), ("rpi5", "aarch64", 4, 8192, "tflite"),
    ("arm64", "aarch64", 4, 2048, "tflite"), ("x86_64", "x86_64", 4, 8192, "onnx")])
def test_shipped_profile_values(name: str, arch: str, cores: int, memory_mb: int,
                                first_format: str) -> None:
    profile = load_profile(name)
    assert (profile.arch, profile.cores, profile.memory_mb) == (arch, cores, memory_mb)
    assert profile.preferred_formats[0] == first_format


def test_backend_options_from_profile() -> None:
    profile = load_profile("rpi5")
    options = backend_options(profile)
    assert options == BackendOptions(intra_op_threads=3, inter_op_threads=1,
                                     extra={"session.intra_op.allow_spinning": "0"})
    assert backend_options(DeviceProfile(name="bare")) == BackendOptions()


def test_by_path_and_search_dirs_first(tmp_path: Path) -> None:
    (tmp_path / "rpi4.toml").write_text('description = "our pi"\ncores = 2\n')
    local = load_profile("rpi4", search_dirs=[tmp_path])
    assert (local.description, local.cores) == ("our pi", 2)
    assert load_profile(str(tmp_path / "rpi4.toml")) == local
    assert available_profiles([tmp_path]) == SHIPPED
    # Fields the file leaves out take the documented defaults.
    defaults = DeviceProfile(name="rpi4")
    for f in fields(DeviceProfile):
        if f.name not in ("description", "cores"):
            assert getattr(local, f.name) == getattr(defaults, f.name), f.name


def test_full_file_sets_every_field(tmp_path: Path) -> None:
    path = tmp_path / "board.toml"
    path.write_text("""
description = "test board"
arch = "riscv64"
cores = 8
memory_mb = 512
preferred_formats = ["onnx"]
[backend]
intra_op_threads = 0
inter_op_threads = 2
[backend.extra]
xnnpack = false
"session.x" = "1"
[telemetry]
interval_s = 5
[storage]
max_telemetry_rows = 7
max_bytes = 1024
""")
    assert load_profile(str(path)) == DeviceProfile(
        name="board", description="test board", arch="riscv64", cores=8, memory_mb=512,
        preferred_formats=("onnx",), intra_op_threads=0, inter_op_threads=2,
        backend_extra={"xnnpack": False, "session.x": "1"}, telemetry_interval_s=5.0,
        max_telemetry_rows=7, max_storage_bytes=1024)


@pytest.mark.parametrize("name", ["jetson", "../rpi4", "", "rpi4 "])
def test_unknown_names_are_config_errors(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile(name)
    message = str(info.value)
    assert "\n" not in message
    if "/" not in name:
        assert f"unknown device profile {name!r}" in message
        assert "known: arm64, rpi4, rpi5, x86_64" in message


def test_missing_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: device profile file not found"):
        load_profile(str(tmp_path / "nope.toml"))


@pytest.mark.parametrize(("text", "field"), [
    ("cores = 4\ncores = 5\n", None),
    ("cores = [4\n", None),
    ("cors = 4\n", "cors"),
    ("[telemetry]\ninterval = 4\n", "telemetry.interval"),
    # Behaviour, not hardware: refused, with where to set it instead.
    ("[batching]\nmax_batch_size = 4\n", "batching.max_batch_size"),
    ("[cache]\nentries = 10\n", "cache.entries"),
    ('cores = "4"\n', "cores"),
    ("cores = 0\n", "cores"),
    ("cores = true\n", "cores"),
    ("memory_mb = 1.5\n", "memory_mb"),
    ('preferred_formats = ["onnx", "coreml"]\n', "preferred_formats"),
    ('preferred_formats = ["onnx", "onnx"]\n', "preferred_formats"),
    ("preferred_formats = []\n", "preferred_formats"),
    ("[backend]\nintra_op_threads = -1\n", "backend.intra_op_threads"),
    ("[backend.extra]\nnested = { a = 1 }\n", "backend.extra"),
    ("[telemetry]\ninterval_s = 0\n", "telemetry.interval_s"),
    ('[storage]\nmax_bytes = "1G"\n', "storage.max_bytes"),
])
def test_bad_files_are_one_line_config_errors(tmp_path: Path, text: str,
                                              field: str | None) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert (f"field {field!r}" in message) if field else "invalid TOML" in message


def test_undecodable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read device profile"):
        load_profile(str(path))


@pytest.mark.parametrize(("machine", "model", "expected"), [
    ("aarch64", "Raspberry Pi 5 Model B Rev 1.0", "rpi5"),
    ("aarch64", "Raspberry Pi 4 Model B Rev 1.4", "rpi4"),
    ("armv7l", "Raspberry Pi 4 Model B Rev 1.2", "rpi4"),  # 32-bit OS on a Pi 4
    ("aarch64", "Raspberry Pi 400 Rev 1.0", "rpi4"),
    ("aarch64", "Raspberry Pi Compute Module 4 Rev 1.0", "rpi4"),
    ("aarch64", "Raspberry Pi Compute Module 5 Rev 1.0", "rpi5"),
    ("aarch64", "Raspberry Pi 3 Model B Plus Rev 1.3", "arm64"),
    ("aarch64", "NVIDIA Jetson Orin Nano Developer Kit", "arm64"),
    ("aarch64", "", "arm64"),
    ("arm64", "", "arm64"),
    ("x86_64", "", "x86_64"),
    ("AMD64", "", "x86_64"),
    ("riscv64", "", "x86_64"),
])
def test_detect_profile_name(machine: str, model: str, expected: str) -> None:
    assert detect_profile_name(machine=machine, model=model) == expected
    assert expected in available_profiles()


def test_detect_reads_the_device_tree_model_file(tmp_path: Path) -> None:
    model_file = tmp_path / "model"
    model_file.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert detect_profile_name(machine="aarch64", model_path=model_file) == "rpi5"
    missing = tmp_path / "absent"
    assert detect_profile_name(machine="aarch64", model_path=missing) == "arm64"
    assert detect_profile_name(model_path=missing) in SHIPPED  # this machine's own arch
