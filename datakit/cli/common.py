"""Options and rendering shared by the commands: teacher selection, config building, tables."""

from __future__ import annotations

from typing import Any, Callable

import click
from rich.console import Console
from rich.table import Table

from datakit.config import DatakitConfig, load_config, single_teacher
from datakit.errors import UserError

console = Console(stderr=True)


def teacher_options(f: Callable) -> Callable:
    """--config / --base-url / --model / --api-key-env / --concurrency, for any command that
    talks to teachers. With none of them the bundled local teacher is used."""
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="TOML config file (several teachers, prices, limits, generation settings)."),
        click.option("--base-url", help="One OpenAI-compatible teacher: its base URL (e.g. https://api.deepseek.com/v1)."),
        click.option("--model", help="Model name for --base-url."),
        click.option("--api-key-env", help="Environment variable holding the key for --base-url (never the key itself)."),
        click.option("--concurrency", type=int, help="Requests in flight at once (default 8)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def config_from_options(config_path: str | None, base_url: str | None, model: str | None,
                        api_key_env: str | None, concurrency: int | None,
                        overrides: dict[str, Any] | None = None) -> DatakitConfig:
    """Build the config from a TOML file and command-line overrides (CLI wins)."""
    ov = dict(overrides or {})
    if base_url or model:
        if not (base_url and model):
            raise UserError("--base-url and --model go together", field="--base-url" if model else "--model")
        ov["teachers"] = [single_teacher(base_url, model, api_key_env)]
    elif api_key_env:
        raise UserError("--api-key-env needs --base-url and --model", field="--api-key-env")
    ov["concurrency"] = concurrency
    return load_config(config_path, ov)


def table(title: str, rows: list[dict[str, Any]]) -> Table:
    """Rows (dicts with the same keys) as a table with one column per row and one line per key:
    a few teachers with many counters stay readable in an 80-column terminal."""
    t = Table(title=title, title_justify="left")
    if not rows:
        return t
    keys = list(rows[0])
    t.add_column(str(keys[0]))
    for r in rows:
        t.add_column(str(r[keys[0]]), justify="right")
    for k in keys[1:]:
        t.add_row(k, *[_fmt(r.get(k)) for r in rows])
    return t


def _fmt(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def pairs_table(title: str, pairs: list[tuple[str, Any]]) -> Table:
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    for k, v in pairs:
        t.add_row(k, _fmt(v))
    return t
