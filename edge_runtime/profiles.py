"""Device profiles: what a board's hardware implies (threads, backend tuning, telemetry and
storage bounds), from TOML.

A profile never turns on behaviour the user did not ask for: dynamic batching and the response
cache change latency and answers, so they are settings (config file, flags), not profile fields,
and a profile that sets them is refused. Threads are capped at the CPUs this process may use
(``serve_defaults``).

The shipped profiles are package data (``edge_runtime/device_profiles/<name>.toml``, read with
importlib.resources, so an installed wheel has them). A file may leave out any field; the
defaults below are the conservative ones of a small single-core device. Layout::

    description = "..."        arch = "aarch64"        cores = 4        memory_mb = 4096
    preferred_formats = ["tflite", "onnx"]
    [backend]   intra_op_threads, inter_op_threads, and [backend.extra] (see BackendOptions)
    [telemetry] interval_s
    [storage]   max_telemetry_rows, max_bytes
"""

from __future__ import annotations

import platform
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from edge_runtime.backends.base import BackendOptions
from edge_runtime.errors import ConfigError
from edge_runtime.manifest import FORMATS

#: The shipped profiles (a Traversable: a directory, or a zip member when installed zipped).
PROFILES_DIR: Traversable = files("edge_runtime") / "device_profiles"
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    #: One line for humans.
    description: str = ""
    #: platform.machine() of the device: "aarch64", "x86_64".
    arch: str = "x86_64"
    #: CPU cores available to the runtime.
    cores: int = 1
    #: RAM in MiB.
    memory_mb: int = 1024
    #: Model formats to pick, best first, when a model is published in several.
    preferred_formats: tuple[str, ...] = ("onnx", "tflite")
    #: Threads one inference may use (BackendOptions.intra_op_threads).
    intra_op_threads: int = 1
    #: Threads for independent graph branches (BackendOptions.inter_op_threads).
    inter_op_threads: int = 1
    #: Backend-specific settings passed through as BackendOptions.extra.
    backend_extra: Mapping[str, Any] = field(default_factory=dict)
    #: Seconds between telemetry reports.
    telemetry_interval_s: float = 60.0
    #: Telemetry rows kept on the device while offline; the oldest are dropped first.
    max_telemetry_rows: int = 100_000
    #: Bytes the local store may use.
    max_storage_bytes: int = 64 * 1024 * 1024


# TOML key -> (field, type, minimum). Floats accept ints.
_KEYS: dict[str, tuple[str, type, float | None]] = {
    "description": ("description", str, None),
    "arch": ("arch", str, None),
    "cores": ("cores", int, 1),
    "memory_mb": ("memory_mb", int, 1),
    "preferred_formats": ("preferred_formats", list, None),
    "backend.intra_op_threads": ("intra_op_threads", int, 0),
    "backend.inter_op_threads": ("inter_op_threads", int, 0),
    "backend.extra": ("backend_extra", dict, None),
    "telemetry.interval_s": ("telemetry_interval_s", float, 0.001),
    "storage.max_telemetry_rows": ("max_telemetry_rows", int, 0),
    "storage.max_bytes": ("max_storage_bytes", int, 0),
}


# Behaviour, not hardware: where each belongs instead (see the module docstring).
_BEHAVIOUR = {
    "batching": "max_batch_size/max_queue_delay_ms in the config file or --max-batch-size",
    "cache": "cache_entries in the config file or --cache-entries",
}


def load_profile(name_or_path: str, *, search_dirs: Sequence[Path] = ()) -> DeviceProfile:
    """A profile from a ``.toml`` path, or by name from ``search_dirs`` then the shipped ones."""
    path = _find(name_or_path, search_dirs)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read device profile ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
    return DeviceProfile(name=path.name.removesuffix(".toml"), **_fields(path, data))


def available_profiles(search_dirs: Sequence[Path] = ()) -> tuple[str, ...]:
    """Names that ``load_profile`` finds."""
    dirs: list[Traversable] = [*search_dirs, PROFILES_DIR]
    return tuple(sorted({p.name.removesuffix(".toml") for d in dirs if d.is_dir()
                         for p in d.iterdir() if p.name.endswith(".toml") and p.is_file()}))


def _find(name_or_path: str, search_dirs: Sequence[Path]) -> Traversable:
    if name_or_path.endswith(".toml") or "/" in name_or_path or "\\" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"{path}: device profile file not found")
        return path
    if _NAME_RE.match(name_or_path):
        dirs: list[Traversable] = [*search_dirs, PROFILES_DIR]
        for d in dirs:
            if (d / f"{name_or_path}.toml").is_file():
                return d / f"{name_or_path}.toml"
    known = ", ".join(available_profiles(search_dirs)) or "none"
    raise ConfigError(f"unknown device profile {name_or_path!r} (known: {known})")


def _fields(path: Traversable, data: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in _items(data):
        section = key.split(".", 1)[0]
        if section in _BEHAVIOUR:
            raise ConfigError(f"{path}: field {key!r}: a profile describes hardware and does "
                              f"not turn on {section}; set {_BEHAVIOUR[section]}")
        if key not in _KEYS:  # typos are errors, not silently ignored
            raise ConfigError(f"{path}: unknown field {key!r} (known: {', '.join(_KEYS)})")
        fld, kind, minimum = _KEYS[key]
        values[fld] = _check(path, key, value, kind, minimum)
    return values


def _items(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf; ``backend.extra`` is one leaf."""
    for key, value in data.items():
        dotted = prefix + key
        if isinstance(value, dict) and dotted not in _KEYS:
            yield from _items(value, dotted + ".")
        else:
            yield dotted, value


def _check(path: Traversable, key: str, value: Any, kind: type, minimum: float | None) -> Any:
    def bad(reason: str) -> ConfigError:
        return ConfigError(f"{path}: field {key!r}: {value!r} {reason}")

    if kind is list:
        if (not isinstance(value, list) or not value or len(set(value)) != len(value)
                or not all(v in FORMATS for v in value)):
            raise bad(f"is not a non-empty list of distinct formats from {FORMATS}")
        return tuple(value)
    if kind is dict:
        if not all(isinstance(v, str | int | float | bool) for v in value.values()):
            raise bad("must map names to strings, numbers or booleans")
        return dict(value)
    if kind is str:
        if not isinstance(value, str):
            raise bad("is not a string")
        return value
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or (kind is int and not isinstance(value, int))):
        raise bad(f"is not {'an integer' if kind is int else 'a number'}")
    if minimum is not None and value < minimum:
        raise bad(f"is below the minimum {minimum}")
    return float(value) if kind is float else value


def detect_profile_name(*, machine: str | None = None, model: str | None = None,
                        model_path: Path = DEVICE_TREE_MODEL) -> str:
    """The shipped profile for this device: the board model first, then the CPU architecture.

    ``machine`` defaults to ``platform.machine()`` and ``model`` to the device tree's model string
    (``model_path``, absent on most non-ARM machines).
    """
    if model is None:
        model = _read_model(model_path)
    board = _BOARD_RE.search(model)
    if board and board.group(1) in _BOARDS:
        return _BOARDS[board.group(1)]
    machine = platform.machine() if machine is None else machine
    return _MACHINES.get(machine.lower(), "x86_64")


# "Raspberry Pi 4 Model B Rev 1.4", "Raspberry Pi 400", "Raspberry Pi Compute Module 5 Rev 1.0"
_BOARD_RE = re.compile(r"Raspberry Pi (?:Compute Module )?(\d)")
_BOARDS = {"4": "rpi4", "5": "rpi5"}
_MACHINES = {"aarch64": "arm64", "arm64": "arm64"}


def _read_model(path: Path) -> str:
    try:
        return path.read_bytes().rstrip(b"\0").decode("utf-8", "replace")
    except OSError:
        return ""


def backend_options(profile: DeviceProfile) -> BackendOptions:
    return BackendOptions(intra_op_threads=profile.intra_op_threads,
                          inter_op_threads=profile.inter_op_threads,
                          extra=dict(profile.backend_extra))


def serve_defaults(profile: DeviceProfile, *, cpus: int) -> dict[str, Any]:
    """The serve settings a profile provides (config, env and flags override them).

    Threads are the profile's, capped at ``cpus``, the CPUs this process may use
    (``edge_runtime.host.usable_cpus``): more threads than CPUs only adds contention. A profile's
    0 ("backend default") becomes ``cpus``, since backends count the machine's cores, not ours.
    """
    threads = profile.intra_op_threads
    return {"profile": profile.name,
            "intra_op_threads": min(threads, cpus) if threads else cpus,
            "telemetry_interval_s": profile.telemetry_interval_s,
            "telemetry_max_rows": profile.max_telemetry_rows,
            "telemetry_max_bytes": profile.max_storage_bytes}
