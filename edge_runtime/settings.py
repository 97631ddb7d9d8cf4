"""Settings, declared once. The only module that reads the environment.

Each field is documented where it is declared; callers receive settings objects explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class CliSettings:
    #: EDGE_DEBUG=1: let unexpected exceptions show their traceback instead of one line.
    debug: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CliSettings:
        env = os.environ if env is None else env
        return cls(debug=env.get("EDGE_DEBUG", "") == "1")
