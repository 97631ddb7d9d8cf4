"""`edge-runtime serve` and `edge-runtime batch`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from edge_runtime.cliopts import (
    config_opt,
    keys_opt,
    load_settings,
    store_opt,
    unsigned_opt,
    warn_password_in_argv,
)


@click.command("serve")
@store_opt
@config_opt
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8080; 0 = any free one).")
@click.option("--uds", type=click.Path(path_type=Path), default=None,
              help="Also serve on this Unix domain socket.")
@click.option("--token", default=None, help="Bearer token (required off loopback).")
@click.option("--http-server", type=click.Choice(["builtin", "uvicorn"]), default=None,
              help="HTTP server (default builtin: edge_runtime.api.server).")
@keys_opt
@unsigned_opt
@click.option("--profile", default=None, help="Device profile name or TOML file.")
@click.option("--threads", "intra_op_threads", type=int, default=None)
@click.option("--max-batch-size", type=int, default=None, help="Dynamic batching (0 = off).")
@click.option("--max-queue-delay-ms", type=float, default=None)
@click.option("--cache-entries", type=int, default=None, help="LRU response cache (0 = off).")
@click.option("--monitoring/--no-monitoring", default=None)
@click.option("--drift/--no-drift", default=None)
@click.option("--drift-max-rows-per-s", type=click.FloatRange(min=0), default=None,
              help="Drift counting budget per version in rows/s (default 1000; 0 = none).")
@click.option("--drift-max-cpu", type=click.FloatRange(min=0, max=1), default=None,
              help="Drift counting budget per version, share of a core (default 0.02; 0 = none).")
@click.option("--telemetry-interval", "telemetry_interval_s", type=float, default=None)
@click.option("--log-level", default=None)
@click.option("--fleet-url", "fleet_url", default=None,
              help="Join a fleet: mqtt://[user@]host:port (or mqtts://).")
@click.option("--fleet-password-file", type=click.Path(path_type=Path), default=None,
              help="File holding the broker password (or EDGE_FLEET_PASSWORD).")
@click.option("--fleet", "fleet", default=None, help="Fleet name (default: default).")
@click.option("--device-id", default=None, help="Device id in the fleet (default: host name).")
@click.option("--group", "device_group", default=None)
@click.option("--tags", "device_tags", default=None, help="Comma-separated device tags.")
@click.option("--fleet-keys", multiple=True, type=click.Path(path_type=Path),
              callback=lambda _ctx, _param, value: value or None,
              help="Public key file or directory desired states must be signed with "
                   "(repeatable; default: the --trusted-keys).")
@click.option("--allow-unsigned-desired", is_flag=True, default=None,
              help="Development only: accept unsigned desired states.")
def serve_cmd(config: Path | None, **kw: Any) -> None:
    """Serve the store's active models over HTTP (KServe V2, TF-Serving, /predict)."""
    from edge_runtime.daemon import Daemon, resolve_profile
    from edge_runtime.extras import require
    from edge_runtime.host import usable_cpus
    from edge_runtime.profiles import serve_defaults
    from edge_runtime.settings import ServeSettings

    first = load_settings(config, **dict(kw))
    profile = resolve_profile(first)
    trusted = kw.pop("trusted", None)
    if trusted:
        kw["trusted_keys"] = trusted
    settings = ServeSettings.load(config=config, overrides=kw,
                                  base=serve_defaults(profile, cpus=usable_cpus()))
    if settings.http_server == "uvicorn":
        require("uvicorn", feature="--http-server uvicorn", extra="uvicorn")
    if settings.fleet_url:
        require("paho", feature="--fleet-url", extra="mqtt")
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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


COMMANDS = (serve_cmd, batch_cmd)
