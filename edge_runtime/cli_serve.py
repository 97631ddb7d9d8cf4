"""`edge-runtime serve`, `edge-runtime batch` and `edge-runtime settings`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from edge_runtime.cliopts import (
    config_opt,
    load_settings,
    settings_options,
    store_opt,
    warn_password_in_argv,
)
from edge_runtime.settings import unknown_env

log = logging.getLogger("edge_runtime.cli")


@click.command("serve")
@config_opt
@settings_options
def serve_cmd(config: Path | None, **kw: Any) -> None:
    """Serve the store's active models over HTTP (KServe V2, TF-Serving, /predict).

    Every setting is a flag, a TOML key (--config) and an EDGE_* variable of the same name
    (`edge-runtime settings` lists them)."""
    from edge_runtime.daemon import Daemon, resolve_profile
    from edge_runtime.extras import require
    from edge_runtime.host import usable_cpus
    from edge_runtime.profiles import serve_defaults
    from edge_runtime.settings import ServeSettings

    first = load_settings(config, **dict(kw))
    profile = resolve_profile(first)
    settings = ServeSettings.load(config=config, overrides=kw,
                                  base=serve_defaults(profile, cpus=usable_cpus()))
    if settings.http_server == "uvicorn":
        require("uvicorn", feature="--http-server uvicorn", extra="uvicorn")
    if settings.fleet_url:
        require("paho", feature="--fleet-url", extra="mqtt")
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in unknown_env():
        log.warning("ignoring %s: no setting has that name (`edge-runtime settings` lists "
                    "them)", name)
    if settings.fleet_url:
        settings.fleet_mqtt()  # a bad URL or password file: one error line before serving
        warn_password_in_argv("--fleet-url", kw.get("fleet_url"),
                              "--fleet-password-file or EDGE_FLEET_PASSWORD")
    Daemon(settings, profile).run()


@click.command("batch")
@click.argument("name")
@click.argument("input_path", type=click.Path(path_type=Path))
@click.argument("output_path", type=click.Path(path_type=Path))
@store_opt
@config_opt
@click.option("--version", default=None, help="Model version (default: the active one).")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--progress/--no-progress", default=True)
def batch_cmd(name: str, input_path: Path, output_path: Path, store: Path | None,
              config: Path | None, version: str | None, chunk_rows: int, progress: bool) -> None:
    """Run NAME over INPUT (.npy, .npz, .csv, .parquet) into OUTPUT, streamed in chunks."""
    from edge_runtime.batch import run_batch
    from edge_runtime.runtime import Runtime

    settings = load_settings(config, store=store, drift=False)
    with Runtime(settings=settings) as rt:
        n = run_batch(rt, name, input_path, output_path, version=version,
                      chunk_rows=chunk_rows, progress=progress)
    click.echo(f"wrote {n} rows to {output_path}")


@click.command("settings")
@click.option("--markdown", is_flag=True, help="The README's table (Markdown).")
def settings_cmd(markdown: bool) -> None:
    """Every serve setting: its TOML key, flag, EDGE_* variable, default and meaning."""
    from edge_runtime.settings_table import markdown_table, text_table

    click.echo(markdown_table() if markdown else text_table())


COMMANDS = (serve_cmd, batch_cmd, settings_cmd)
