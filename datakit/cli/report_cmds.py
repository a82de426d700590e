"""CLI command ``report``: the data card of a run directory (datakit.report), with a rich
progress display while reading and a summary table at the end."""

from __future__ import annotations

from pathlib import Path

import click

from datakit.cli.common import console, pairs_table


def _n(v: int | None) -> str:
    return "n/a" if v is None else f"{v:,}"


def _fmt_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


@click.command("report")
@click.argument("run_dir", type=click.Path())
@click.option("--out", "out", type=click.Path(file_okay=False),
              help="Folder for card.html, card.md, report.json and the charts [default: RUN/card].")
def report_cmd(run_dir: str, out: str | None) -> None:
    """Write the data card of RUN_DIR: funnel, data shape, judge, lineage and cost, validation."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from datakit.report import build_report

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as prog:
        task = prog.add_task("report", total=None)

        def progress(what: str, done: int, total: int) -> None:
            prog.update(task, description=f"reading {what}", completed=done, total=total)

        def status(msg: str) -> None:
            prog.update(task, description=msg, completed=0, total=None)

        res = build_report(Path(run_dir), Path(out) if out else None, progress=progress, status=status)
    s, rep = res.report["summary"], res.report
    rows = [("accepted records", _n(s["accepted_records"])), ("candidates proposed", _n(s["candidates_proposed"])),
            ("acceptance rate", _fmt_pct(s["acceptance_rate"])), ("records judged", _n(s["records_judged"])),
            ("SFT rows / DPO pairs", f"{_n(s['sft_rows'])} / {_n(s['dpo_pairs'])}"),
            ("validation runs", len(rep["validation"])), ("warnings", len(rep["warnings"])),
            ("seconds", f"{res.seconds:.1f}"), ("card", str(res.out / "card.html")),
            ("markdown / numbers", f"{res.out / 'card.md'} / {res.out / 'report.json'}")]
    console.print(pairs_table(f"report {rep['run']}", rows))
    for w in rep["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)


COMMANDS = [report_cmd]
