"""Judging base vs tuned answers with a teacher, in both orders, through the teacher pool.

The judge is what ``datakit judge`` uses: the configured teacher with the ``judge`` role (or
one named with ``--judge``), else the bundled local teacher, started and stopped by
:func:`datakit.teachers.pool.open_teachers`. The prompt is ``prompts/judge_pairwise.txt`` and
answers are read by :func:`datakit.judge.parse.parse_pairwise`. Every answer goes through the
pool's SQLite response cache, so a rerun pays for nothing twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

from datakit.judge.parse import parse_pairwise
from datakit.judge.judging import PAIRWISE_PROMPT, PAIRWISE_SCHEMA
from datakit.judge.work import resolve_teachers
from datakit.prompts import load_prompt
from datakit.train.winrate import outcome

CACHE_FILE = "validation-cache.sqlite"
RAW_KEEP = 600  # characters of each raw judge answer kept in validation.json

Progress = Callable[[int, int], None]


def judge_name(cfg: Any, name: str | None) -> str | None:
    """The teacher to send judge requests to (None: route by the ``judge`` role / the local one)."""
    if not name:
        return None
    resolved = resolve_teachers(cfg, [name], "judge")[0]
    return None if resolved == "local" else resolved


def judge_all(cfg: Any, items: list[dict[str, str]], train_dir: Path, *, teacher: str | None = None,
              max_tokens: int = 256, on_progress: Progress | None = None,
              on_status: Callable[[str], None] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Judge each ``{"prompt", "base", "tuned"}`` in both orders. Returns the judgements (the
    items with ``ab``, ``ba``, ``outcome``) and who judged (``teacher``, ``model``, ``bundled``)."""
    from datakit.teachers.pool import open_teachers

    name = judge_name(cfg, teacher)
    prompt = load_prompt(PAIRWISE_PROMPT)
    params = {"temperature": 0.0, "max_tokens": max_tokens}
    schema = PAIRWISE_SCHEMA["json_schema"]["schema"]
    done = [0]
    who: dict[str, Any] = {"teacher": None, "model": None, "bundled": not cfg.teachers}

    async def ask(pool: Any, task: str, a: str, b: str) -> tuple[str, str]:
        text = prompt.render(task=task, response_a=a, response_b=b)
        r = await pool.chat("judge", [{"role": "user", "content": text}], params=params, json_mode=True,
                            schema=schema, salt="judge", teacher=name)
        who["teacher"], who["model"] = who["teacher"] or r.teacher, who["model"] or r.model
        done[0] += 1
        if on_progress:
            on_progress(done[0], 2 * len(items))
        if not r.ok:
            return "unparsed", f"(request failed: {r.error})"
        return parse_pairwise(r.text) or "unparsed", (r.text or "")[:RAW_KEEP]

    async def one(pool: Any, it: dict[str, str]) -> dict[str, Any]:
        (ab, raw_ab), (ba, raw_ba) = await asyncio.gather(ask(pool, it["prompt"], it["base"], it["tuned"]),
                                                          ask(pool, it["prompt"], it["tuned"], it["base"]))
        res, agree = outcome(None if ab == "unparsed" else ab, None if ba == "unparsed" else ba)
        return {**it, "ab": ab, "ba": ba, "outcome": res, "orders_agree": agree,
                "raw_ab": raw_ab, "raw_ba": raw_ba}

    async def main() -> list[dict[str, Any]]:
        async with open_teachers(cfg, cache_path=train_dir / CACHE_FILE, log_dir=train_dir,
                                 on_status=on_status) as pool:
            if on_progress:
                on_progress(0, 2 * len(items))
            return list(await asyncio.gather(*(one(pool, it) for it in items)))

    judgements = asyncio.run(main()) if items else []
    return judgements, who
