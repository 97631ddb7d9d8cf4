"""Options and helpers shared by the `edge-runtime` commands."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from edge_runtime.protocol.link import password_in_url, redact_url
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


def warn_password_in_argv(flag: str, url: str | None, instead: str) -> None:
    """A password given in a command-line URL still works, but every local user can read it."""
    if url and password_in_url(url):
        logging.getLogger("edge_runtime.cli").warning(
            "%s %s: the broker password is visible in the process list; use %s", flag,
            redact_url(url), instead)
