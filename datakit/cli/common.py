"""Options and rendering shared by the commands: teacher selection, config building, tables."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

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


def spend_options(f: Callable) -> Callable:
    """--max-cost and --dry-run, for the commands that pay teachers (generate, respond, judge)."""
    options = [
        click.option("--max-cost", type=float, help="Stop before this run directory costs more than this many USD "
                     "(everything paid on it, all commands and sessions; the config's max_cost). Exit 1 when "
                     "reached; rerun with a higher budget to continue."),
        click.option("--dry-run", is_flag=True, help="Send nothing: print per teacher the requests, tokens, cost "
                     "online and in batch, and the wall time the rate limits imply."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def show_estimate(what: str, est: Any, cfg: DatakitConfig) -> None:
    """The --dry-run report: one column per teacher, then the assumptions it rests on."""
    console.print(table(f"{what} --dry-run", est.rows(cfg.concurrency)))
    tot = est.totals()
    console.print(f"nothing was sent. Total: {tot['requests']:,} requests, {tot['prompt_tokens']:,} tokens in, "
                  f"~{tot['completion_tokens']:,} tokens out; ~${tot['cost']:.4f} online, "
                  f"~${tot['batch_cost']:.4f} with --batch")
    for note in est.notes:
        console.print(f"[dim]assumed: {note}[/dim]")
    console.print("[dim]prompt tokens: the teacher's tokenizer where its config names one, else 1 per CJK "
                  "character and 1 per 4 other characters, +3 per message and request; wall time: "
                  "1 s + 50 tokens/s per request where concurrency decides[/dim]")


def stop_if_budget(message: str | None) -> None:
    """A command the budget stopped: its line, exit 1 (what was done is committed)."""
    if message:
        console.print(f"[yellow]{message}[/yellow]")
        sys.exit(1)


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


_USAGE_KEYS = {"cached": "cache_hits", "failed": "failures", "tok in": "prompt_tokens",
               "tok out": "completion_tokens", "USD": "cost"}


@dataclass
class StageEntry:
    """What a command fills in for the run's stage log (see :func:`stage`)."""
    counts: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    def usage_from(self, teacher_rows: list[dict[str, Any]]) -> None:
        """Per-teacher counters from ``TeacherPool.summary_rows()`` (first key: the name)."""
        for row in teacher_rows or []:
            items = list(row.items())
            if items:
                self.usage[str(items[0][1])] = {_USAGE_KEYS.get(k, k): v for k, v in items[1:]}


@contextmanager
def stage(name: str, inputs: list[Any], outputs: list[Any] | None = None) -> Iterator[StageEntry]:
    """Time a command and, when it finishes without error, append it to the stage log of the
    run directory its inputs or outputs belong to (nothing is logged for files outside a run)."""
    from datakit.runs import find_run_dir, log_stage

    entry = StageEntry(outputs=[str(o) for o in outputs or []])
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S"), time.monotonic()
    yield entry
    run = find_run_dir([*map(str, inputs), *entry.outputs])
    if run is None:
        return

    def rel(p: str) -> str:
        try:
            return os.path.relpath(os.path.abspath(p), run)
        except ValueError:
            return p

    log_stage(run, {"stage": name, "started": started, "wall_s": round(time.monotonic() - t0, 3),
                    "argv": ["datakit", *sys.argv[1:]], "inputs": [rel(str(i)) for i in inputs],
                    "outputs": [rel(o) for o in entry.outputs], "counts": entry.counts, "usage": entry.usage})
