"""32-bit ARM: pip installs without compiling anything, and the console scripts' first (and only)
line is the 64-bit sentence. scripts/pi-emulated --arch armhf proves the same on a real armhf
userland under qemu; these run everywhere."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from edge_runtime.errors import UnsupportedPlatform
from edge_runtime.platform_check import MESSAGE, check, is_32bit_arm

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
SENTENCE = ("edge-runtime needs a 64-bit OS (aarch64/x86_64): onnxruntime, ai-edge-litert and "
            "numpy publish no wheels for 32-bit ARM")
# What a device installs: the base, a backend and the MQTT link.
DEVICE_EXTRAS = ("onnx", "tflite", "mqtt", "fleet")
# Pure Python or with 32-bit ARM wheels on PyPI (orjson has armv7l wheels).
INSTALLABLE_ON_ARM32 = {"click", "orjson", "paho-mqtt", "edge-runtime"}


@pytest.mark.parametrize(("machine", "bits", "refused"), [
    ("armv7l", 32, True), ("armv6l", 32, True), ("armv8l", 32, True), ("ARMV7L", 32, True),
    ("aarch64", 32, True),  # 64-bit kernel, 32-bit userland
    ("aarch64", 64, False), ("x86_64", 64, False), ("arm64", 64, False), ("AMD64", 64, False),
])
def test_which_machines_are_refused(machine: str, bits: int, refused: bool) -> None:
    assert is_32bit_arm(machine, bits) is refused
    if refused:
        with pytest.raises(UnsupportedPlatform) as info:
            check(machine, bits)
        assert (info.value.machine, info.value.pointer_bits) == (machine, bits)
        assert str(info.value) == SENTENCE
    else:
        check(machine, bits)


def test_this_machine_passes() -> None:
    check()
    assert MESSAGE == SENTENCE


def _run_entry(entry: str, machine: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """A console script's entry in a fresh interpreter that reports MACHINE, with numpy and
    cryptography unimportable (as on armv7l after the marker-trimmed install)."""
    module, func = entry.split(":")
    code = (f"import platform, sys\nplatform.machine = lambda: {machine!r}\n"
            "sys.modules['numpy'] = None\nsys.modules['cryptography'] = None\n"
            f"sys.argv = ['prog', *{list(argv)!r}]\n"
            f"from {module} import {func}\n{func}()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)


def _scripts() -> dict[str, str]:
    scripts: dict[str, str] = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    return scripts


@pytest.mark.parametrize("script", ["edge-runtime", "edgectl"])
def test_console_scripts_say_the_sentence_first_on_armv7l(script: str) -> None:
    res = _run_entry(_scripts()[script], "armv7l", "status")
    assert (res.returncode, res.stdout, res.stderr) == (1, "", f"error: {SENTENCE}\n")


@pytest.mark.parametrize("script", ["edge-runtime", "edgectl"])
def test_console_scripts_run_the_cli_on_64_bit(script: str) -> None:
    module, func = _scripts()[script].split(":")
    code = (f"import sys\nsys.argv = [{script!r}, '--version']\n"
            f"from {module} import {func}\n{func}()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert "0.1.0" in res.stdout


def _device_requirements(machine: str) -> set[str]:
    """Distribution names pip would fetch for the device extras on MACHINE (one level deep:
    our own pyproject's markers are what this checks)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    env = {**default_environment(), "platform_machine": machine, "sys_platform": "linux"}
    names = set()
    for extra in ("", *DEVICE_EXTRAS):
        reqs = project["dependencies"] if not extra else project["optional-dependencies"][extra]
        for line in reqs:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({**env, "extra": extra}):
                names.add(req.name)
    return names


@pytest.mark.parametrize("machine", ["armv7l", "armv6l", "armv8l"])
def test_install_on_32_bit_arm_compiles_nothing(machine: str) -> None:
    assert _device_requirements(machine) <= INSTALLABLE_ON_ARM32


@pytest.mark.parametrize("machine", ["aarch64", "x86_64"])
def test_install_on_64_bit_keeps_every_dependency(machine: str) -> None:
    names = _device_requirements(machine)
    assert {"numpy", "cryptography", "onnxruntime", "ai-edge-litert", "httptools",
            "uvloop"} <= names
