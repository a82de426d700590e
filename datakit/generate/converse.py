"""Multi-turn conversations: ``datakit converse RUN [--turns 3]``.

Each accepted record of the source run opens a conversation: its task (instruction and input,
joined as SFT export joins them) is the first user turn, its output the first answer. Then,
up to ``turns`` user turns in all, a user-simulator teacher (role ``generate``, prompt
``prompts/converse_user.txt``) writes a follow-up that depends on the last answer, and the
assistant teacher (role ``respond``) answers it, seeing the whole conversation.

A conversation stops early when the simulator replies ``[DONE]`` (``user_done``), when a
follow-up fails the rule filters or repeats an earlier user turn (``user_turn_rejected``; the
filter verdict is kept), or when a request fails or the answer is empty (``teacher_error``,
``empty_answer``; the dangling user turn is dropped). A conversation left with one user turn is
rejected (``no_follow_up``). Records carry ``messages`` (user/assistant alternating, the last
one an assistant turn); ``instruction``/``input``/``output`` stay the first exchange, so a tool
that does not know ``messages`` still sees a coherent single-turn record.

The output is a derived run directory (``RUN/converse`` by default); a round is a batch of
``batch`` conversations, committed together and replayed from the cache after kill -9.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from datakit.config import DatakitConfig
from datakit.curate.rules import RuleFilter, RulesConfig
from datakit.errors import UserError
from datakit.export.formats import user_content
from datakit.generate import derived
from datakit.generate.loop import normalise
from datakit.prompts import load_prompt
from datakit.records import Record, Verdict
from datakit.runs import RunDir, RunLock

_DONE = re.compile(r"^\W*\[?\s*done\s*\]?\W*$", re.IGNORECASE)


@dataclass
class ConverseOptions:
    turns: int = 3                   # user turns per conversation, the first one included
    batch: int = 32                  # conversations per committed round
    limit: int | None = None         # only the first N source records
    system: str | None = None        # a system message to open every conversation
    max_tokens: int = 400
    temperature: float = 0.7


def check_options(opts: ConverseOptions) -> None:
    for name, low in (("turns", 2), ("batch", 1), ("max_tokens", 1)):
        if getattr(opts, name) < low:
            raise UserError(f"must be at least {low} (got {getattr(opts, name)})", field=f"--{name.replace('_', '-')}")
    if opts.limit is not None and opts.limit < 1:
        raise UserError(f"must be at least 1 (got {opts.limit})", field="--limit")
    if not 0.0 <= opts.temperature <= 2.0:
        raise UserError(f"must be between 0 and 2 (got {opts.temperature})", field="--temperature")


def render_conversation(messages: list[dict[str, str]]) -> str:
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names[m['role']]}: {m['content']}" for m in messages)


def is_done(text: str) -> bool:
    return bool(_DONE.match(text or ""))


class Conversations:
    def __init__(self, cfg: DatakitConfig, pool: Any, opts: ConverseOptions, source: list[Record]):
        self.g, self.pool, self.opts, self.source = cfg.generate, pool, opts, source
        self.rules = RuleFilter(RulesConfig(min_words=1, max_words=self.g.max_words))
        self.p_user = load_prompt("converse_user")

    async def step(self, round_no: int) -> tuple[list[Record], list[Record]] | None:
        b = self.opts.batch
        parents = self.source[(round_no - 1) * b: round_no * b]
        if not parents:
            return None
        recs = await asyncio.gather(*(self.converse(round_no, p) for p in parents))
        return [r for r in recs if r.status == "accepted"], [r for r in recs if r.status != "accepted"]

    async def converse(self, round_no: int, parent: Record) -> Record:
        o = self.opts
        msgs = [{"role": "system", "content": o.system}] if o.system else []
        msgs += [{"role": "user", "content": user_content(parent.instruction, parent.input)},
                 {"role": "assistant", "content": parent.output}]
        turns: list[dict[str, Any]] = []
        rec = Record(id=f"c-{parent.id}", instruction=parent.instruction, input=parent.input, output=parent.output,
                     is_classification=parent.is_classification,
                     lineage={"method": "converse", "parent": parent.id, "round": round_no, "turns": turns,
                              "user_prompt": self.p_user.lineage()})
        stop = "max_turns"
        for k in range(2, o.turns + 1):
            stop = await self._turn(rec, msgs, turns, k)
            if stop:
                break
        rec.lineage["stopped"] = stop or "max_turns"
        rec.extra["messages"] = msgs
        n_user = sum(m["role"] == "user" for m in msgs)
        rec.lineage["n_turns"] = n_user
        if n_user < 2:
            rec.status, rec.reason = "rejected", "no_follow_up"
        return rec

    async def _turn(self, rec: Record, msgs: list[dict[str, str]], turns: list[dict[str, Any]], k: int) -> str | None:
        """One follow-up and its answer, appended to ``msgs``; the stop reason, or None to go on."""
        o = self.opts
        params = {"temperature": o.temperature, "max_tokens": o.max_tokens}
        body = self.p_user.render(conversation=render_conversation([m for m in msgs if m["role"] != "system"]))
        u = await self.pool.chat("generate", [{"role": "user", "content": body}], params=params, salt="converse:user")
        info: dict[str, Any] = {"turn": k, "user": _who(u)}
        turns.append(info)
        if not u.ok:
            info["user"]["error"] = u.error
            return "teacher_error"
        text = (u.text or "").strip()
        if is_done(text):
            return "user_done"
        verdict = self._check_user_turn(text, msgs)
        if verdict is not None:
            info["verdict"] = verdict.to_dict()
            rec.filters.append(verdict.to_dict())
            return "user_turn_rejected"
        msgs.append({"role": "user", "content": text})
        a = await self.pool.chat("respond", list(msgs), params=params, salt="converse:assistant")
        info["assistant"] = _who(a)
        if not a.ok or not (a.text or "").strip():
            msgs.pop()
            info["assistant"]["error"] = a.error or "empty answer"
            return "teacher_error" if not a.ok else "empty_answer"
        msgs.append({"role": "assistant", "content": a.text.strip()})
        return None

    def _check_user_turn(self, text: str, msgs: list[dict[str, str]]) -> Verdict | None:
        """The first failed rule filter of a follow-up, or a repeat of an earlier user turn."""
        for v in self.rules.check(text):
            if not v.passed and v.filter != "blacklist":  # a follow-up may well say "the file"
                return v
        if normalise(text) in {normalise(m["content"]) for m in msgs if m["role"] == "user"}:
            return Verdict("exact_dup", False, None, "exact_duplicate")
        return None


def _who(ans: Any) -> dict[str, Any]:
    return {"teacher": ans.teacher, "model": ans.model, "params": ans.params, "cached": ans.cached}


async def converse(cfg: DatakitConfig, source: str | Path, opts: ConverseOptions, *,
                   out: str | Path | None = None, command: str = "datakit converse",
                   on_status: Callable[[str], None] | None = None) -> derived.DerivedSummary:
    """Run (or resume) multi-turn generation from ``source`` into ``out``."""
    from datakit.teachers.pool import open_teachers

    check_options(opts)
    recs = [r for r in derived.source_records(source)[:opts.limit] if (r.output or "").strip()]
    run = RunDir(out or derived.default_out(source, "converse"))
    summary = derived.DerivedSummary(run_dir=str(run.path), source=str(source))
    last = -(-len(recs) // opts.batch)
    with RunLock(run.path, "datakit converse"):
        run.prepare({**cfg.snapshot(), "converse": asdict(opts), "source": str(source)}, command)
        state, _, _ = derived.restore(run)
        if state["round"] >= last:
            return derived.finished(summary, state)
        async with open_teachers(cfg, run.cache_path, log_dir=run.path, on_status=on_status) as pool:
            conv = Conversations(cfg, pool, opts, recs)
            return await derived.run_rounds(run, pool, state, last, conv.step, summary)
