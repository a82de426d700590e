"""Batch mode (``--batch``, ``--batch-instances``): requests through the provider's batch API.

The OpenAI protocol (``/v1/files`` + ``/v1/batches``, which DashScope's compatible mode and
vLLM's batch runner take too): the requests are written as a JSONL file, uploaded, a batch is
created and polled, its output and error files are downloaded and each line is matched to its
request by ``custom_id`` (the request's cache key).

Batch mode only *pre-fills the response cache*: :func:`prefill` runs the command's own calls in
the pool's collect mode to learn which requests the cache lacks, answers them through batches,
and puts every answer into the cache under the same key an online request has, so the command
then runs as usual and finds them there (records are the same as online). Lines that failed or
expired go into a new batch up to ``batch.retries`` times; what is still missing then goes
online.

Every step is committed in ``RUN/batches.json`` (atomic) before the next one: the input file
(``RUN/batches/NAME.jsonl``, fsync'd) before the upload, the file id before the batch is
created, the batch id as soon as it exists. A rerun after kill -9, or the next day, resumes
each batch where it is and never creates a batch twice: a batch created whose id was not yet
written is found again by its input file id.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, Awaitable, Callable

import openai

from datakit.errors import TeacherError
from datakit.records import atomic_write_json
from datakit.teachers.budget import worst_case_cost
from datakit.teachers.pool import Pending, Teacher, TeacherPool, backoff_delay, read_completion

STATE = "batches.json"
FOLDER = "batches"
TERMINAL = ("completed", "failed", "expired", "cancelled")
Report = Callable[[str, int, int], None]   # (what, done, total)


class BatchState:
    """``RUN/batches.json``: one entry per batch, in submission order."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.path = run_dir, run_dir / STATE
        self.entries: list[dict[str, Any]] = json.loads(self.path.read_text())["batches"] if self.path.exists() else []

    def save(self) -> None:
        atomic_write_json(self.path, {"batches": self.entries})

    def keys_of(self, entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """custom_id -> request body, from the entry's input file."""
        with open(self.run_dir / entry["file"], encoding="utf-8") as f:
            return {row["custom_id"]: row["body"] for row in map(json.loads, f)}

    def attempts(self) -> dict[str, int]:
        """How many submitted batches each request key was in."""
        n: dict[str, int] = {}
        for e in self.entries:
            if e.get("batch_id"):
                for k in self.keys_of(e):
                    n[k] = n.get(k, 0) + 1
        return n


async def _api(what: str, t: Teacher, call: Callable[[], Awaitable[Any]], tries: int = 8) -> Any:
    """One batch-API call with retries on rate limits, 5xx and connection errors."""
    for attempt in range(tries):
        try:
            return await call()
        except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                openai.InternalServerError) as e:
            if attempt == tries - 1:
                raise TeacherError(f"{t.where()}: {what} failed: {e}") from None
            await asyncio.sleep(backoff_delay(attempt, None))
        except openai.NotFoundError:
            raise TeacherError(f"{t.where()} has no batch API ({what}: HTTP 404); "
                               f"run without --batch") from None
        except openai.APIStatusError as e:
            raise TeacherError(f"{t.where()}: {what} refused (HTTP {e.status_code}: "
                               f"{str(e.message).splitlines()[0][:200]})") from None


# --------------------------------------------------------------------------- submitting

def _write_input(path: Path, pending: list[Pending]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for p in pending:
            f.write(json.dumps({"custom_id": p.key, "method": "POST", "url": "/v1/chat/completions",
                                "body": p.request}, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


async def _submit(pool: TeacherPool, state: BatchState, entry: dict[str, Any]) -> None:
    """Upload a new entry's input file and create its batch, committing each id as it comes."""
    t = pool.by_name[entry["teacher"]]
    if entry["status"] != "written":
        return
    data = (state.run_dir / entry["file"]).read_bytes()
    f = await _api("file upload", t, lambda: t.client.files.create(
        file=(Path(entry["file"]).name, data, "application/jsonl"), purpose="batch"))
    entry.update(input_file_id=f.id, status="uploaded")
    state.save()
    b = await _api("batch create", t, lambda: t.client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window=pool.batch.completion_window,
        metadata={"datakit": entry["name"]}))
    entry.update(batch_id=b.id, status="submitted")
    state.save()


async def _adopt(t: Teacher, input_file_id: str) -> Any:
    """A batch already created from this input file (created before a kill wrote its id)."""
    page = await _api("batch list", t, lambda: t.client.batches.list(limit=100))
    return next((b for b in page.data if b.input_file_id == input_file_id), None)


async def _resume(pool: TeacherPool, state: BatchState) -> list[dict[str, Any]]:
    """The batches an earlier session created and did not finish. Entries whose batch was never
    created are dropped (their requests are collected again); one created after its file id was
    committed, but before its batch id was, is found by that file id."""
    keep = []
    for e in state.entries:
        if e["status"] == "uploaded" and e["teacher"] in pool.by_name:
            b = await _adopt(pool.by_name[e["teacher"]], e["input_file_id"])
            if b is not None:
                e.update(batch_id=b.id, status="submitted")
        if e["status"] in ("done", "submitted"):
            keep.append(e)
    if len(keep) != len(state.entries):
        state.entries = keep
        state.save()
    left = [e for e in keep if e["status"] == "submitted"]
    for e in left:
        if pool.budget:
            pool.budget.force_reserve(e["teacher"], e["worst"], e["n"])
    return left


def _new_entries(pool: TeacherPool, state: BatchState, label: str, todo: list[Pending]) -> list[dict[str, Any]]:
    """Input files for ``todo`` (per teacher, at most ``max_requests`` lines each), within the
    budget: a line whose worst case does not fit is left out (and closes the budget)."""
    by_teacher: dict[str, list[Pending]] = {}
    for p in todo:
        by_teacher.setdefault(p.teacher.name, []).append(p)
    entries = []
    for name, ps in by_teacher.items():
        t = pool.by_name[name]
        worst = [worst_case_cost(p.request, *t.prices(batch=True)) for p in ps]
        if pool.budget:
            keep = [pool.budget.try_reserve(name, w) for w in worst]
            ps, worst = [p for p, k in zip(ps, keep) if k], [w for w, k in zip(worst, keep) if k]
        size = pool.batch.max_requests
        for i in range(0, len(ps), size):
            entry = {"name": f"{label}-{len(state.entries) + 1:04d}-{name}", "teacher": name,
                     "n": len(ps[i:i + size]), "worst": sum(worst[i:i + size]), "status": "written"}
            entry["file"] = f"{FOLDER}/{entry['name']}.jsonl"
            _write_input(state.run_dir / entry["file"], ps[i:i + size])
            state.entries.append(entry)
            state.save()
            entries.append(entry)
    return entries


# --------------------------------------------------------------------------- finishing

async def _wait(pool: TeacherPool, entry: dict[str, Any], report: Report | None) -> Any:
    t = pool.by_name[entry["teacher"]]
    while True:
        b = await _api("batch poll", t, lambda: t.client.batches.retrieve(entry["batch_id"]))
        c = b.request_counts
        if report:
            report(f"batch {entry['name']}: {b.status}", (c.completed + c.failed) if c else 0,
                   c.total if c and c.total else entry["n"])
        if b.status in TERMINAL:
            return b
        await asyncio.sleep(pool.batch.poll_seconds)


async def _collect_results(pool: TeacherPool, state: BatchState, entry: dict[str, Any], b: Any) -> float:
    """Download the batch's files and put every good answer into the cache; returns its cost."""
    t = pool.by_name[entry["teacher"]]
    requests = state.keys_of(entry)
    spent = 0.0
    for fid in (b.output_file_id, b.error_file_id):
        if not fid:
            continue
        raw = await _api("result download", t, lambda: t.client.files.content(fid))
        for line in raw.content.decode("utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            resp, key = row.get("response") or {}, row.get("custom_id")
            if key not in requests or resp.get("status_code") != 200:
                continue
            try:
                answer = read_completion(resp["body"])
            except (KeyError, IndexError, TypeError, ValueError, AttributeError):
                continue  # a malformed line counts as failed: retried
            cost = t.account(answer["usage"], batch=True)
            spent += cost
            pool.cache.put(key, requests[key], {**answer, "teacher": t.name, "cost": cost})
            pool.prepaid.add(key)
    return spent


async def _finish(pool: TeacherPool, state: BatchState, entry: dict[str, Any], report: Report | None) -> None:
    if entry["teacher"] not in pool.by_name:
        raise TeacherError(f"{STATE}: batch {entry['name']} belongs to teacher '{entry['teacher']}', "
                           f"which is no longer configured")
    await _submit(pool, state, entry)
    b = await _wait(pool, entry, report)
    spent = await _collect_results(pool, state, entry, b)
    if pool.budget:
        pool.budget.settle(entry["teacher"], entry["worst"], spent, entry["n"])
    c = b.request_counts
    entry.update(status="done", result=b.status, completed=c.completed if c else None,
                 failed=c.failed if c else None, cost=round(spent, 6))
    state.save()


# --------------------------------------------------------------------------- the entry point

async def collect(pool: TeacherPool, calls: list[Callable[[], Awaitable[Any]]]) -> list[Pending]:
    """The requests ``calls`` would send that the cache cannot answer (each once)."""
    with pool.collecting() as pending:
        await asyncio.gather(*(c() for c in calls))
    return list({p.key: p for p in pending if not p.cached}.values())


async def prefill(pool: TeacherPool, calls: list[Callable[[], Awaitable[Any]]], run_dir: str | Path,
                  label: str, report: Report | None = None) -> None:
    """Answer through batches every request ``calls`` make that the cache lacks (see the module
    docstring); batches an earlier session left open are finished first."""
    state = BatchState(Path(run_dir))
    left = await _resume(pool, state)
    await asyncio.gather(*(_finish(pool, state, e, report) for e in left))
    while True:
        tried = state.attempts()
        todo = [p for p in await collect(pool, calls) if tried.get(p.key, 0) <= pool.batch.retries]
        entries = _new_entries(pool, state, label, todo) if todo else []
        if not entries:
            return
        await asyncio.gather(*(_finish(pool, state, e, report) for e in entries))
