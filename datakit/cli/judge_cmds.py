"""CLI commands ``respond``, ``judge`` and ``export``: thin wrappers over datakit.judge and
datakit.export (options in, library call, rich progress and a summary table out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from datakit.cli.common import (config_from_options, console, pairs_table, show_estimate, spend_options, stage,
                                stop_if_budget, table, teacher_options)


class _Progress:
    """A rich progress bar fed by the library's ``on_progress(done, total, what)`` callback."""

    def __init__(self, title: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self.title = title
        self.task = None

    def __enter__(self) -> "_Progress":
        self.p.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.p.__exit__(*exc)

    def __call__(self, done: int, total: int, what: str | None = None) -> None:
        if self.task is None:
            self.task = self.p.add_task(what or self.title, total=total)
        self.p.update(self.task, completed=done, total=total, description=what or self.title)

    def status(self, msg: str) -> None:
        console.print(f"[dim]{msg}[/dim]")


def _floats(text: str | None, name: str) -> list[float] | None:
    if not text:
        return None
    from datakit.errors import UserError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"expected comma-separated numbers, got {text!r}", field=name) from None


tie_break_option = click.option(
    "--tie-break", "tie_break", default="none", show_default=True,
    help="DPO pairs the judge cannot tell apart: none (drop them), temperature (lowest-temperature sample "
         "chosen, highest rejected), or teacher:NAME (NAME's answer chosen over any other's). A judge that "
         "prefers the other side always wins; pairs record their basis.")


@click.command("respond")
@click.argument("run_dir", type=click.Path(file_okay=False))
@teacher_options
@click.option("--teachers", "teacher_names", help="Comma-separated teacher names from the config (default: "
              "every teacher with the 'respond' role, or the local one).")
@click.option("--n", "n", type=int, default=1, show_default=True, help="Samples per teacher per task.")
@click.option("--temperatures", help="Comma-separated temperatures, sample k uses the k-th (cycled). "
              "Default 0.7 for one sample, else spread from 0.3 to 1.0.")
@click.option("--max-tokens", type=int, default=512, show_default=True, help="Response length cap.")
@click.option("--include-output/--no-include-output", default=False, show_default=True,
              help="Also make each record's own output (from generate) a candidate.")
@click.option("--limit", type=int, help="Only the first N accepted records (for a quick look).")
@click.option("--records", "records", type=click.Path(dir_okay=False),
              help="Only the run's records whose ids are in this file (the output of filter/dedup).")
@click.option("--batch", is_flag=True, help="Through the providers' batch API (often half price, up to 24 h); "
              "a rerun resumes the batches in flight.")
@spend_options
def respond_cmd(run_dir: str, teacher_names: str | None, n: int, temperatures: str | None, max_tokens: int,
                include_output: bool, limit: int | None, records: str | None, batch: bool, max_cost: float | None,
                dry_run: bool, **topts: Any) -> None:
    """Collect candidate responses for every accepted task of RUN_DIR (resumable)."""
    from datakit.judge.run import RespondOptions, respond

    cfg = config_from_options(**topts, overrides={"max_cost": max_cost, "batch.enabled": batch or None})
    opts = RespondOptions(teachers=[t.strip() for t in teacher_names.split(",") if t.strip()] if teacher_names else None,
                          n=n, temperatures=_floats(temperatures, "--temperatures"), max_tokens=max_tokens,
                          include_output=include_output, limit=limit, records=records)
    if dry_run:
        from datakit.judge.dry_run import estimate_respond

        return show_estimate("respond", estimate_respond(Path(run_dir), cfg, opts), cfg)
    with stage("respond", [run_dir]) as st, _Progress("respond") as prog:
        res = respond(Path(run_dir), cfg, opts, on_progress=prog, on_status=prog.status)
        st.counts = {"records": res.n_records, "planned": res.planned, "new": res.done, "resumed": res.skipped,
                     "cached": res.cached, "failed": res.failed, "selection": records}
        st.usage_from(res.teacher_rows)
    console.print(pairs_table("respond", [
        ("records", res.n_records), ("candidates planned", res.planned), ("already done (resumed)", res.skipped),
        ("new candidates", res.done), ("from cache", res.cached), ("failed (retry with a rerun)", res.failed),
        ("candidates file", str(res.path))]))
    if res.teacher_rows:
        console.print(table("teachers", res.teacher_rows))
    stop_if_budget(res.stopped)


@click.command("judge")
@click.argument("run_dir", type=click.Path(file_okay=False))
@teacher_options
@click.option("--judge", "judge_teacher", help="Teacher name (or model) from the config to judge with "
              "(default: routing by the 'judge' role, or the local teacher).")
@click.option("--mode", type=click.Choice(["pointwise", "pairwise", "both"]), default="both", show_default=True,
              help="Pointwise rubric scores, pairwise preferences (both orders), or both.")
@click.option("--max-pairs", type=int, default=6, show_default=True,
              help="At most this many pairwise comparisons per task (best vs worst first).")
@click.option("--min-margin", type=float, default=1.0, show_default=True,
              help="Score margin a DPO pair needs (inclusive); for the summary and judged.jsonl.")
@click.option("--max-tokens", type=int, default=512, show_default=True, help="Judge answer length cap.")
@click.option("--limit", type=int, help="Only the first N accepted records.")
@click.option("--json-schema/--no-json-schema", default=False, show_default=True,
              help="Send OpenAI structured-output JSON schemas (servers that support json_schema); "
                   "default is plain JSON mode.")
@click.option("--records", "records", type=click.Path(dir_okay=False),
              help="Only the run's records whose ids are in this file (the output of filter/dedup).")
@tie_break_option
@click.option("--batch", is_flag=True, help="Through the providers' batch API (often half price, up to 24 h "
              "per phase); a rerun resumes the batches in flight.")
@spend_options
def judge_cmd(run_dir: str, judge_teacher: str | None, mode: str, max_pairs: int, min_margin: float,
              max_tokens: int, limit: int | None, json_schema: bool, records: str | None, tie_break: str,
              batch: bool, max_cost: float | None, dry_run: bool, **topts: Any) -> None:
    """Score candidates with a rubric and/or pairwise judge, rank them, build preference pairs."""
    from datakit.judge.run import JudgeOptions, judge

    cfg = config_from_options(**topts, overrides={"max_cost": max_cost, "batch.enabled": batch or None})
    opts = JudgeOptions(teacher=judge_teacher, mode=mode, max_pairs=max_pairs, min_margin=min_margin,
                        max_tokens=max_tokens, limit=limit, json_schema=json_schema, records=records,
                        tie_break=tie_break)
    if dry_run:
        from datakit.judge.dry_run import estimate_judge

        return show_estimate("judge", estimate_judge(Path(run_dir), cfg, opts), cfg)
    with stage("judge", [run_dir]) as st, _Progress("judge") as prog:
        res = judge(Path(run_dir), cfg, opts, on_progress=prog, on_status=prog.status)
        st.counts = {"records": res.n_records, "pointwise": res.pointwise_total,
                     "status": dict(res.status_counts), "pairwise": res.pairwise_total,
                     "pairwise_results": dict(res.pairwise_counts), "position_bias_rate": res.position_bias_rate,
                     "pairs_kept": res.pairs_kept, "pair_basis": dict(res.pair_basis),
                     "pair_drops": dict(res.pair_drops), "new": res.done,
                     "resumed": res.skipped, "failed": res.failed, "selection": records}
        st.usage_from(res.teacher_rows)
    rate = "n/a" if res.position_bias_rate is None else f"{res.position_bias_rate:.1%} of {res.pairwise_compared}"
    console.print(pairs_table("judge", [
        ("records", res.n_records), ("candidates judged (pointwise)", res.pointwise_total),
        ("  ok / partial / unparsed", f"{res.status_counts.get('ok', 0)} / {res.status_counts.get('partial', 0)}"
                                      f" / {res.status_counts.get('unparsed', 0)}"),
        ("pairwise comparisons", res.pairwise_total),
        ("  agreed / ties / disagreed / unparsed",
         f"{res.pairwise_counts.get('agreed', 0)} / {res.pairwise_counts.get('tie', 0)} / "
         f"{res.pairwise_counts.get('disagree', 0)} / {res.pairwise_counts.get('unparsed', 0)}"),
        ("position-bias rate", rate),
        ("mean best score", "n/a" if res.mean_best is None else f"{res.mean_best:.2f}"),
        (f"DPO pairs kept (margin >= {min_margin:g})", res.pairs_kept),
        *[(f"  basis: {k}", v) for k, v in sorted(res.pair_basis.items()) if k != "judge" or len(res.pair_basis) > 1],
        *[(f"  dropped: {k}", v) for k, v in sorted(res.pair_drops.items())],
        ("new judge calls / resumed", f"{res.done} / {res.skipped}"), ("failed (retry with a rerun)", res.failed),
        ("merged view", str(res.judged_path))]))
    if res.teacher_rows:
        console.print(table("teachers", res.teacher_rows))
    stop_if_budget(res.stopped)


@click.command("export")
@click.argument("source", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["sft", "dpo"]), default="sft", show_default=True)
@click.option("--style", type=click.Choice(["trl", "llamafactory", "axolotl"]), default="trl", show_default=True,
              help="trl: messages / prompt-chosen-rejected; llamafactory: sharegpt + dataset_info.json; "
                   "axolotl: messages + a config snippet (SFT).")
@click.option("--out", required=True, type=click.Path(), help="Output .jsonl or .parquet (a folder for llamafactory).")
@click.option("--system", "system", help="System prompt put first in every conversation.")
@click.option("--text/--no-text", default=False, show_default=True, help="SFT: add a ChatML-rendered 'text' column.")
@click.option("--min-score", type=float, help="Keep only responses (DPO: chosen) with a judge score >= this.")
@click.option("--min-margin", type=float, default=1.0, show_default=True, help="DPO: chosen-rejected score margin (inclusive).")
@click.option("--max-len", type=int, help="Drop conversations longer than this many tokens (needs --tokenizer).")
@click.option("--tokenizer", help="Tokenizer for --max-len: a folder, a .gguf file, a cached model id, or 'smollm2'.")
@click.option("--eval-fraction", type=float, default=0.0, show_default=True, help="Share held out as eval split.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/eval split.")
@click.option("--name", help="Dataset name in dataset_info.json (default datakit_sft / datakit_dpo).")
@click.option("--response", type=click.Choice(["best", "output"]), default="best", show_default=True,
              help="SFT: the best judged candidate, or the record's own output.")
@click.option("--records", "records", type=click.Path(dir_okay=False),
              help="SOURCE is a run: only its records whose ids are in this file (the output of filter/dedup).")
@tie_break_option
@click.option("--reviewed-only", is_flag=True, default=False,
              help="Only records a person accepted in `datakit view` (RUN/reviews.jsonl).")
def export_cmd(source: str, fmt: str, style: str, out: str, system: str | None, text: bool,
               min_score: float | None, min_margin: float, max_len: int | None, tokenizer: str | None,
               eval_fraction: float, seed: int, name: str | None, response: str, records: str | None,
               tie_break: str, reviewed_only: bool) -> None:
    """Write SOURCE (a run directory or a record file) as trainer-ready SFT or DPO data."""
    from datakit.export import ExportOptions, export

    opts = ExportOptions(format=fmt, style=style, system=system, text=text, min_score=min_score,
                         min_margin=min_margin, max_len=max_len, tokenizer=tokenizer,
                         eval_fraction=eval_fraction, seed=seed, name=name, response=response, records=records,
                         tie_break=tie_break, reviewed_only=reviewed_only)
    with stage("export", [source], [out]) as st:
        res = export(source, out, opts)
        st.outputs = [str(p) for p in res.files]
        st.counts = {"format": fmt, "style": style, "records": res.n_records, "rows": res.n_train,
                     "eval_rows": res.n_eval, "dropped": dict(res.dropped), "selection": records,
                     "reviewed_only": reviewed_only}
    rows: list[tuple[str, Any]] = [("records read", res.n_records), ("train rows", res.n_train),
                                   ("eval rows", res.n_eval)]
    rows += [(f"dropped: {k}", v) for k, v in sorted(res.dropped.items())]
    rows += [("wrote", str(p)) for p in res.files]
    if res.dataset_info:
        rows.append(("dataset_info.json", str(res.dataset_info)))
    console.print(pairs_table(f"export {fmt} ({style})", rows))
    if res.snippet:
        console.print(res.snippet, markup=False, highlight=False)


COMMANDS = [respond_cmd, judge_cmd, export_cmd]
