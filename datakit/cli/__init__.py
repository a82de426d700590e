"""The ``datakit`` command line: a thin click layer over the library.

Each command group lives in its own module and only parses options, calls the library and
renders with rich. Errors the user can fix are :class:`datakit.errors.UserError`: printed as
one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import click

from datakit import __version__
from datakit.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="datakit")
def cli() -> None:
    """Seed tasks in, curated fine-tuning data out."""


def _register() -> None:
    from datakit.cli import (curate_cmds, generate_cmds, judge_cmds, methods_cmds, report_cmds, train_cmds,
                             validate_cmds)

    for module in (generate_cmds, methods_cmds, curate_cmds, judge_cmds, train_cmds, validate_cmds, report_cmds):
        for command in module.COMMANDS:
            cli.add_command(command)
    from datakit.cli.view_cmds import view_cmd
    cli.add_command(view_cmd)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning user errors into one line and exit 2."""
    try:
        cli.main(args=argv, prog_name="datakit", standalone_mode=False)
    except UserError as e:
        click.echo(f"datakit: error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("datakit: aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:  # a bad or missing option: one line naming the command, not click's three
        where = f"{e.ctx.command_path}: " if e.ctx is not None else ""
        click.echo(f"datakit: error: {where}{e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("datakit: interrupted", err=True)
        sys.exit(130)
    except OSError as e:  # a full disk, a file size limit, a read-only place: one line, exit 2
        from datakit.errors import from_os_error

        err = from_os_error(e)
        if err is None:
            raise
        click.echo(f"datakit: error: {err}", err=True)
        sys.exit(err.exit_code)
    sys.exit(0)
