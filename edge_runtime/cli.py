"""`edge-runtime`: the on-device daemon and its local commands.

install/activate/rollback talk to the running daemon of the store when there is one (so the
serving process does the blue-green swap), and work on the store directly otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_runtime import cli_models, cli_serve
from edge_runtime.clikit import run_cli
from edge_runtime.cliopts import json_opt, keys_opt, unsigned_opt
from edge_runtime.package import VALIDATION, Package, open_package
from edge_runtime.signing import TrustStore
from edge_runtime.textable import render


@click.group()
@click.version_option(package_name="edge-runtime")
def cli() -> None:
    """On-device runtime for edge-runtime model packages."""


@cli.command("inspect")
@click.argument("package", type=click.Path(path_type=Path))
@keys_opt
@unsigned_opt
@json_opt
def inspect_cmd(package: Path, trusted: tuple[Path, ...], allow_unsigned: bool | None,
                as_json: bool) -> None:
    """Verify PACKAGE (sha256 of every file, signature) and show its manifest."""
    pkg = open_package(package, TrustStore.load(trusted), allow_unsigned=bool(allow_unsigned))
    m = pkg.manifest
    if as_json:
        click.echo(json.dumps({"signed_by": pkg.signed_by, "manifest": m.to_dict()}, indent=1))
        return
    click.echo(f"{m.name} {m.version}  {m.format}/{m.precision}  task={m.task}  "
               f"signed_by={pkg.signed_by or 'UNSIGNED'}")
    rows = [["input", t.name, t.dtype, t.shape] for t in m.inputs]
    rows += [["output", t.name, t.dtype, t.shape] for t in m.outputs]
    click.echo(render(["", "name", "dtype", "shape"], rows))
    click.echo(f"validation: {_validation_line(pkg)}")


def _validation_line(pkg: Package) -> str:
    # The reader requires only the manifest and the files it lists; this report is optional.
    report = pkg.read_json(VALIDATION) if VALIDATION in pkg.manifest.files else None
    if not isinstance(report, dict) or not {"chosen", "reason"} <= report.keys():
        return "no report in this package"
    return f"chose {report['chosen']} ({report['reason']})"


for _cmd in (*cli_models.COMMANDS, *cli_serve.COMMANDS):
    cli.add_command(_cmd)


def main() -> None:
    run_cli(cli)


if __name__ == "__main__":
    main()
