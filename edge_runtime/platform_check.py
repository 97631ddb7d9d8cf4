"""32-bit ARM is refused up front, in one sentence, before anything compiled is imported.

onnxruntime, ai-edge-litert and numpy publish no wheels for 32-bit ARM (Raspberry Pi OS 32-bit,
armv6l/armv7l), so nothing would run there. pyproject.toml leaves the compiled dependencies out
on those machines (``platform_machine`` markers), so ``pip install edge-runtime[onnx]`` compiles
nothing and fails nothing, and the console scripts start here: the first thing ``edge-runtime``
and ``edgectl`` say is ``MESSAGE``.

A 64-bit kernel under a 32-bit userland reports ``aarch64`` but runs a 32-bit interpreter: the
pointer size tells it apart (the markers cannot; pip then finds no wheel for onnxruntime).
This module imports the standard library only: it runs where numpy is missing.
"""

from __future__ import annotations

import platform
import struct
import sys

from edge_runtime.errors import UnsupportedPlatform

MESSAGE = UnsupportedPlatform.MESSAGE
EXIT_ERROR = 1


def is_32bit_arm(machine: str, pointer_bits: int) -> bool:
    """``armv6l``/``armv7l``/``armv8l`` (a 32-bit userland's names), or a 64-bit ARM kernel
    running a 32-bit interpreter. ``arm64`` is macOS's 64-bit name."""
    m = machine.lower()
    return m.startswith("armv") or (m in ("aarch64", "arm64") and pointer_bits == 32)


def check(machine: str | None = None, pointer_bits: int | None = None) -> None:
    """Raise ``UnsupportedPlatform`` on 32-bit ARM (this machine unless both are given)."""
    m = platform.machine() if machine is None else machine
    bits = struct.calcsize("P") * 8 if pointer_bits is None else pointer_bits
    if is_32bit_arm(m, bits):
        raise UnsupportedPlatform(m, bits)


def refuse_or_continue() -> None:
    """The console scripts' first step: on 32-bit ARM, one error line and exit 1."""
    try:
        check()
    except UnsupportedPlatform as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def edge_runtime() -> None:
    """Console script ``edge-runtime``."""
    refuse_or_continue()
    from edge_runtime.cli import main

    main()
