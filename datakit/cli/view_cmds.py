"""CLI command ``view``: review a run in the browser (a local web app; datakit.view)."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import click


def _default_reviewer() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "anonymous"


@click.command("view")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on. Anything but loopback needs --token.")
@click.option("--port", type=int, default=8765, show_default=True, help="Port (0: any free port).")
@click.option("--token", envvar="DATAKIT_VIEW_TOKEN",
              help="Require this token on every request ('auto': generate one; env DATAKIT_VIEW_TOKEN).")
@click.option("--reviewer", default=_default_reviewer, help="Name written with each verdict [default: your user name].")
@click.option("--min-margin", type=float, default=1.0, show_default=True,
              help="Score margin of the judge's DPO pair shown (as in judge/export).")
@click.option("--tie-break", "tie_break", default="none", show_default=True,
              help="Tie-break of the judge's DPO pair shown (as in judge/export).")
def view_cmd(run_dir: str, host: str, port: int, token: str | None, reviewer: str, min_margin: float,
             tie_break: str) -> None:
    """Browse RUN_DIR's records, candidates and judgements, and record human verdicts
    (RUN_DIR/reviews.jsonl) that filter, dedup, export and report honour."""
    from datakit.errors import UserError
    from datakit.judge.pairs import check_tie_break
    from datakit.view.serve import serve

    try:
        tb = check_tie_break(tie_break)
    except ValueError as e:
        raise UserError(str(e), field="--tie-break") from None
    if not 0 <= port <= 65535:
        raise UserError("must be 0 to 65535", field="--port")
    serve(Path(run_dir), host, port, token, reviewer[:100], min_margin, tb,
          lambda msg: click.echo(msg, err=True))
    os._exit(0)  # the index thread may still be reading a large run: nothing of it needs saving


COMMANDS = [view_cmd]
