"""``datakit validate TRAIN_DIR``: base vs tuned model on the held-out split, judged (also run at
the end of ``datakit train``). The library is :mod:`datakit.train.validate`."""

from __future__ import annotations

from typing import Any

import click

from datakit.cli.common import config_from_options, console, teacher_options


def run_validation(train_dir: str, dk_cfg: Any, opts: Any, loaded: tuple | None = None) -> dict[str, Any]:
    """Run the validation with a progress bar for answering and judging; returns validation.json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from datakit.train.validate import validate

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=False)
    tasks: dict[str, Any] = {}

    def on_event(kind: str, d: dict) -> None:
        if kind == "notice":
            progress.console.print(f"[yellow]notice:[/] {d['message']}")
        elif kind == "phase":
            progress.console.print(f"[dim]{d['name']}…[/]")
        elif kind == "progress":
            if d["what"] not in tasks:
                tasks[d["what"]] = progress.add_task(d["what"], total=d["total"])
                progress.start()
            progress.update(tasks[d["what"]], completed=d["done"], total=d["total"])

    try:
        return validate(train_dir, dk_cfg, opts, on_event, loaded=loaded)
    finally:
        progress.stop()


def validation_rows(v: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Rows for a summary table: eval loss base → tuned, judge, counts, and the verdict line."""
    if not v:
        return []

    def f(x: float | None) -> str:
        return "—" if x is None else f"{x:.4f}"

    j = v["judge"]
    what = "held-out NLL of chosen replies" if v.get("method") == "dpo" else "held-out eval loss"
    return [
        (f"{what} base → tuned", f"{f(v['eval_loss']['base'])} → {f(v['eval_loss']['tuned'])}"),
        ("judge", f"{j['teacher']} ({j['model']})" + (" · bundled 135M: a smoke test, no quality claim"
                                                       if j["bundled"] else "")),
        ("tuned vs base: win / tie / loss", f"{v['wins']} / {v['ties']} / {v['losses']}"
         + (f" · {v['unparsed']} unparsed" if v["unparsed"] else "")
         + (f" · {v['disagreed']} ties are order disagreements" if v.get("disagreed") else "")),
        ("verdict", v["verdict"]),
    ]


def print_validation(v: dict[str, Any], train_dir: str) -> None:
    from rich.table import Table

    t = Table(title=f"datakit validate · {train_dir}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    for k, val in validation_rows(v) + [("file", f"{train_dir}/validation.json")]:
        t.add_row(k, val)
    console.print(t)


@click.command("validate")
@click.argument("train_dir", type=click.Path(file_okay=False))
@teacher_options
@click.option("--judge", "judge_teacher", help="Teacher name (or model) from the config to judge with "
              "(default: routing by the 'judge' role, or the bundled local teacher).")
@click.option("--val-prompts", type=int, help="Held-out prompts answered and judged [32; 8 on a CPU].")
@click.option("--val-tokens", type=int, help="New tokens per answer [384; 96 on a CPU].")
def validate_cmd(train_dir: str, judge_teacher: str | None, val_prompts: int | None, val_tokens: int | None,
                 **topts: Any) -> None:
    """Judge the tuned model of TRAIN_DIR against its base on held-out prompts (both orders)."""
    from datakit.train.cpu_defaults import quiet_libraries
    from datakit.train.cpu_defaults import calm_threads
    from datakit.train.pair_judge import judge_name
    from datakit.train.validate import ValidateOptions

    opts = ValidateOptions(val_prompts=val_prompts, max_new_tokens=val_tokens, judge=judge_teacher).check()
    dk_cfg = config_from_options(**topts)
    judge_name(dk_cfg, judge_teacher)  # an unknown judge fails here, before any model loads
    calm_threads()
    quiet_libraries()
    print_validation(run_validation(train_dir, dk_cfg, opts), train_dir)


COMMANDS = [validate_cmd]
