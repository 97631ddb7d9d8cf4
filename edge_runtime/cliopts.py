"""Options and helpers shared by the `edge-runtime` commands."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import Field, fields
from pathlib import Path
from typing import Any, TypeVar

import click

from edge_runtime.protocol.link import password_in_url, redact_url
from edge_runtime.settings import DEPRECATED, ServeSettings, env_name, flag_name

F = TypeVar("F", bound=Callable[..., Any])

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


def _none_if_empty(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    return value or None


def setting_option(f: Field[Any], *, name: str | None = None, hidden: bool = False
                   ) -> Callable[[F], F]:
    """The flag of one ServeSettings field: ``--field-name``, typed by the annotation."""
    kind = str(f.type)
    flag = flag_name(name or f.name)
    help_text = f"{f.metadata['doc']} [{env_name(f.name)}]"
    kw: dict[str, Any] = {"default": None, "help": help_text, "hidden": hidden}
    if kind.startswith("bool"):
        return click.option(f"{flag}/--no-{flag[2:]}", name or f.name, **kw)
    if "tuple[Path" in kind:
        kw.update(multiple=True, type=click.Path(path_type=Path), callback=_none_if_empty)
    elif "Path" in kind:
        kw["type"] = click.Path(path_type=Path)
    elif f.metadata.get("choices"):
        kw["type"] = click.Choice(list(f.metadata["choices"]))
    elif kind.startswith("int"):
        kw["type"] = int
    elif kind.startswith("float"):
        kw["type"] = float
    return click.option(flag, name or f.name, **kw)


def settings_options(func: F) -> F:
    """One flag per ServeSettings field (except TOML/environment-only ones), plus the
    deprecated spellings in ``DEPRECATED`` as hidden flags (``take_deprecated``)."""
    by_name = {f.name: f for f in fields(ServeSettings)}
    for old, new in reversed(DEPRECATED.items()):
        func = setting_option(by_name[new], name=old, hidden=True)(func)
    for f in reversed(fields(ServeSettings)):
        if f.metadata.get("flag", True):
            func = setting_option(f)(func)
    return func
