"""``respond`` and ``judge`` over a run directory, on top of the teacher pool.

Both plan their units of work from the run directory, skip the units already in their
append-only log (resume), send the rest through :class:`datakit.teachers.pool.TeacherPool`
(concurrency, rate limits, retries, SQLite response cache in ``cache.sqlite``) and append each
finished unit to the log, fsync'd per batch. A kill -9 at any moment loses at most the batch in
flight, and those answers are in the response cache, so the rerun does not pay for them again.

A request that still fails after the pool's retries is counted and *not* logged, so the next
run tries it again. Nothing is ever given a default: a judge answer that cannot be parsed is
logged as ``unparsed``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from datakit.errors import UserError
from datakit.export.formats import user_content
from datakit.judge import store
from datakit.judge.parse import ASPECTS, parse_pairwise, parse_pointwise
from datakit.judge.pairs import candidate_score, position_bias_rate
from datakit.prompts import load_prompt
from datakit.records import JsonlAppender, Record, read_records, write_table

POINTWISE_PROMPT = "judge_pointwise"   # prompts/judge_pointwise.txt ($task, $response)
PAIRWISE_PROMPT = "judge_pairwise"     # prompts/judge_pairwise.txt ($task, $response_a, $response_b)
FLUSH_EVERY = 16          # finished units per fsync'd batch
FLUSH_SECONDS = 2.0
WINDOW = 256              # units scheduled at once (the pool bounds what is in flight)
RAW_KEEP = 4000           # characters of a judge's raw answer kept in the log

Progress = Callable[[int, int, str], None]


def _records(run_dir: Path, limit: int | None) -> list[Record]:
    if not run_dir.is_dir():
        raise UserError("run directory not found", path=str(run_dir))
    if not (run_dir / "records.jsonl").exists():
        raise UserError("not a run directory (no records.jsonl; run `datakit generate` first)", path=str(run_dir))
    recs = [r for r in read_records(run_dir) if r.status == "accepted"]
    return recs[:limit] if limit is not None else recs


async def _drain(jobs: list[Callable[[], Awaitable[dict[str, Any] | None]]], log: Path,
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


def _open_pool(cfg: Any, run_dir: Path, on_status: Callable[[str], None] | None):
    from datakit.teachers.pool import open_teachers

    return open_teachers(cfg, cache_path=run_dir / "cache.sqlite", log_dir=run_dir, on_status=on_status)


# =========================================================================== respond

@dataclass
class RespondOptions:
    teachers: list[str] | None = None
    n: int = 1
    temperatures: list[float] | None = None
    max_tokens: int = 512
    include_output: bool = False
    limit: int | None = None


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


def respond(run_dir: str | Path, cfg: Any, opts: RespondOptions, *, on_progress: Progress | None = None,
            on_status: Callable[[str], None] | None = None) -> RespondResult:
    """Collect candidate responses into ``candidates.jsonl`` (resumable; see the module docstring)."""
    run_dir = Path(run_dir)
    _check_options_respond(opts)
    recs = _records(run_dir, opts.limit)
    teachers = resolve_teachers(cfg, opts.teachers, "respond")
    temps = sample_temperatures(opts.n, opts.temperatures)
    log = run_dir / store.CANDIDATES
    have = store.load_candidates(run_dir)
    res = RespondResult(path=log, n_records=len(recs))

    extra_rows = []
    units: list[tuple[Record, str, int]] = []
    for rec in recs:
        got = have.get(rec.id, {})
        if opts.include_output and (rec.output or "").strip():
            res.planned += 1
            if store.OUTPUT_CANDIDATE in got:
                res.skipped += 1
            else:
                row = store.output_candidate(rec)
                extra_rows.append({"record_id": rec.id, **row})
        for t in teachers:
            for k in range(opts.n):
                res.planned += 1
                if f"{t}#{k}" in got:
                    res.skipped += 1
                else:
                    units.append((rec, t, k))
    if extra_rows:
        with JsonlAppender(log) as app:
            app.write_batch(extra_rows)
        res.done += len(extra_rows)
    if on_progress:
        on_progress(res.skipped + res.done, res.planned, "respond")
    if not units:
        return res

    async def main() -> None:
        async with _open_pool(cfg, run_dir, on_status) as pool:
            def job(rec: Record, t: str, k: int) -> Callable[[], Awaitable[dict[str, Any] | None]]:
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

            jobs = [job(*u) for u in units]
            d, c, f = await _drain(jobs, log, on_progress, "respond", res.planned, res.skipped + res.done)
            res.done += d
            res.cached += c
            res.failed += f
            res.teacher_rows = pool.summary_rows()

    asyncio.run(main())
    return res


# =========================================================================== judge

@dataclass
class JudgeOptions:
    teacher: str | None = None
    mode: str = "both"
    max_pairs: int = 6
    min_margin: float = 1.0
    max_tokens: int = 512
    limit: int | None = None
    json_schema: bool = False  # send OpenAI structured-output schemas instead of plain JSON mode


@dataclass
class JudgeResult:
    judged_path: Path
    n_records: int = 0
    planned: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    pointwise_total: int = 0
    status_counts: Counter = field(default_factory=Counter)
    pairwise_total: int = 0
    pairwise_counts: Counter = field(default_factory=Counter)
    position_bias_rate: float | None = None
    pairwise_compared: int = 0
    mean_best: float | None = None
    pairs_kept: int = 0
    pair_drops: Counter = field(default_factory=Counter)
    teacher_rows: list[dict[str, Any]] = field(default_factory=list)


def _schema(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": {
        "type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}}}


_ASPECT_SCHEMA = {"type": "object", "properties": {"score": {"type": "integer"}, "rationale": {"type": "string"}},
                  "required": ["score", "rationale"], "additionalProperties": False}
# Ranges are not in the schema (not every server enforces them); the parser checks 1..10.
POINTWISE_SCHEMA = _schema("judge_pointwise", {a: _ASPECT_SCHEMA for a in ASPECTS})
PAIRWISE_SCHEMA = _schema("judge_pairwise", {"winner": {"type": "string", "enum": ["A", "B", "tie"]},
                                             "reason": {"type": "string"}})


def judge_tag(prompt_sha: str, teacher: str | None, max_tokens: int) -> str:
    """Identity of a judge setup: a rerun with the same one skips what is logged, a different
    one (another judge, prompt or length) judges again and its lines win."""
    return hashlib.sha256(f"{prompt_sha}|{teacher or ''}|{max_tokens}".encode()).hexdigest()[:12]


def _pairs_to_compare(cands: list[dict[str, Any]], scores: dict[str, float | None], max_pairs: int
                      ) -> list[tuple[str, str]]:
    """Candidate pairs (in candidate order) to compare: widest score gap first (best vs worst
    leads), unscored ones by order; at most ``max_pairs``."""
    ids = [c["id"] for c in cands if (c.get("output") or "").strip()]
    pairs = [(ids[i], ids[j]) for i in range(len(ids)) for j in range(i + 1, len(ids))]

    def gap(p: tuple[str, str]) -> float:
        a, b = scores.get(p[0]), scores.get(p[1])
        return abs(a - b) if a is not None and b is not None else -1.0

    pairs.sort(key=lambda p: -gap(p))
    return pairs[:max_pairs]


def _check_options_judge(opts: JudgeOptions) -> None:
    if opts.mode not in ("pointwise", "pairwise", "both"):
        raise UserError("must be pointwise, pairwise or both", field="--mode")
    if opts.max_pairs < 1:
        raise UserError("must be at least 1", field="--max-pairs")
    if opts.min_margin < 0:
        raise UserError("must be 0 or more", field="--min-margin")
    if opts.max_tokens < 1:
        raise UserError("must be at least 1", field="--max-tokens")


def judge(run_dir: str | Path, cfg: Any, opts: JudgeOptions, *, on_progress: Progress | None = None,
          on_status: Callable[[str], None] | None = None) -> JudgeResult:
    """Pointwise and/or pairwise judging into ``judgements.jsonl``, then ``judged.jsonl``."""
    run_dir = Path(run_dir)
    _check_options_judge(opts)
    recs = _records(run_dir, opts.limit)
    judge_name = None
    if opts.teacher:
        judge_name = resolve_teachers(cfg, [opts.teacher], "judge")[0]
        judge_name = None if judge_name == "local" else judge_name
    point_prompt, pair_prompt = load_prompt(POINTWISE_PROMPT), load_prompt(PAIRWISE_PROMPT)
    point_sha, pair_sha = point_prompt.sha256[:16], pair_prompt.sha256[:16]
    point_tag = judge_tag(point_sha, opts.teacher, opts.max_tokens)
    pair_tag = judge_tag(pair_sha, opts.teacher, opts.max_tokens)
    log = run_dir / store.JUDGEMENTS
    res = JudgeResult(judged_path=run_dir / store.JUDGED, n_records=len(recs))
    logged_cands = store.load_candidates(run_dir)
    cand_lists = {r.id: store.record_candidates(r, logged_cands.get(r.id)) for r in recs}
    params = {"temperature": 0.0, "max_tokens": opts.max_tokens}
    if opts.json_schema:
        point_tag, pair_tag = point_tag + "s", pair_tag + "s"

    async def main() -> None:
        async with _open_pool(cfg, run_dir, on_status) as pool:
            async def ask(prompt: str, schema: dict[str, Any]) -> Any:
                # --json-schema: the structured-output schema goes in the request (servers that
                # lack it answer 400); otherwise JSON mode, with the schema for teachers whose
                # schema_mode takes one (the bundled llama.cpp teacher does).
                if opts.json_schema:
                    return await pool.chat("judge", [{"role": "user", "content": prompt}],
                                           params=dict(params, response_format=schema), salt="judge",
                                           teacher=judge_name)
                return await pool.chat("judge", [{"role": "user", "content": prompt}], params=params,
                                       json_mode=True, schema=schema["json_schema"]["schema"], salt="judge",
                                       teacher=judge_name)

            async def run_phase(jobs: list, planned: int, skipped: int, what: str) -> None:
                res.planned += planned
                res.skipped += skipped
                if on_progress:
                    on_progress(skipped, planned, what)
                d, _, f = await _drain(jobs, log, on_progress, what, planned, skipped)
                res.done += d
                res.failed += f

            def base(r: Any, tag: str, sha: str) -> dict[str, Any]:
                return {"tag": tag, "prompt_sha": sha, "teacher": r.teacher, "model": r.model,
                        "cached": r.cached, "raw": (r.text or "")[:RAW_KEEP]}

            # ---- phase 1: pointwise
            if opts.mode in ("pointwise", "both"):
                have = store.load_judgements(run_dir)
                jobs = []
                planned = skipped = 0
                for rec in recs:
                    task = user_content(rec.instruction, rec.input)
                    for c in cand_lists[rec.id]:
                        if not (c.get("output") or "").strip():
                            continue
                        planned += 1
                        old = have.get(("pointwise", rec.id, c["id"]))
                        if old is not None and old.get("tag") == point_tag:
                            skipped += 1
                            continue

                        def job(rec: Record = rec, c: dict = c, task: str = task):
                            async def run() -> dict[str, Any] | None:
                                r = await ask(point_prompt.render(task=task, response=c["output"]), POINTWISE_SCHEMA)
                                if not r.ok:
                                    return None
                                return {"kind": "pointwise", "record_id": rec.id, "cand": c["id"],
                                        "verdict": parse_pointwise(r.text).to_dict(), **base(r, point_tag, point_sha)}
                            return run
                        jobs.append(job())
                await run_phase(jobs, planned, skipped, "judge: pointwise")

            # ---- phase 2: pairwise, both orders
            if opts.mode in ("pairwise", "both"):
                have = store.load_judgements(run_dir)
                jobs = []
                planned = skipped = 0
                for rec in recs:
                    task = user_content(rec.instruction, rec.input)
                    cands = cand_lists[rec.id]
                    by_id = {c["id"]: c for c in cands}
                    scores = {}
                    for c in cands:
                        row = have.get(("pointwise", rec.id, c["id"]))
                        scores[c["id"]] = candidate_score({"judge": row["verdict"]}) if row else None
                    for x, y in _pairs_to_compare(cands, scores, opts.max_pairs):
                        for order in ("xy", "yx"):
                            planned += 1
                            old = have.get(("pairwise", rec.id, x, y, order))
                            if old is not None and old.get("tag") == pair_tag:
                                skipped += 1
                                continue
                            a, b = (x, y) if order == "xy" else (y, x)

                            def job(rec: Record = rec, x: str = x, y: str = y, order: str = order,
                                    a: str = a, b: str = b, task: str = task):
                                async def run() -> dict[str, Any] | None:
                                    prompt = pair_prompt.render(task=task, response_a=by_id[a]["output"],
                                                               response_b=by_id[b]["output"])
                                    r = await ask(prompt, PAIRWISE_SCHEMA)
                                    if not r.ok:
                                        return None
                                    return {"kind": "pairwise", "record_id": rec.id, "x": x, "y": y,
                                            "order": order, "winner": parse_pairwise(r.text),
                                            **base(r, pair_tag, pair_sha)}
                                return run
                            jobs.append(job())
                await run_phase(jobs, planned, skipped, "judge: pairwise")
            res.teacher_rows = pool.summary_rows()

    asyncio.run(main())
    merged = store.merge_run(run_dir, opts.min_margin)
    write_table(res.judged_path, [r.to_dict() for r in merged])
    _summarise(merged, res)
    return res


def _summarise(merged: list[Record], res: JudgeResult) -> None:
    best = []
    pairwise_all = []
    for rec in merged:
        for c in rec.candidates:
            if c.get("judge"):
                res.pointwise_total += 1
                res.status_counts[c["judge"].get("status")] += 1
        j = rec.judge
        if not j:
            continue
        if j.get("score") is not None:
            best.append(j["score"])
        for p in j.get("pairwise", []):
            pairwise_all.append(p)
            r = p.get("result")
            res.pairwise_counts["agreed" if r in ("x", "y") else r] += 1
        pair = j.get("pair") or {}
        if pair.get("kept"):
            res.pairs_kept += 1
        elif pair.get("reason"):
            res.pair_drops[pair["reason"]] += 1
    res.pairwise_total = len(pairwise_all)
    res.position_bias_rate, res.pairwise_compared = position_bias_rate(pairwise_all)
    res.mean_best = sum(best) / len(best) if best else None
