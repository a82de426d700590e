"""``datakit respond``: candidate responses for every accepted task of a run, appended to
``candidates.jsonl`` (resumable: units already logged are skipped)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from datakit.errors import UserError
from datakit.export.formats import user_content
from datakit.judge import store
from datakit.judge.work import Progress, batch_prefill, drain, load_run_records, open_pool, resolve_teachers
from datakit.records import JsonlAppender, Record
from datakit.runs import RunLock

@dataclass
class RespondOptions:
    teachers: list[str] | None = None
    n: int = 1
    temperatures: list[float] | None = None
    max_tokens: int = 512
    include_output: bool = False
    limit: int | None = None
    records: str | None = None  # only the records in this curated file (ids)


@dataclass
class RespondResult:
    path: Path
    n_records: int = 0
    planned: int = 0
    skipped: int = 0
    done: int = 0
    cached: int = 0
    failed: int = 0
    teacher_rows: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None   # why the budget stopped the run (exit 1)
    conversations_skipped: int = 0  # multi-turn records: judge scores their turns instead


def sample_temperatures(n: int, given: list[float] | None) -> list[float]:
    """Temperature of sample k: the k-th given one (cycled), or 0.7 for one sample, or evenly
    spread from 0.3 to 1.0 for several."""
    if given:
        return [given[k % len(given)] for k in range(n)]
    if n == 1:
        return [0.7]
    return [round(0.3 + 0.7 * k / (n - 1), 3) for k in range(n)]


def respond_messages(rec: Record) -> list[dict[str, str]]:
    """The candidate is asked exactly the user turn that SFT export trains on."""
    return [{"role": "user", "content": user_content(rec.instruction, rec.input)}]


def _check_options_respond(opts: RespondOptions) -> None:
    if opts.n < 1:
        raise UserError("must be at least 1", field="--n")
    if opts.max_tokens < 1:
        raise UserError("must be at least 1", field="--max-tokens")
    for t in opts.temperatures or []:
        if not 0 <= t <= 2:
            raise UserError(f"must be between 0 and 2 (got {t:g})", field="--temperatures")


def plan_units(run_dir: Path, recs: list[Record], cfg: Any, opts: RespondOptions, res: RespondResult
               ) -> tuple[list[tuple[Record, str, int]], list[dict[str, Any]]]:
    """What is left to do: (record, teacher, sample) units to ask for, and rows of the records'
    own outputs to add as candidates (``--include-output``); counts go into ``res``."""
    teachers = resolve_teachers(cfg, opts.teachers, "respond")
    have = store.load_candidates(run_dir)
    res.n_records = len(recs)
    extra_rows = []
    units: list[tuple[Record, str, int]] = []
    for rec in recs:
        if store.is_conversation(rec):  # judged turn by turn; alternatives to one turn mean nothing
            res.conversations_skipped += 1
            continue
        got = have.get(rec.id, {})
        if opts.include_output and (rec.output or "").strip():
            res.planned += 1
            if store.OUTPUT_CANDIDATE in got:
                res.skipped += 1
            else:
                extra_rows.append({"record_id": rec.id, **store.output_candidate(rec)})
        for t in teachers:
            for k in range(opts.n):
                res.planned += 1
                if f"{t}#{k}" in got:
                    res.skipped += 1
                else:
                    units.append((rec, t, k))
    return units, extra_rows


def respond_job(pool: Any, opts: RespondOptions, rec: Record, t: str, k: int
                ) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    """The unit of work: ask teacher ``t`` for sample ``k``; its log row, or None on failure."""
    temps = sample_temperatures(opts.n, opts.temperatures)

    async def run() -> dict[str, Any] | None:
        params = {"temperature": temps[k], "max_tokens": opts.max_tokens}
        r = await pool.chat("respond", respond_messages(rec), params=params, json_mode=False,
                            salt=f"respond#{k}", teacher=None if t == "local" else t)
        if not r.ok or not (r.text or "").strip():
            return None
        return {"record_id": rec.id, "id": f"{t}#{k}", "output": r.text.strip(), "teacher": r.teacher,
                "model": r.model, "params": r.params, "cached": r.cached, "usage": r.usage,
                "finish_reason": r.finish_reason}
    return run


def respond(run_dir: str | Path, cfg: Any, opts: RespondOptions, *, on_progress: Progress | None = None,
            on_status: Callable[[str], None] | None = None) -> RespondResult:
    """Collect candidate responses into ``candidates.jsonl`` (resumable; see the module docstring)."""
    run_dir = Path(run_dir)
    _check_options_respond(opts)
    recs = load_run_records(run_dir, opts.limit, opts.records)
    with RunLock(run_dir, "datakit respond"):  # one writer per run directory
        log = run_dir / store.CANDIDATES
        res = RespondResult(path=log)
        units, extra_rows = plan_units(run_dir, recs, cfg, opts, res)
        if extra_rows:
            with JsonlAppender(log) as app:
                app.write_batch(extra_rows)
            res.done += len(extra_rows)
        if on_progress:
            on_progress(res.skipped + res.done, res.planned, "respond")
        if not units:
            return res

        async def main() -> None:
            async with open_pool(cfg, run_dir, on_status) as pool:
                jobs = [respond_job(pool, opts, *u) for u in units]
                await batch_prefill(pool, jobs, run_dir, "respond", on_progress)
                refused = pool.budget.refused if pool.budget else 0
                d, c, f = await drain(jobs, log, on_progress, "respond", res.planned, res.skipped + res.done)
                res.done += d
                res.cached += c
                res.failed += f - ((pool.budget.refused - refused) if pool.budget else 0)
                res.teacher_rows = pool.summary_rows()
                res.stopped = pool.budget_stop()

        asyncio.run(main())
        return res
