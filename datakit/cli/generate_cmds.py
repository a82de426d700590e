"""``datakit generate``, ``datakit seeds check`` and ``datakit teacher serve``."""

from __future__ import annotations

import asyncio
import shlex
import sys

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from datakit.cli.common import (config_from_options, console, pairs_table, show_estimate, spend_options, stage,
                                table, teacher_options)


@click.command()
@click.option("--num", type=int, help="Stop at this many accepted records (default 100).")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run directory (default runs/<timestamp>). "
              "Rerun the same command on it to resume.")
@click.option("--seeds", type=click.Path(), help="Seed file or folder of *.jsonl (default: the bundled seeds/).")
@click.option("--seed", "rng_seed", type=int, help="Random seed for demo sampling (default 0).")
@click.option("--requests-per-round", type=int, help="Task-generation requests sent together per round (default 4).")
@click.option("--personas", type=click.Path(), help="A personas file or folder (e.g. seeds/personas): each task "
              "request is asked as one persona, chosen by the run's seeded RNG.")
@click.option("--batch-instances", is_flag=True, help="Each round's instance requests through the providers' "
              "batch API (often half price; a round waits for its batch).")
@teacher_options
@spend_options
def generate(num, out, seeds, rng_seed, requests_per_round, personas, batch_instances, config_path, base_url,
             model, api_key_env, concurrency, max_cost, dry_run):
    """Make new tasks with a self-instruct loop and write a run directory."""
    from datakit.generate.loop import generate as run_generate
    from datakit.runs import RunDir, default_run_path

    cfg = config_from_options(config_path, base_url, model, api_key_env, concurrency, {
        "generate.num": num, "generate.seeds": seeds, "generate.seed": rng_seed,
        "generate.requests_per_round": requests_per_round, "generate.personas": personas, "max_cost": max_cost,
        "batch.enabled": batch_instances or None})
    run = RunDir(out or default_run_path())
    if dry_run:
        from datakit.generate.dry_run import estimate_generate

        return show_estimate("generate", estimate_generate(cfg, run), cfg)
    command = "datakit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with stage("generate", [], [run.path]) as st, \
            Progress(TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TextColumn("accepted"),
                     TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                     transient=True) as progress:
        task = progress.add_task("", total=cfg.generate.num)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_status(msg: str) -> None:
            progress.update(task, description=msg)

        summary = asyncio.run(run_generate(cfg, run, command=command, on_progress=on_progress,
                                           on_status=on_status))
        progress.update(task, description="")
        st.counts = {"accepted": summary.accepted, "rounds": summary.rounds, "rejected": dict(summary.rejected),
                     "resumed_from_round": summary.resumed_from_round, "stopped": summary.stopped_reason}
        st.usage_from(summary.teachers)
    tot = {k: sum(t.get(k, 0) for t in summary.totals.values())
           for k in ("requests", "cache_hits", "retries", "failures", "prompt_tokens", "completion_tokens", "cost")}
    rows = [("run directory", summary.run_dir), ("accepted records", summary.accepted),
            ("rounds", summary.rounds)]
    if summary.resumed_from_round:
        rows.append(("resumed after round", summary.resumed_from_round))
    rows += [("requests (paid)", tot["requests"]), ("cache hits", tot["cache_hits"]),
             ("retries", tot["retries"]), ("failed requests", tot["failures"]),
             ("tokens in", tot["prompt_tokens"]), ("tokens out", tot["completion_tokens"]),
             ("cost (USD)", f"{tot['cost']:.4f}"), ("wall time (this session)", f"{summary.seconds:.1f} s")]
    rows += [(f"rejected: {reason}", n) for reason, n in summary.rejected.most_common()]
    console.print(pairs_table("generate: summary (whole run)", rows))
    if summary.teachers:
        console.print(table("teachers (this session)", summary.teachers))
    if summary.stopped_reason != "done":
        console.print(f"[yellow]stopped early: {summary.stopped_reason}[/yellow]")
        sys.exit(1)


@click.group()
def seeds():
    """Seed task files."""


@seeds.command("check")
@click.argument("path", type=click.Path())
def seeds_check(path):
    """Validate a seed file (or every *.jsonl in a folder)."""
    from collections import Counter

    from datakit.seeds import load_seeds

    tasks = load_seeds(path)
    langs = Counter("zh" if any("\u4e00" <= ch <= "\u9fff" for ch in t.instruction) else "en" for t in tasks)
    cls = sum(t.is_classification for t in tasks)
    console.print(f"[green]ok[/green]: {len(tasks)} seed tasks ({langs.get('en', 0)} en, {langs.get('zh', 0)} zh, "
                  f"{cls} classification) in {path}")


@click.group()
def teacher():
    """The bundled local teacher."""


@teacher.command("serve")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--model", "model_path", type=click.Path(dir_okay=False), help="A GGUF file (default: bundled SmolLM2-135M-Instruct).")
def teacher_serve(port, model_path):
    """Serve the local teacher on 127.0.0.1:PORT (OpenAI-compatible, foreground)."""
    from datakit.config import LocalTeacherConfig
    from datakit.teachers.local import MODEL_ALIAS, serve_foreground

    console.print(f"local teacher on http://127.0.0.1:{port}/v1 (model name: {MODEL_ALIAS}); Ctrl-C stops it")
    sys.exit(serve_foreground(port, LocalTeacherConfig(model_path=model_path)))


COMMANDS = [generate, seeds, teacher]
