"""What every CLI of this project does at its edge: one line and exit code 1 for our errors."""

from __future__ import annotations

import sys

import click

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.settings import CliSettings

EXIT_ERROR = 1
EXIT_INTERNAL = 2


def run_cli(group: click.Group) -> None:
    debug = CliSettings.from_env().debug
    try:
        group.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_ERROR)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgeRuntimeError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # a bug: still one line, traceback with EDGE_DEBUG=1
        if debug:
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} (EDGE_DEBUG=1 for the "
                   "traceback)", err=True)
        sys.exit(EXIT_INTERNAL)
