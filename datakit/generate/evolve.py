"""Evol-Instruct: rewrite accepted tasks with the teacher to make them harder (in depth) or to
branch out to rarer tasks of the same field (in breadth), after Xu et al. 2023 (WizardLM).

``datakit evolve RUN`` writes a derived run directory (``RUN/evolve`` by default; see
:mod:`datakit.generate.derived`). Round 1 evolves the source run's accepted records, round r
the records accepted in round r-1. Each parent gets one mutation, drawn by an RNG seeded with
``(seed, round, parent id)``. An evolution is eliminated, with a reason code, when:

* the request failed (``teacher_error``) or the answer is empty (``empty``), a refusal
  (``refusal``) or fails the rule filters (``too_short``, ``blacklisted``, ...);
* it leaks the rewriting prompt's own words (``leaked_prompt``: "#Rewritten Prompt#",
  "given prompt", ...);
* it adds nothing over its parent (``no_change``): the teacher answered NO CHANGE, or ROUGE-L F
  to the parent is above ``parent_threshold``;
* it is not new (``exact_duplicate`` of a seed, a source record or a kept evolution;
  ``too_similar``: ROUGE-L F above ``generate.rouge_threshold`` against a seed or a kept
  evolution — the parent is judged by ``no_change`` instead, since an in-depth rewrite keeps
  most of its parent's words by design).

Survivors get an input and an output exactly as ``generate`` makes them (same prompts, same
``copied_example`` check).
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from datakit.config import DatakitConfig
from datakit.curate.rouge import RougeLNovelty, rouge_l_f, tokenize
from datakit.errors import UserError
from datakit.export.formats import user_content
from datakit.generate import derived
from datakit.generate.loop import INSTANCE_FAILURES, SelfInstruct, normalise, task_filters
from datakit.prompts import load_prompt
from datakit.records import Record, Verdict
from datakit.runs import RunDir, RunLock

DEPTH = {
    "constraints": "add one more constraint or requirement that the answer must meet.",
    "deepen": "where the task touches a question, ask about it in more depth and breadth.",
    "concretise": "replace a general idea in the task with a more specific, concrete one.",
    "reasoning": "make the task need several explicit steps of reasoning to answer, where it "
                 "can now be answered in one.",
    "complicate_input": "make the input the task works on harder: longer, messier or more "
                        "detailed data, text or code (write that input into the task).",
}
FAMILIES = {"depth": tuple(DEPTH), "breadth": ("breadth",)}

_LEAK = re.compile(r"#\s*(?:rewritten|given|created|new|original)\s+(?:prompt|task)\s*#|"
                   r"\b(?:given|rewritten|created|original)\s+prompt\b|\boriginal task\b|"
                   r"改写后的(?:任务|提示)|原(?:始)?任务|给定的提示", re.IGNORECASE)
_REFUSAL = re.compile(r"^\W*(?:i'?m sorry|i am sorry|sorry\b|i can ?not\b|i can't|i'?m unable|"
                      r"i am unable|as an ai\b|抱歉|对不起|很抱歉|我无法|我不能|作为(?:一个)?(?:ai|人工智能))",
                      re.IGNORECASE)
_NO_CHANGE = re.compile(r"^\W*no[ _-]?change\W*$", re.IGNORECASE)


@dataclass
class EvolveOptions:
    rounds: int = 3
    mutations: str = "depth,breadth"
    parent_threshold: float = 0.9
    limit: int | None = None        # evolve only the first N source records


def resolve_mutations(spec: str) -> list[str]:
    """``depth,breadth`` (families) or method names (``constraints,breadth``), in that order."""
    out: list[str] = []
    for name in (s.strip() for s in spec.split(",")):
        if not name:
            continue
        if name in FAMILIES:
            out += FAMILIES[name]
        elif name in DEPTH or name == "breadth":
            out.append(name)
        else:
            known = ", ".join([*FAMILIES, *DEPTH])
            raise UserError(f"unknown mutation {name!r} (known: {known})", field="--mutations")
    if not out:
        raise UserError("name at least one mutation", field="--mutations")
    return list(dict.fromkeys(out))


def check_options(opts: EvolveOptions) -> list[str]:
    if opts.rounds < 1:
        raise UserError(f"must be at least 1 (got {opts.rounds})", field="--rounds")
    if not 0.0 < opts.parent_threshold <= 1.0:
        raise UserError(f"must be above 0 and at most 1 (got {opts.parent_threshold})", field="--parent-threshold")
    if opts.limit is not None and opts.limit < 1:
        raise UserError(f"must be at least 1 (got {opts.limit})", field="--limit")
    return resolve_mutations(opts.mutations)


def clean_rewrite(text: str | None) -> str:
    """The rewritten task: surrounding space, quotes and code fences removed."""
    t = (text or "").strip()
    t = re.sub(r"^```\w*\n?|\n?```$", "", t).strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'“”「」":
        t = t[1:-1].strip()
    return t


def rewrite_verdict(text: str, parent: str, threshold: float, tokenizer: str) -> Verdict:
    """Whether a rewrite is a usable new task, before the shared filters."""
    if not text:
        return Verdict("evolution", False, None, "empty")
    if _NO_CHANGE.match(text):
        return Verdict("evolution", False, None, "no_change", {"teacher_said": "NO CHANGE"})
    if _REFUSAL.match(text):
        return Verdict("evolution", False, None, "refusal")
    leak = _LEAK.search(text)
    if leak:
        return Verdict("evolution", False, None, "leaked_prompt", {"match": leak.group(0)})
    f = rouge_l_f(tokenize(text, tokenizer), tokenize(parent, tokenizer))
    keep = f <= threshold
    return Verdict("evolution", keep, round(f, 4), None if keep else "no_change",
                   {"parent_rouge_l": round(f, 4), "threshold": threshold})


class Evolver:
    """The state of an evolve run: the pool of known tasks and the parents of each round."""

    def __init__(self, cfg: DatakitConfig, run: RunDir, pool: Any, opts: EvolveOptions,
                 mutations: list[str], source: list[Record]):
        self.g, self.pool, self.opts, self.mutations = cfg.generate, pool, opts, mutations
        self.si = SelfInstruct(cfg, run, pool)  # rule filters, seeds, instance prompts and checks
        self.novelty = RougeLNovelty(self.g.rouge_threshold, self.g.rouge_tokenizer)
        self.seen_exact = {normalise(s.instruction) for s in self.si.seeds}
        self.seen_exact |= {normalise(r.instruction) for r in source}
        for s in self.si.seeds:
            self.novelty.add(s.instruction, s.id)
        self.parents: dict[int, list[Record]] = {0: source}
        self.p_depth, self.p_breadth = load_prompt("evolve_depth"), load_prompt("evolve_breadth")

    def restore(self, accepted: list[Record], rejected: list[Record]) -> None:
        kept = [r for r in rejected if r.reason in INSTANCE_FAILURES and "instance" in r.lineage]
        for rec in sorted(accepted + kept, key=lambda r: r.id):
            self._remember(rec)
        for rec in accepted:
            self.parents.setdefault(rec.lineage["round"], []).append(rec)

    def _remember(self, rec: Record) -> None:
        self.novelty.add(rec.instruction, rec.id)
        self.seen_exact.add(normalise(rec.instruction))

    def mutation(self, round_no: int, parent: Record) -> str:
        return random.Random(f"{self.g.seed}:evolve:{round_no}:{parent.id}").choice(self.mutations)

    def request(self, parent: Record, mutation: str) -> tuple[list[dict[str, str]], Any]:
        prompt = self.p_breadth if mutation == "breadth" else self.p_depth
        body = prompt.render(prompt=user_content(parent.instruction, parent.input), method=DEPTH.get(mutation, ""))
        return [{"role": "user", "content": body}], prompt

    async def step(self, round_no: int) -> tuple[list[Record], list[Record]] | None:
        parents = self.parents.get(round_no - 1) or []
        if not parents:
            return None
        g = self.g
        params = {"temperature": g.task_temperature, "top_p": g.task_top_p, "max_tokens": g.task_max_tokens}
        plans = [(p, self.mutation(round_no, p)) for p in parents]
        reqs = [self.request(p, m) for p, m in plans]
        answers = await asyncio.gather(*(self.pool.chat("generate", msgs, params=params) for msgs, _ in reqs))
        tasks, rejected = [], []
        for i, ((parent, mut), (_, prompt), ans) in enumerate(zip(plans, reqs, answers)):
            rec = self._candidate(round_no, i, parent, mut, prompt, ans)
            (tasks if rec.status == "accepted" else rejected).append(rec)
        ok = await asyncio.gather(*(self.si._instance(rec) for rec in tasks))
        accepted = [r for r, good in zip(tasks, ok) if good]
        rejected += [r for r, good in zip(tasks, ok) if not good]
        self.parents[round_no] = accepted
        return accepted, rejected

    def _candidate(self, round_no: int, i: int, parent: Record, mut: str, prompt: Any, ans: Any) -> Record:
        lineage = {"method": "evolve", "parent": parent.id,
                   "root": parent.lineage.get("root", parent.id) if parent.lineage.get("method") == "evolve" else parent.id,
                   "round": round_no, "mutation": mut, "family": "breadth" if mut == "breadth" else "depth",
                   "teacher": ans.teacher, "model": ans.model, "prompt": prompt.lineage(), "params": ans.params,
                   "cached": ans.cached}
        rec = Record(id=f"e{round_no:02d}-{i:05d}", instruction=clean_rewrite(ans.text), lineage=lineage)
        if not ans.ok:
            rec.status, rec.reason, lineage["error"] = "rejected", "teacher_error", ans.error
            return rec
        parent_text = user_content(parent.instruction, parent.input)
        rec.add_verdict(rewrite_verdict(rec.instruction, parent_text, self.opts.parent_threshold,
                                        self.g.rouge_tokenizer))
        if rec.status != "accepted":
            rec.lineage["raw"] = (ans.text or "")[:2000]
            return rec
        self._filter(rec)
        return rec

    def _filter(self, rec: Record) -> None:
        """generate's filters: rules, exact duplicate, ROUGE-L novelty (see the module docstring)."""
        if task_filters(rec, self.si.rules, self.seen_exact, self.novelty, self.g.rouge_threshold):
            self._remember(rec)


async def evolve(cfg: DatakitConfig, source: str | Path, opts: EvolveOptions, *, out: str | Path | None = None,
                 command: str = "datakit evolve", on_status: Callable[[str], None] | None = None
                 ) -> derived.DerivedSummary:
    """Run (or resume, or extend with more rounds) Evol-Instruct from ``source`` into ``out``."""
    from datakit.teachers.pool import open_teachers

    mutations = check_options(opts)
    recs = derived.source_records(source)[:opts.limit]
    run = RunDir(out or derived.default_out(source, "evolve"))
    summary = derived.DerivedSummary(run_dir=str(run.path), source=str(source))
    with RunLock(run.path, "datakit evolve"):
        run.prepare({**cfg.snapshot(), "evolve": asdict(opts), "source": str(source)}, command)
        state, accepted, rejected = derived.restore(run)
        if state["round"] >= opts.rounds:
            return derived.finished(summary, state)
        async with open_teachers(cfg, run.cache_path, log_dir=run.path, on_status=on_status) as pool:
            ev = Evolver(cfg, run, pool, opts, mutations, recs)
            ev.restore(accepted, rejected)
            return await derived.run_rounds(run, pool, state, opts.rounds, ev.step, summary)
