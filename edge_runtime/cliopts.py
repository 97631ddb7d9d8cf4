"""Options and helpers shared by the `edge-runtime` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edge_runtime.settings import ServeSettings

store_opt = click.option("--store", type=click.Path(path_type=Path), default=None,
                         help="Model store directory (default: edge-store, or EDGE_STORE).")
config_opt = click.option("--config", type=click.Path(path_type=Path), default=None,
                          help="TOML settings file.")
keys_opt = click.option("--trusted-keys", "trusted", multiple=True,
                        type=click.Path(path_type=Path),
                        help="Public key file or directory of *.pub files (repeatable).")
unsigned_opt = click.option("--allow-unsigned", is_flag=True, default=None,
                            help="Development only: accept unsigned packages.")
json_opt = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def load_settings(config: Path | None, **overrides: Any) -> ServeSettings:
    trusted = overrides.pop("trusted", None)
    if trusted:
        overrides["trusted_keys"] = trusted
    return ServeSettings.load(config=config, overrides=overrides)


def echo(doc: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(doc, indent=1, default=str) if as_json else text)
