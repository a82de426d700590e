"""``datakit generate --dry-run``: what generating the missing records would cost.

Unlike respond and judge, generate's request count depends on its yield, so it is estimated:

* task requests = records still needed / records kept per task request: the yield this run
  has shown so far, or, before it has any, the loop's own starting assumption
  (:data:`TASK_YIELD`: of 8 candidates a request asks for, about 3 survive the filters);
* instance requests = records still needed x instance requests per kept record: observed,
  or 1 / (1 - :data:`INSTANCE_LOSS`) (answers that cannot be read or copy the example);
* prompt tokens: real prompts rendered by the loop's code (task prompts of the first rounds,
  with seed tasks standing in for machine demos; instance prompts for every seed task);
* completion tokens: a task list is ``new_tasks_per_request`` x (mean seed task length + 4)
  + 30 tokens, an instance answer as long as the seeds' example JSON (capped at max_tokens).

Routing among several teachers of a role is spread by weight.
"""

from __future__ import annotations

import json
import math
from typing import Any

from datakit.generate.loop import SelfInstruct
from datakit.runs import RunDir
from datakit.seeds import load_seeds
from datakit.teachers.estimate import Estimate, _tokenizer, approx_tokens, planning_pool, prompt_tokens

TASK_YIELD = 3.0
INSTANCE_LOSS = 0.1
INSTANCE_FAILURES = ("teacher_error", "instance_unparsed", "copied_example")


def _spread(est: Estimate, role: str, prompts: list[list[dict[str, str]]], n: int, completion: int,
            max_tokens: int) -> None:
    """``n`` requests of a role over its teachers by weight, at the prompts' mean length."""
    ts = est.pool.for_role(role)
    total = sum(t.cfg.weight for t in ts)
    for t in ts:
        tok = _tokenizer(t.cfg.tokenizer)
        mean = sum(prompt_tokens(m, tok) for m in prompts) / len(prompts)
        est.add(t.name, round(mean), completion, max_tokens, n=round(n * t.cfg.weight / total))


def estimate_generate(cfg: Any, run: RunDir) -> Estimate:
    g = cfg.generate
    load_seeds(g.seeds)  # bad seeds: the same one-line error as a real run
    state = run.load_state() or {}
    accepted, task_requests = state.get("accepted", 0), state.get("task_requests", 0)
    needed = max(0, g.num - accepted)
    lost = sum(state.get("rejected", {}).get(r, 0) for r in INSTANCE_FAILURES)
    per_request = max(0.5, accepted / task_requests) if task_requests else TASK_YIELD
    per_record = (accepted + lost) / accepted if accepted else 1 / (1 - INSTANCE_LOSS)
    n_tasks = math.ceil(needed / per_request) if needed else 0
    n_instances = math.ceil(needed * per_record)
    with planning_pool(cfg, run.path) as pool:
        est = Estimate(pool)
        loop = SelfInstruct(cfg, run, pool)
        loop.machine = [(s.id, s.instruction) for s in loop.seeds]  # stand-ins
        task_prompts = [loop.task_request(r, j)[0] for r in range(1, 5) for j in range(g.requests_per_round)]
        inst_prompts = [loop.instance_request(s.instruction, s.is_classification)[0] for s in loop.seeds]
        task_len = sum(approx_tokens(s.instruction) for s in loop.seeds) / len(loop.seeds)
        inst_len = sum(approx_tokens(json.dumps({"input": s.instances[0][0], "output": s.instances[0][1]},
                                                ensure_ascii=False)) for s in loop.seeds) / len(loop.seeds)
        _spread(est, "generate", task_prompts, n_tasks, round(g.new_tasks_per_request * (task_len + 4) + 30),
                g.task_max_tokens)
        _spread(est, "respond", inst_prompts, n_instances, round(inst_len), g.instance_max_tokens)
    src = "observed in this run" if task_requests else "assumed before the run has any"
    est.notes += [
        f"records still needed: {needed} of {g.num}",
        f"task requests: {n_tasks} at {per_request:.2f} records kept per request ({src})",
        f"instance requests: {n_instances} at {per_record:.2f} per kept record "
        f"({'observed' if accepted else f'assumed: {INSTANCE_LOSS:.0%} of answers lost'})",
        "completions: a task list of %d tasks ~%d tokens, an instance ~%d tokens (from the seeds)"
        % (g.new_tasks_per_request, round(g.new_tasks_per_request * (task_len + 4) + 30), round(inst_len)),
    ]
    return est
