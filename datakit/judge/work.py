"""What ``respond`` and ``judge`` share: the run's accepted records, the teacher pool opened on
the run's cache, teacher names resolved from the config, and :func:`drain`, which runs units of
work and appends each finished one to an append-only log in fsync'd batches.

A kill -9 at any moment loses at most the batch in flight, and those answers are in the
response cache, so the rerun does not pay for them again. A request that still fails after the
pool's retries is counted and *not* logged, so the next run tries it again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from datakit.errors import UserError
from datakit.records import JsonlAppender, Record, read_records

FLUSH_EVERY = 16          # finished units per fsync'd batch
FLUSH_SECONDS = 2.0
WINDOW = 256              # units scheduled at once (the pool bounds what is in flight)

Progress = Callable[[int, int, str], None]


def load_run_records(run_dir: Path, limit: int | None, only: str | Path | None = None) -> list[Record]:
    """The run's accepted records, in run order; with ``only``, just those whose ids are in that
    record file (the output of ``datakit filter``/``dedup``), so later stages work on what
    curation kept."""
    if not run_dir.is_dir():
        raise UserError("run directory not found", path=str(run_dir))
    if not (run_dir / "records.jsonl").exists():
        raise UserError("not a run directory (no records.jsonl; run `datakit generate` first)", path=str(run_dir))
    recs = [r for r in read_records(run_dir) if r.status == "accepted"]
    if not recs:
        raise UserError("no accepted records to work on", path=str(run_dir / "records.jsonl"))
    if only is not None:
        keep = selected_ids(only)
        recs = [r for r in recs if r.id in keep]
    return recs[:limit] if limit is not None else recs


def selected_ids(path: str | Path) -> set[str]:
    """Ids of the records in a curated record file (JSONL or Parquet)."""
    from datakit.records import read_table

    rows = read_table(path)
    missing = next((i for i, r in enumerate(rows, 1) if not isinstance(r.get("id"), str)), None)
    if missing is not None:
        raise UserError("a record without an 'id': --records needs the ids of the run's records",
                        path=str(path), line=missing, field="id")
    return {r["id"] for r in rows}


async def drain(jobs: list[Callable[[], Awaitable[dict[str, Any] | None]]], log: Path,
                 on_progress: Progress | None, what: str, total: int, already: int) -> tuple[int, int, int]:
    """Run jobs (each returns a log row or None on failure) and append finished rows to ``log``
    in fsync'd batches. Returns (done, cached, failed)."""
    done = cached = failed = 0
    pending: list[dict[str, Any]] = []
    last_flush = time.monotonic()
    with JsonlAppender(log) as app:
        for start in range(0, len(jobs), WINDOW):
            tasks = [asyncio.ensure_future(j()) for j in jobs[start:start + WINDOW]]
            try:
                for fut in asyncio.as_completed(tasks):
                    row = await fut
                    if row is None:
                        failed += 1
                    else:
                        pending.append(row)
                        done += 1
                        cached += bool(row.get("cached"))
                    if len(pending) >= FLUSH_EVERY or time.monotonic() - last_flush > FLUSH_SECONDS:
                        app.write_batch(pending)
                        pending, last_flush = [], time.monotonic()
                    if on_progress:
                        on_progress(already + done + failed, total, what)
            finally:
                app.write_batch(pending)  # what finished is kept even when a teacher error ends the run
                pending = []
                for t in tasks:
                    t.cancel()
    return done, cached, failed


async def batch_prefill(pool: Any, jobs: list[Callable[[], Awaitable[Any]]], run_dir: Path, what: str,
                        on_progress: Progress | None) -> None:
    """In batch mode (``--batch``), answer the jobs' requests through the provider's batch API
    first; the jobs then find every answer in the cache (:mod:`datakit.teachers.batch`)."""
    if not (pool.batch and pool.batch.enabled) or not jobs:
        return
    from datakit.teachers.batch import prefill

    def report(desc: str, done: int, total: int) -> None:
        if on_progress:
            on_progress(done, total, f"{what}: {desc}")

    await prefill(pool, jobs, run_dir, what.replace(": ", "-"), report)


def open_pool(cfg: Any, run_dir: Path, on_status: Callable[[str], None] | None):
    from datakit.teachers.pool import open_teachers

    return open_teachers(cfg, cache_path=run_dir / "cache.sqlite", log_dir=run_dir, on_status=on_status)


def resolve_teachers(cfg: Any, names: list[str] | None, role: str) -> list[str]:
    configured = [t.name for t in cfg.teachers]
    if not configured:
        if names and any(n != "local" for n in names):
            raise UserError(f"no teachers configured, so only the bundled 'local' teacher exists "
                            f"(asked for {', '.join(names)}); use --config", field="--teachers")
        return ["local"]
    if names:
        out = []
        for n in names:
            if n in configured:
                out.append(n)
                continue
            by_model = [t.name for t in cfg.teachers if t.model == n]
            if len(by_model) == 1:
                out.append(by_model[0])
                continue
            raise UserError(f"unknown teacher '{n}' (configured: {', '.join(configured)})", field="--teachers")
        return list(dict.fromkeys(out))
    with_role = [t.name for t in cfg.teachers if role in t.roles]
    if not with_role:
        raise UserError(f"no teacher has the role '{role}' (add it to roles, or name teachers with --teachers)")
    return with_role
