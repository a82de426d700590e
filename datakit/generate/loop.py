"""The self-instruct loop, in rounds that commit atomically and replay exactly.

Each round:

1. builds ``requests_per_round`` task-generation prompts, each showing ``human_demos`` seed
   tasks and ``machine_demos`` tasks made earlier in this run, sampled with an RNG seeded by
   ``(seed, round, request)`` — so a round's requests are a pure function of the committed
   state, and a replayed round hits the response cache instead of paying again;
2. parses every answer into candidate instructions and puts each, in request order, through
   the rule filters, an exact-duplicate check and the ROUGE-L novelty filter (against the
   seeds and every task kept so far); every rejected candidate is kept with its reason;
3. asks a teacher for each new task's input and output (output first for classification);
4. appends accepted records and rejected candidates to their logs (fsync'd), then commits the
   round in ``state.json``.

A run stops when ``num`` records are accepted (tasks beyond what is still needed are recorded
as ``surplus``, not sent), or after ``max_idle_rounds`` rounds in a row accept nothing.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from datakit.config import DatakitConfig
from datakit.curate.copies import CopyDetector
from datakit.curate.rouge import RougeLNovelty
from datakit.curate.rules import RuleFilter, RulesConfig
from datakit.errors import UserError
from datakit.generate.parse import parse_instance, parse_task_list
from datakit.generate.personas import Persona, load_personas, pick_persona
from datakit.prompts import load_prompt
from datakit.records import JsonlAppender, Record, Verdict, read_jsonl
from datakit.runs import RunDir, RunLock
from datakit.seeds import SeedTask, load_seeds
from datakit.teachers.pool import TeacherPool, TeacherStats

# Reasons a task can fail after it passed the novelty filter: it still counts as "seen" for
# the novelty filter when a run is resumed, exactly as it did in the uninterrupted run.
INSTANCE_FAILURES = ("teacher_error", "instance_unparsed", "copied_example")  # after the task passed

_CLASSIFY = re.compile(
    r"\b(classify|classification|categori[sz]e|label|sentiment|true or false|yes or no|is it|"
    r"which (?:of|one)|identify whether|determine whether|decide whether)\b|"
    r"分类|归类|判断|是否|情感倾向|属于哪|哪一类|正面还是负面|真假|对错", re.IGNORECASE)


def looks_like_classification(instruction: str) -> bool:
    """Heuristic for output-first generation (self-instruct asks the teacher instead; one extra
    request per task did not seem worth it). Recorded in lineage as ``heuristic``."""
    return bool(_CLASSIFY.search(instruction))


def instance_schema(output_first: bool) -> dict[str, Any]:
    """The JSON shape of an instance answer; property order is generation order for teachers
    that constrain decoding with it (so a classification label comes before its input)."""
    keys = ("output", "input") if output_first else ("input", "output")
    return {"type": "object", "properties": {k: {"type": "string"} for k in keys},
            "required": list(keys), "additionalProperties": False}


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def task_filters(rec: Record, rules: RuleFilter, seen_exact: set[str], novelty: RougeLNovelty,
                 threshold: float) -> bool:
    """generate's task filters in order: rules, exact duplicate, ROUGE-L novelty. Each verdict
    goes into ``rec.filters`` (the first failing one rejects it); True when the task passed all."""
    for v in rules.check(rec.instruction):
        rec.add_verdict(v)
        if not v.passed:
            return False
    dup = normalise(rec.instruction) in seen_exact
    rec.add_verdict(Verdict("exact_dup", not dup, None, "exact_duplicate" if dup else None))
    if dup:
        return False
    score, nearest = novelty.check(rec.instruction)
    keep = score <= threshold
    rec.add_verdict(Verdict("rouge_l", keep, round(score, 4), None if keep else "too_similar",
                            {"nearest": nearest, "threshold": threshold}))
    return keep


@dataclass
class GenerateSummary:
    run_dir: str
    accepted: int = 0
    rounds: int = 0
    rejected: Counter = field(default_factory=Counter)
    teachers: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_round: int = 0
    stopped_reason: str = "done"
    totals: dict[str, Any] = field(default_factory=dict)


class SelfInstruct:
    def __init__(self, cfg: DatakitConfig, run: RunDir, pool: TeacherPool,
                 on_progress: Callable[[int, int], None] | None = None):
        self.cfg, self.g, self.run, self.pool = cfg, cfg.generate, run, pool
        self.on_progress = on_progress or (lambda done, total: None)
        self.on_status: Callable[[str], None] | None = None
        self.seeds: list[SeedTask] = load_seeds(self.g.seeds)
        self.rules = RuleFilter(RulesConfig(min_words=self.g.min_words, max_words=self.g.max_words))
        self.novelty = RougeLNovelty(self.g.rouge_threshold, self.g.rouge_tokenizer)
        self.seen_exact: set[str] = set()
        # (id, instruction) of every accepted task, for demos: the records themselves (lineage,
        # verdicts, instances) are on disk, not held (flat memory over a 100k-record run)
        self.machine: list[tuple[str, str]] = []
        self.task_requests = 0      # task-generation requests sent in committed rounds
        self.accepted_so_far = 0    # accepted records in committed rounds
        self._in_round = 0          # accepted so far in the round in flight
        self.personas: list[Persona] = load_personas(self.g.personas) if self.g.personas else []
        self.p_tasks = load_prompt("generate_tasks_persona" if self.personas else "generate_tasks")
        self.p_in_first = load_prompt("instance_input_first")
        self.p_out_first = load_prompt("instance_output_first")
        for s in self.seeds:
            self._remember(s.instruction, s.id)
        # the example shown in instance prompts: the first seed of each kind (one with an input
        # when there is one, so the format shows a non-empty input)
        self._example = {}
        for kind in (False, True):
            same = [s for s in self.seeds if s.is_classification == kind] or self.seeds
            self._example[kind] = next((s for s in same if s.instances[0][0].strip()), same[0])
        self._copies = {kind: CopyDetector({"example.instruction": ex.instruction, "example.input": ex.instances[0][0],
                                            "example.output": ex.instances[0][1]}, threshold=self.g.copy_threshold)
                        for kind, ex in self._example.items()}

    # --------------------------------------------------------------------- state
    def _remember(self, instruction: str, rid: str) -> None:
        self.novelty.add(instruction, rid)
        self.seen_exact.add(normalise(instruction))

    def restore(self) -> dict[str, Any]:
        """Cut the logs back to the last committed round and rebuild the in-memory state."""
        state = self.run.load_state() or {"round": 0, "accepted": 0, "task_requests": 0, "rejected": {},
                                          "teachers": {}}
        self.task_requests, self.accepted_so_far = state["task_requests"], state["accepted"]
        self.run.cut_back(lambda r: r.get("lineage", {}).get("round", 0), state["round"])
        remembered = []
        for row in read_jsonl(self.run.records_path) if self.run.records_path.exists() else []:
            rec = Record.from_dict(row)
            self.machine.append((rec.id, rec.instruction))
            remembered.append(rec)
        for row in read_jsonl(self.run.rejected_path) if self.run.rejected_path.exists() else []:
            if row.get("reason") in INSTANCE_FAILURES and "instance" in row.get("lineage", {}):
                remembered.append(Record.from_dict(row))
        for rec in sorted(remembered, key=lambda r: r.id):
            self._remember(rec.instruction, rec.id)
        if len(self.machine) != state["accepted"]:
            raise UserError(f"records.jsonl holds {len(self.machine)} records but state.json says "
                            f"{state['accepted']}; the run directory was changed by hand",
                            path=str(self.run.path))
        return state

    # --------------------------------------------------------------------- prompts
    def _demos(self, rng: random.Random) -> list[tuple[str, str]]:
        g = self.g
        humans = rng.sample(self.seeds, min(g.human_demos, len(self.seeds)))
        machines = rng.sample(self.machine, min(g.machine_demos, len(self.machine)))
        demos = [(s.id, s.instruction) for s in humans] + machines
        rng.shuffle(demos)
        return demos

    def task_request(self, round_no: int, j: int) -> tuple[list[dict[str, str]], list[str], Persona | None]:
        rng = random.Random(f"{self.g.seed}:{round_no}:{j}")
        demos = self._demos(rng)
        k = len(demos)
        persona = pick_persona(self.personas, self.g.seed, round_no, j) if self.personas else None
        body = self.p_tasks.render(
            num_demos=str(k), demos="\n".join(f"{i}. {t}" for i, (_, t) in enumerate(demos, 1)),
            num_new=str(self.g.new_tasks_per_request), first_new=str(k + 1),
            last_new=str(k + self.g.new_tasks_per_request), persona=persona.text if persona else "")
        return [{"role": "user", "content": body}], [d for d, _ in demos], persona

    def instance_request(self, instruction: str, is_cls: bool) -> tuple[list[dict[str, str]], str]:
        """The prompt for a task's input and output. Everything but the task itself is the same
        for every request of a kind (the instructions, then one fixed seed as the example), so
        the long shared prefix is served from the teacher's prompt cache: llama.cpp reuses its
        KV cache, and APIs such as DeepSeek's bill cached prefix tokens at a fraction."""
        prompt = self.p_out_first if is_cls else self.p_in_first
        ex = self._example[is_cls]
        ex_in, ex_out = ex.instances[0]
        ex_obj = {"output": ex_out, "input": ex_in} if is_cls else {"input": ex_in, "output": ex_out}
        body = prompt.render(instruction=instruction, example_instruction=ex.instruction,
                             example_json=json.dumps(ex_obj, ensure_ascii=False))
        return [{"role": "user", "content": body}], prompt.name

    # --------------------------------------------------------------------- one round
    async def run_round(self, round_no: int, needed: int) -> tuple[list[Record], list[Record]]:
        g = self.g
        task_params = {"temperature": g.task_temperature, "top_p": g.task_top_p, "max_tokens": g.task_max_tokens}
        self._in_round = 0
        requests = [self.task_request(round_no, j) for j in range(self.requests_needed(needed))]
        answers = await asyncio.gather(*(self.pool.chat("generate", msgs, params=task_params)
                                         for msgs, _, _ in requests))
        accepted: list[Record] = []
        rejected: list[Record] = []
        tasks: list[Record] = []
        for j, ((_, demo_ids, persona), ans) in enumerate(zip(requests, answers)):
            base = {"round": round_no, "request": j, "demo_ids": demo_ids, "teacher": ans.teacher,
                    "model": ans.model, "prompt": self.p_tasks.lineage(), "params": ans.params,
                    "cached": ans.cached}
            if persona is not None:
                base["persona"] = persona.id
            if not ans.ok:
                rejected.append(Record(id=f"g{round_no:05d}-{j:02d}-xx", instruction="", status="rejected",
                                       reason="teacher_error", lineage={**base, "error": ans.error}))
                continue
            cands = parse_task_list(ans.text, truncated=ans.finish_reason == "length")
            if not cands:
                rejected.append(Record(id=f"g{round_no:05d}-{j:02d}-xx", instruction="", status="rejected",
                                       reason="unparsed_list", lineage={**base, "raw": ans.text[:2000]}))
                continue
            for i, text in enumerate(cands):
                rec = Record(id=f"g{round_no:05d}-{j:02d}-{i:02d}", instruction=text, lineage=dict(base))
                if len(tasks) >= needed:
                    rec.status, rec.reason = "rejected", "surplus"
                    rejected.append(rec)
                    continue
                self._filter(rec)
                (tasks if rec.status == "accepted" else rejected).append(rec)
        await self._batch_instances(tasks, round_no)
        results = await asyncio.gather(*(self._instance(rec) for rec in tasks))
        for rec, ok in zip(tasks, results):
            (accepted if ok else rejected).append(rec)
        return accepted, rejected

    def requests_needed(self, needed: int) -> int:
        """How many task requests this round: enough for what is still needed at the yield seen
        so far (accepted records per task request), at most ``requests_per_round``. A pure
        function of the committed state, so a replayed round sends the same requests."""
        per_request = max(0.5, self.accepted_so_far / self.task_requests) if self.task_requests else 3.0
        return max(1, min(self.g.requests_per_round, math.ceil(needed / per_request)))

    def _filter(self, rec: Record) -> None:
        if task_filters(rec, self.rules, self.seen_exact, self.novelty, self.g.rouge_threshold):
            self._remember(rec.instruction, rec.id)

    async def _ask_instance(self, instruction: str, is_cls: bool) -> Any:
        msgs, _ = self.instance_request(instruction, is_cls)
        params = {"temperature": self.g.instance_temperature, "max_tokens": self.g.instance_max_tokens}
        return await self.pool.chat("respond", msgs, params=params, json_mode=True, schema=instance_schema(is_cls))

    async def _batch_instances(self, tasks: list[Record], round_no: int) -> None:
        """``--batch-instances``: the round's instance requests through the batch API first."""
        if not (self.pool.batch and self.pool.batch.enabled) or not tasks:
            return
        from datakit.teachers.batch import prefill

        def report(desc: str, done: int, total: int) -> None:
            if self.on_status:
                self.on_status(f"{desc} ({done}/{total})")

        calls = [lambda r=rec: self._ask_instance(r.instruction, looks_like_classification(r.instruction))
                 for rec in tasks]
        await prefill(self.pool, calls, self.run.path, f"instances-r{round_no:05d}", report)
        if self.on_status:
            self.on_status("")

    async def _instance(self, rec: Record) -> bool:
        g = self.g
        is_cls = looks_like_classification(rec.instruction)
        ans = await self._ask_instance(rec.instruction, is_cls)
        rec.is_classification = is_cls
        prompt = self.p_out_first if is_cls else self.p_in_first
        rec.lineage["instance"] = {"teacher": ans.teacher, "model": ans.model, "prompt": prompt.lineage(),
                                   "params": ans.params, "cached": ans.cached, "output_first": is_cls,
                                   "is_classification_source": "heuristic"}
        if not ans.ok:
            rec.status, rec.reason = "rejected", "teacher_error"
            rec.lineage["instance"]["error"] = ans.error
            return False
        parsed = parse_instance(ans.text)
        if parsed is None:
            rec.status, rec.reason = "rejected", "instance_unparsed"
            rec.lineage["instance"]["raw"] = (ans.text or "")[:2000]
            return False
        rec.input, rec.output = parsed
        if not self._check_copy(rec, is_cls):
            return False
        self._in_round += 1  # progress only: the round commits (or is replayed) as a whole
        self.on_progress(min(self.accepted_so_far + self._in_round, g.num), g.num)
        return True

    def _check_copy(self, rec: Record, is_cls: bool) -> bool:
        """Reject an instance whose input or output reproduces the example the prompt showed
        (``copied_example``); a small teacher does this often."""
        detector = self._copies[is_cls]
        for fld in ("output", "input"):
            copy = detector.check(getattr(rec, fld))
            if copy is not None:
                rec.add_verdict(Verdict("copied_example", False, copy.score, "copied_example",
                                        {"field": fld, "source": copy.source,
                                         "example_id": self._example[is_cls].id,
                                         "threshold": self.g.copy_threshold}))
                rec.status, rec.reason = "rejected", "copied_example"
                return False
        rec.add_verdict(Verdict("copied_example", True, None, None))
        return True

    # --------------------------------------------------------------------- the loop
    async def run_all(self) -> GenerateSummary:
        t0 = time.monotonic()
        state = self.restore()
        summary = GenerateSummary(run_dir=str(self.run.path), resumed_from_round=state["round"])
        accepted_total = state["accepted"]
        rejected_total = Counter(state["rejected"])
        before = {name: dict(s) for name, s in state.get("teachers", {}).items()}
        idle = 0
        round_no = state["round"]
        self.on_progress(min(accepted_total, self.g.num), self.g.num)
        with JsonlAppender(self.run.records_path) as rec_log, JsonlAppender(self.run.rejected_path) as rej_log:
            while accepted_total < self.g.num:
                if idle >= self.g.max_idle_rounds:
                    summary.stopped_reason = f"no record accepted in {idle} rounds in a row"
                    break
                round_no += 1
                needed = self.g.num - accepted_total
                n_requests = self.requests_needed(needed)
                accepted, rejected = await self.run_round(round_no, needed)
                if self.pool.budget_stop():
                    # requests the budget refused are no teacher's error: the round is not
                    # committed (a rerun replays it, its paid answers from the cache); the
                    # counters are, so that what this session spent stays in state.json
                    summary.stopped_reason = self.pool.budget_stop()
                    state = self.run.load_state() or {"round": 0, "accepted": 0, "task_requests": 0, "rejected": {}}
                    self.run.commit({**state, "teachers": _merge_stats(before, self.pool.stats())})
                    round_no -= 1
                    break
                if not accepted and rejected and all(r.reason == "teacher_error" for r in rejected):
                    # no request of the round was answered: an outage, not data. The round is
                    # not committed, so a rerun once the teacher is back replays it; meanwhile
                    # the failures add up until the pool takes the teacher out (TeacherError)
                    round_no -= 1
                    continue
                rec_log.write_batch(r.to_dict() for r in accepted)
                rej_log.write_batch(r.to_dict() for r in rejected)
                self.machine.extend((r.id, r.instruction) for r in accepted)
                accepted_total += len(accepted)
                self.task_requests += n_requests
                self.accepted_so_far = accepted_total
                rejected_total.update(r.reason for r in rejected)
                idle = 0 if accepted else idle + 1
                teachers = _merge_stats(before, self.pool.stats())
                self.run.commit({"round": round_no, "accepted": accepted_total, "task_requests": self.task_requests,
                                 "rejected": dict(rejected_total), "teachers": teachers})
                self.on_progress(min(accepted_total, self.g.num), self.g.num)
        summary.accepted = accepted_total
        summary.rounds = round_no
        summary.rejected = rejected_total
        summary.teachers = self.pool.summary_rows()
        summary.totals = _merge_stats(before, self.pool.stats())
        summary.seconds = time.monotonic() - t0
        return summary


def _merge_stats(before: dict[str, dict], now: dict[str, dict]) -> dict[str, dict]:
    """Counters over every session of a run (a resumed run adds to what earlier ones spent)."""
    out = {}
    for name in set(before) | set(now):
        s = TeacherStats()
        for part in (before.get(name), now.get(name)):
            if part:
                s.add(part)
        out[name] = s.to_dict()
    return out


async def generate(cfg: DatakitConfig, run: RunDir, *, command: str = "datakit generate",
                   on_progress: Callable[[int, int], None] | None = None,
                   on_status: Callable[[str], None] | None = None) -> GenerateSummary:
    """Run (or resume) self-instruct generation into ``run``. The library entry point."""
    from datakit.teachers.pool import open_teachers

    load_seeds(cfg.generate.seeds)  # bad seeds (and personas) fail before any server starts
    if cfg.generate.personas:
        load_personas(cfg.generate.personas)
    state = run.load_state()
    if state and state["accepted"] >= cfg.generate.num:  # nothing to do: start no teacher
        if on_progress:
            on_progress(cfg.generate.num, cfg.generate.num)
        return GenerateSummary(run_dir=str(run.path), accepted=state["accepted"], rounds=state["round"],
                               rejected=Counter(state["rejected"]), totals=state.get("teachers", {}),
                               resumed_from_round=state["round"])
    with RunLock(run.path, " ".join(command.split()[:2])):
        run.prepare(cfg.snapshot(), command)
        async with open_teachers(cfg, run.cache_path, log_dir=run.path, on_status=on_status) as pool:
            loop = SelfInstruct(cfg, run, pool, on_progress)
            loop.on_status = on_status
            return await loop.run_all()
