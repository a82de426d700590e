"""``--dry-run``: what a command would send, what it would cost and how long the limits make it.

The commands' own code builds the requests, through a pool in collect mode that has no HTTP
client at all (:func:`planning_pool`): nothing is sent, no key is needed, and a request the
run's response cache already answers counts as free. Per teacher it sums:

* prompt tokens of the real rendered prompts, counted with the tokenizer the teacher names
  (``tokenizer`` in its config, with its chat template), else approximated: one token per CJK
  character, one per four other characters, plus 3 per message and 3 per request (the chat
  overhead OpenAI documents);
* completion tokens: each command states its assumption (see :data:`ASSUMPTIONS`); the worst
  case is ``max_tokens`` (what ``--max-cost`` reserves);
* cost online and through the batch API (the teacher's prices), and the worst case;
* the wall time its limits imply: the largest of requests / ``rpm``, tokens / ``tpm`` and
  requests x latency / concurrency, with a latency of 1 s plus 50 completion tokens per second.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from datakit.teachers.cache import ResponseCache
from datakit.teachers.pool import Pending, TeacherPool, TeacherStats, prices

FIRST_TOKEN_S = 1.0
DECODE_TOKENS_PER_S = 50.0
ASSUMPTIONS = {
    "respond": "answers fill half of --max-tokens",
    "judge: pointwise": "a rubric answer is 200 tokens (six scores with a short rationale each)",
    "judge: pairwise": "a pairwise verdict is 60 tokens",
}
RESPOND_FILL = 0.5
POINTWISE_TOKENS = 200
PAIRWISE_TOKENS = 60


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF or 0xF900 <= o <= 0xFAFF


def approx_tokens(text: str) -> int:
    """One token per CJK character, one per four other characters."""
    cjk = sum(1 for ch in text if _is_cjk(ch)) if not text.isascii() else 0
    return cjk + round((len(text) - cjk) / 4)


def prompt_tokens(messages: list[dict[str, Any]], tokenizer: Any = None) -> int:
    if tokenizer is not None:
        from datakit.export.tokens import conversation_lengths

        return conversation_lengths(tokenizer, [messages])[0]
    return sum(approx_tokens(str(m.get("content") or "")) + 3 for m in messages) + 3


@dataclass
class Tally:
    requests: int = 0
    cached: int = 0
    prompt: int = 0
    completion: int = 0       # as assumed
    completion_max: int = 0   # max_tokens


@dataclass
class Estimate:
    pool: TeacherPool
    tallies: dict[str, Tally] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def tally(self, teacher: str) -> Tally:
        return self.tallies.setdefault(teacher, Tally())

    def add(self, teacher: str, prompt: int, completion: int, max_tokens: int, n: int = 1) -> None:
        t = self.tally(teacher)
        t.requests += n
        t.prompt += prompt * n
        t.completion += min(completion, max_tokens) * n
        t.completion_max += max_tokens * n

    def add_pending(self, pending: list[Pending], completion: int) -> None:
        """Requests collected from a command's own code, each answering ``completion`` tokens
        (at most its ``max_tokens``); those the cache answers count as free."""
        for p in pending:
            if p.cached:
                self.tally(p.teacher.name).cached += 1
                continue
            tok = _tokenizer(p.teacher.cfg.tokenizer)
            self.add(p.teacher.name, prompt_tokens(p.request["messages"], tok), completion,
                     int(p.request.get("max_tokens") or completion))

    def rows(self, concurrency: int) -> list[dict[str, Any]]:
        """One row per teacher (the table ``--dry-run`` prints)."""
        rows = []
        for name, s in self.tallies.items():
            t = self.pool.by_name[name]
            pi, po = prices(t.cfg)
            bi, bo = prices(t.cfg, batch=True)
            rows.append({"teacher": name, "model": t.cfg.model, "requests": s.requests,
                         "in cache (free)": s.cached, "tok in": s.prompt, "tok out (est.)": s.completion,
                         "tok out (max)": s.completion_max,
                         "USD online": round((s.prompt * pi + s.completion * po) / 1e6, 4),
                         "USD batch": round((s.prompt * bi + s.completion * bo) / 1e6, 4),
                         "USD worst case": round((s.prompt * pi + s.completion_max * po) / 1e6, 4),
                         "wall time (limits)": wall_time(s, t.cfg, concurrency)})
        return rows

    def totals(self) -> dict[str, float]:
        out = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0, "batch_cost": 0.0}
        for row in self.rows(1):
            out["requests"] += row["requests"]
            out["prompt_tokens"] += row["tok in"]
            out["completion_tokens"] += row["tok out (est.)"]
            out["cost"] += row["USD online"]
            out["batch_cost"] += row["USD batch"]
        return out


def wall_time(s: Tally, tcfg: Any, concurrency: int) -> str:
    """What the teacher's limits imply for these requests, and which limit decides it."""
    if not s.requests:
        return "0 s"
    latency = FIRST_TOKEN_S + s.completion / s.requests / DECODE_TOKENS_PER_S
    conc = min(tcfg.concurrency or concurrency, concurrency)
    bounds = {"concurrency": s.requests * latency / conc}
    if tcfg.rpm:
        bounds["rpm"] = s.requests / tcfg.rpm * 60
    if tcfg.tpm:
        bounds["tpm"] = (s.prompt + s.completion) / tcfg.tpm * 60
    which = max(bounds, key=bounds.get)
    return f"{_duration(bounds[which])} ({which})"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{math.ceil(seconds)} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _tokenizer(name: str | None) -> Any:
    if not name:
        return None
    from datakit.export.tokens import load_tokenizer

    return load_tokenizer(name)


class _PlanTeacher:
    """A teacher as a plan needs it: its config, name and cache identity; no client."""

    def __init__(self, cfg: Any, cache_identity: str | None = None):
        self.cfg, self.name = cfg, cfg.name
        self.cache_identity = cache_identity or cfg.base_url.rstrip("/")
        self.stats = TeacherStats()


@contextlib.contextmanager
def planning_pool(cfg: Any, run_dir: str | Path) -> Iterator[TeacherPool]:
    """A pool over the run's response cache (read only when it exists) whose teachers have no
    client: the commands' code runs against it in collect mode and nothing leaves the machine."""
    if cfg.teachers:
        teachers = [_PlanTeacher(tc) for tc in cfg.teachers]
    else:
        from datakit.teachers.local import LocalTeacher

        local = LocalTeacher(cfg.local)
        teachers = [_PlanTeacher(local.teacher_config(), local.cache_identity)]
    path = Path(run_dir) / "cache.sqlite"
    cache = ResponseCache(path if path.exists() else ":memory:")
    try:
        yield TeacherPool(teachers, cache, cfg.concurrency)
    finally:
        cache.close()


async def collect_all(pool: TeacherPool, calls: list[Any]) -> list[Pending]:
    """Every request ``calls`` make, noted (cached or not) and none sent."""
    with pool.collecting() as pending:
        for c in calls:
            await c()
    return list({p.key: p for p in pending}.values())
