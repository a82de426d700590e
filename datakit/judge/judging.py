"""``datakit judge``: rubric scores for every candidate (pointwise), then order-swapped pairwise
comparisons, logged to ``judgements.jsonl`` and merged into ``judged.jsonl``.

Each logged unit carries the *tag* of the judge set-up that produced it: a hash of everything
that decides a verdict (each judge's endpoint and model, the prompt template's hash, the
sampling parameters and the response format sent). A rerun with the same set-up skips the
units already logged, however the judge is named; a different set-up judges again and its
lines win. Nothing is ever given a default: an answer that cannot be read is ``unparsed``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from datakit.errors import UserError
from datakit.export.formats import user_content
from datakit.judge import store
from datakit.judge.pairs import candidate_score, check_tie_break, position_bias_rate
from datakit.judge.parse import ASPECTS, parse_pairwise, parse_pointwise
from datakit.judge.work import Progress, batch_prefill, drain, load_run_records, open_pool, resolve_teachers
from datakit.prompts import load_prompt
from datakit.records import Record, write_table
from datakit.runs import RunLock

POINTWISE_PROMPT = "judge_pointwise"   # prompts/judge_pointwise.txt ($task, $response)
PAIRWISE_PROMPT = "judge_pairwise"     # prompts/judge_pairwise.txt ($task, $response_a, $response_b)
RAW_KEEP = 4000           # characters of a judge's raw answer kept in the log

Job = Callable[[], Awaitable[dict[str, Any] | None]]


@dataclass
class JudgeOptions:
    teacher: str | None = None
    mode: str = "both"
    max_pairs: int = 6
    min_margin: float = 1.0
    max_tokens: int = 512
    limit: int | None = None
    records: str | None = None  # only the records in this curated file (ids)
    json_schema: bool = False  # send OpenAI structured-output schemas instead of plain JSON mode
    tie_break: str | None = None  # pairs the judge cannot separate: none, temperature, teacher:NAME


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
    pair_basis: Counter = field(default_factory=Counter)  # kept pairs by basis: judge / design:…
    pair_drops: Counter = field(default_factory=Counter)
    teacher_rows: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None   # why the budget stopped the run (exit 1)


def _schema(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": {
        "type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}}}


_ASPECT_SCHEMA = {"type": "object", "properties": {"score": {"type": "integer"}, "rationale": {"type": "string"}},
                  "required": ["score", "rationale"], "additionalProperties": False}
# Ranges are not in the schema (not every server enforces them); the parser checks 1..10.
POINTWISE_SCHEMA = _schema("judge_pointwise", {a: _ASPECT_SCHEMA for a in ASPECTS})
PAIRWISE_SCHEMA = _schema("judge_pairwise", {"winner": {"type": "string", "enum": ["A", "B", "tie"]},
                                             "reason": {"type": "string"}})


# --------------------------------------------------------------------------- the judge set-up

class _Asker:
    """One judge set-up: which teacher(s), what is sent besides the prompt, and its tag."""

    def __init__(self, pool: Any, judge_name: str | None, opts: JudgeOptions):
        self.pool, self.judge_name, self.opts = pool, judge_name, opts
        self.params = {"temperature": 0.0, "max_tokens": opts.max_tokens}
        self.teachers = [pool.by_name[judge_name]] if judge_name else pool.for_role("judge")

    def _request_args(self, schema: dict[str, Any]) -> dict[str, Any]:
        # --json-schema: the structured-output schema goes in the request (servers that lack it
        # answer 400); otherwise JSON mode, with the schema for teachers whose schema_mode takes
        # one (the bundled llama.cpp teacher does).
        if self.opts.json_schema:
            return {"params": dict(self.params, response_format=schema), "json_mode": False, "schema": None}
        return {"params": self.params, "json_mode": True, "schema": schema["json_schema"]["schema"]}

    def tag(self, prompt_sha: str, schema: dict[str, Any]) -> str:
        """A hash of what decides a verdict: endpoint, model, request shape (sampling, response
        format) and routing weight of every judge, and the prompt template's hash. Teacher
        *names* are left out: the same judge named two ways is the same judge."""
        a = self._request_args(schema)
        judges = sorted(
            json.dumps({"endpoint": t.cache_identity, "weight": t.cfg.weight if len(self.teachers) > 1 else 1,
                        "request": self.pool.build_request(t, [], a["params"], a["json_mode"], a["schema"])},
                       sort_keys=True)
            for t in self.teachers)
        blob = json.dumps({"prompt": prompt_sha, "judges": judges}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    async def ask(self, prompt: str, schema: dict[str, Any]) -> Any:
        a = self._request_args(schema)
        return await self.pool.chat("judge", [{"role": "user", "content": prompt}], params=a["params"],
                                    json_mode=a["json_mode"], schema=a["schema"], salt="judge",
                                    teacher=self.judge_name)


def _log_base(r: Any, tag: str, sha: str) -> dict[str, Any]:
    return {"tag": tag, "prompt_sha": sha, "teacher": r.teacher, "model": r.model,
            "cached": r.cached, "raw": (r.text or "")[:RAW_KEEP]}


# --------------------------------------------------------------------------- units of work

@dataclass
class _Plan:
    jobs: list[Job] = field(default_factory=list)
    planned: int = 0
    skipped: int = 0

    def unit(self, old: dict[str, Any] | None, tag: str) -> bool:
        """Count a unit; True when it still has to be done."""
        self.planned += 1
        if old is not None and old.get("tag") == tag:
            self.skipped += 1
            return False
        return True


def _pointwise_plan(recs: list[Record], cand_lists: dict[str, list[dict]], have: dict, asker: _Asker) -> _Plan:
    prompt = load_prompt(POINTWISE_PROMPT)
    sha = prompt.sha256[:16]
    tag = asker.tag(sha, POINTWISE_SCHEMA)
    plan = _Plan()

    def job(rec: Record, c: dict[str, Any], task: str) -> Job:
        async def run() -> dict[str, Any] | None:
            r = await asker.ask(prompt.render(task=task, response=c["output"]), POINTWISE_SCHEMA)
            if not r.ok:
                return None
            return {"kind": "pointwise", "record_id": rec.id, "cand": c["id"],
                    "verdict": parse_pointwise(r.text).to_dict(), **_log_base(r, tag, sha)}
        return run

    for rec in recs:
        task = user_content(rec.instruction, rec.input)
        for c in cand_lists[rec.id]:
            if (c.get("output") or "").strip() and plan.unit(have.get(("pointwise", rec.id, c["id"])), tag):
                turn_task = store.conversation_task(rec, c["turn"]) if c.get("turn") else task
                plan.jobs.append(job(rec, c, turn_task))
    return plan


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


def _pairwise_plan(recs: list[Record], cand_lists: dict[str, list[dict]], have: dict, asker: _Asker,
                   max_pairs: int) -> _Plan:
    prompt = load_prompt(PAIRWISE_PROMPT)
    sha = prompt.sha256[:16]
    tag = asker.tag(sha, PAIRWISE_SCHEMA)
    plan = _Plan()

    def job(rec: Record, x: str, y: str, order: str, task: str, by_id: dict[str, dict]) -> Job:
        a, b = (x, y) if order == "xy" else (y, x)

        async def run() -> dict[str, Any] | None:
            r = await asker.ask(prompt.render(task=task, response_a=by_id[a]["output"],
                                              response_b=by_id[b]["output"]), PAIRWISE_SCHEMA)
            if not r.ok:
                return None
            return {"kind": "pairwise", "record_id": rec.id, "x": x, "y": y, "order": order,
                    "winner": parse_pairwise(r.text), **_log_base(r, tag, sha)}
        return run

    for rec in recs:
        if store.is_conversation(rec):  # turns are scored one by one, never paired
            continue
        task = user_content(rec.instruction, rec.input)
        cands = cand_lists[rec.id]
        by_id = {c["id"]: c for c in cands}
        scores = {}
        for c in cands:
            row = have.get(("pointwise", rec.id, c["id"]))
            scores[c["id"]] = candidate_score({"judge": row["verdict"]}) if row else None
        for x, y in _pairs_to_compare(cands, scores, max_pairs):
            for order in ("xy", "yx"):
                if plan.unit(have.get(("pairwise", rec.id, x, y, order)), tag):
                    plan.jobs.append(job(rec, x, y, order, task, by_id))
    return plan


# --------------------------------------------------------------------------- the command

def _check_options_judge(opts: JudgeOptions) -> None:
    if opts.mode not in ("pointwise", "pairwise", "both"):
        raise UserError("must be pointwise, pairwise or both", field="--mode")
    if opts.max_pairs < 1:
        raise UserError("must be at least 1", field="--max-pairs")
    if opts.min_margin < 0:
        raise UserError("must be 0 or more", field="--min-margin")
    if opts.max_tokens < 1:
        raise UserError("must be at least 1", field="--max-tokens")
    try:
        opts.tie_break = check_tie_break(opts.tie_break)
    except ValueError as e:
        raise UserError(str(e), field="--tie-break") from None


def _judge_name(cfg: Any, opts: JudgeOptions) -> str | None:
    if not opts.teacher:
        return None
    name = resolve_teachers(cfg, [opts.teacher], "judge")[0]
    return None if name == "local" else name


def judge(run_dir: str | Path, cfg: Any, opts: JudgeOptions, *, on_progress: Progress | None = None,
          on_status: Callable[[str], None] | None = None) -> JudgeResult:
    """Pointwise and/or pairwise judging into ``judgements.jsonl``, then ``judged.jsonl``."""
    run_dir = Path(run_dir)
    _check_options_judge(opts)
    recs = load_run_records(run_dir, opts.limit, opts.records)
    with RunLock(run_dir, "datakit judge"):  # one writer per run directory
        judge_name = _judge_name(cfg, opts)
        log = run_dir / store.JUDGEMENTS
        res = JudgeResult(judged_path=run_dir / store.JUDGED, n_records=len(recs))
        logged_cands = store.load_candidates(run_dir)
        cand_lists = {r.id: store.record_candidates(r, logged_cands.get(r.id)) for r in recs}

        async def run_phase(pool: Any, plan: _Plan, what: str) -> None:
            res.planned += plan.planned
            res.skipped += plan.skipped
            if on_progress:
                on_progress(plan.skipped, plan.planned, what)
            await batch_prefill(pool, plan.jobs, run_dir, what, on_progress)
            refused = pool.budget.refused if pool.budget else 0
            d, _, f = await drain(plan.jobs, log, on_progress, what, plan.planned, plan.skipped)
            res.done += d
            res.failed += f - ((pool.budget.refused - refused) if pool.budget else 0)

        async def main() -> None:
            async with open_pool(cfg, run_dir, on_status) as pool:
                asker = _Asker(pool, judge_name, opts)
                if opts.mode in ("pointwise", "both"):
                    plan = _pointwise_plan(recs, cand_lists, store.load_judgements(run_dir), asker)
                    await run_phase(pool, plan, "judge: pointwise")
                res.stopped = pool.budget_stop()
                if opts.mode in ("pairwise", "both") and not res.stopped:
                    plan = _pairwise_plan(recs, cand_lists, store.load_judgements(run_dir), asker, opts.max_pairs)
                    await run_phase(pool, plan, "judge: pairwise")
                res.teacher_rows = pool.summary_rows()
                res.stopped = pool.budget_stop()

        asyncio.run(main())
        merged = store.merge_run(run_dir, opts.min_margin, {r.id for r in recs} if opts.records else None,
                                 opts.tie_break)
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
            res.pair_basis[pair.get("basis") or "judge"] += 1
        elif pair.get("reason"):
            res.pair_drops[pair["reason"]] += 1
    res.pairwise_total = len(pairwise_all)
    res.position_bias_rate, res.pairwise_compared = position_bias_rate(pairwise_all)
    res.mean_best = sum(best) / len(best) if best else None
