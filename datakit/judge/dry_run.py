"""``datakit respond|judge RUN --dry-run``: the requests the command would send, priced.

The commands' own planning and request code runs against a pool in collect mode
(:mod:`datakit.teachers.estimate`), so the requests counted are the ones a real run sends,
skipping the units already logged and counting those the cache answers as free. Completion
lengths are the stated assumptions of :data:`datakit.teachers.estimate.ASSUMPTIONS`. For
``judge``, pairwise comparisons are planned from the scores already logged: before pointwise
judging has run, the pairs compared may differ but their number does not.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from datakit.judge import store
from datakit.judge.judging import (JudgeOptions, _Asker, _check_options_judge, _judge_name, _pairwise_plan,
                                   _pointwise_plan)
from datakit.judge.respond import RespondOptions, RespondResult, _check_options_respond, plan_units, respond_job
from datakit.judge.work import load_run_records
from datakit.teachers.estimate import (ASSUMPTIONS, PAIRWISE_TOKENS, POINTWISE_TOKENS, RESPOND_FILL, Estimate,
                                       collect_all, planning_pool)


def estimate_respond(run_dir: str | Path, cfg: Any, opts: RespondOptions) -> Estimate:
    run_dir = Path(run_dir)
    _check_options_respond(opts)
    recs = load_run_records(run_dir, opts.limit, opts.records)
    units, _ = plan_units(run_dir, recs, cfg, opts, RespondResult(path=run_dir / store.CANDIDATES))
    with planning_pool(cfg, run_dir) as pool:
        est = Estimate(pool)
        pending = asyncio.run(collect_all(pool, [respond_job(pool, opts, *u) for u in units]))
        est.add_pending(pending, int(opts.max_tokens * RESPOND_FILL))
    est.notes.append(f"respond: {ASSUMPTIONS['respond']} ({int(opts.max_tokens * RESPOND_FILL)} tokens)")
    return est


def estimate_judge(run_dir: str | Path, cfg: Any, opts: JudgeOptions) -> Estimate:
    run_dir = Path(run_dir)
    _check_options_judge(opts)
    recs = load_run_records(run_dir, opts.limit, opts.records)
    judge_name = _judge_name(cfg, opts)
    logged = store.load_candidates(run_dir)
    cand_lists = {r.id: store.record_candidates(r, logged.get(r.id)) for r in recs}
    have = store.load_judgements(run_dir)
    with planning_pool(cfg, run_dir) as pool:
        est = Estimate(pool)
        asker = _Asker(pool, judge_name, opts)
        phases = []
        if opts.mode in ("pointwise", "both"):
            phases.append(("judge: pointwise", _pointwise_plan(recs, cand_lists, have, asker), POINTWISE_TOKENS))
        if opts.mode in ("pairwise", "both"):
            phases.append(("judge: pairwise", _pairwise_plan(recs, cand_lists, have, asker, opts.max_pairs),
                           PAIRWISE_TOKENS))
        for what, plan, completion in phases:
            est.add_pending(asyncio.run(collect_all(pool, plan.jobs)), completion)
            est.notes.append(f"{what}: {ASSUMPTIONS[what]}")
    return est
