"""Console script ``edgectl``: the 32-bit ARM refusal runs before the CLI imports cryptography
and numpy (see edge_runtime/platform_check.py)."""

from __future__ import annotations

from edge_runtime.platform_check import refuse_or_continue


def main() -> None:
    refuse_or_continue()
    from fleet.cli import main as cli_main

    cli_main()
