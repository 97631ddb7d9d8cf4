"""`edgectl`: the fleet admin CLI (also hosts `convert` and `keys`)."""

from __future__ import annotations

from pathlib import Path

import click

from edge_runtime.clikit import run_cli
from edge_runtime.signing import generate_keypair


@click.group()
@click.version_option(package_name="edge-runtime")
def cli() -> None:
    """Fleet admin CLI for edge-runtime."""


@cli.group()
def keys() -> None:
    """Package signing keys (Ed25519)."""


@keys.command("generate")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("keys"),
              show_default=True)
@click.option("--name", default="signing", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing key pair.")
def keys_generate(out_dir: Path, name: str, force: bool) -> None:
    """Write NAME.key (private, 0600) and NAME.pub (give this one to devices)."""
    priv, pub = generate_keypair(out_dir, name, overwrite=force)
    click.echo(f"private key: {priv}\npublic key:  {pub}")


def _add_convert() -> None:
    try:
        from converters.cli import convert_cmd
    except ImportError:  # the convert extra is not installed: keep the rest of the CLI usable
        return
    cli.add_command(convert_cmd)


_add_convert()


def _add_fleet() -> None:
    from fleet import cli_fleet, cli_rollout, cli_sim, cli_stats

    for cmd in (cli_fleet.serve_cmd, cli_fleet.devices, cli_fleet.models, cli_fleet.deploy_cmd,
                cli_rollout.rollout, cli_sim.sim_cmd, cli_stats.drift, cli_stats.alerts,
                cli_stats.experiment):
        cli.add_command(cmd)
    from fleet.cli_manager import manager

    cli.add_command(manager)


_add_fleet()


def main() -> None:
    run_cli(cli)


if __name__ == "__main__":
    main()
