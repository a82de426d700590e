"""Lineage and cost: who made the records, which seeds were shown, what it cost.

Seeds shown: each task-generation request is counted once (its ``(round, request)``), from
accepted and rejected rows alike; a seed's "accepted" count is the number of accepted tasks
that came from requests showing it. Demo ids that ``generate`` made itself (``g<round>-…``)
are machine-made demos, counted apart from the seeds.

Methods: records are grouped by ``lineage.method`` (``self-instruct`` when absent, as generate
writes it; ``evolve``, ``converse``), with `` + persona`` when a persona steered the request:
accepted and rejected counts, the top rejection reasons, mean lengths and turns."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from datakit.report.files import Progress, iter_jsonl
from datakit.report.stages import USAGE_KEYS, add_usage
from datakit.report.text import n_tokens

MACHINE_ID = re.compile(r"^g\d+-")
TOP_SEEDS = 25


class LineageAcc:
    def __init__(self) -> None:
        self.makers: Counter = Counter()        # (part, teacher, model) of accepted records
        self.shown: Counter = Counter()         # demo id -> requests that showed it
        self.accepted_from: Counter = Counter() # demo id -> accepted tasks from such requests
        self.requests: set[tuple] = set()
        self.cached = 0
        self.methods: dict[str, dict[str, Any]] = {}

    def add(self, row: dict[str, Any], accepted: bool) -> None:
        lin = row.get("lineage") if isinstance(row.get("lineage"), dict) else {}
        demos = [str(d) for d in lin.get("demo_ids") or []]
        key = (lin.get("round"), lin.get("request"))
        if demos and key not in self.requests:
            self.requests.add(key)
            self.shown.update(demos)
        self._by_method(row, lin, accepted)
        if not accepted:
            return
        self.accepted_from.update(demos)
        self.makers[("task", str(lin.get("teacher")), str(lin.get("model")))] += 1
        inst = lin.get("instance") if isinstance(lin.get("instance"), dict) else None
        if inst:
            self.makers[("instance", str(inst.get("teacher")), str(inst.get("model")))] += 1
        self.cached += bool(lin.get("cached"))

    def _by_method(self, row: dict[str, Any], lin: dict[str, Any], accepted: bool) -> None:
        name = str(lin.get("method") or "self-instruct") + (" + persona" if lin.get("persona") else "")
        m = self.methods.setdefault(name, {"accepted": 0, "rejected": 0, "reasons": Counter(), "in_tokens": 0,
                                           "out_tokens": 0, "turns": 0})
        if not accepted:
            m["rejected"] += 1
            m["reasons"][str(row.get("reason") or "unknown")] += 1
            return
        m["accepted"] += 1
        m["in_tokens"] += n_tokens(str(row.get("instruction") or ""))
        m["out_tokens"] += n_tokens(str(row.get("output") or ""))
        turns = lin.get("turns")
        m["turns"] += turns if isinstance(turns, int) and turns > 0 else 1

    def method_rows(self) -> list[dict[str, Any]]:
        out = []
        for name, m in sorted(self.methods.items(), key=lambda kv: (-kv[1]["accepted"], kv[0])):
            n, tried = m["accepted"], m["accepted"] + m["rejected"]
            out.append({"method": name, "accepted": n, "rejected": m["rejected"],
                        "accept_rate": round(n / tried, 4) if tried else None,
                        "mean_instruction_tokens": round(m["in_tokens"] / n, 1) if n else None,
                        "mean_output_tokens": round(m["out_tokens"] / n, 1) if n else None,
                        "mean_turns": round(m["turns"] / n, 2) if n else None,
                        "top_rejections": [[r, c] for r, c in m["reasons"].most_common(3)]})
        return out

    def result(self) -> dict[str, Any]:
        seeds = {d: n for d, n in self.shown.items() if not MACHINE_ID.match(d)}
        top = sorted(seeds.items(), key=lambda kv: (-kv[1], kv[0]))
        return {"makers": [{"part": p, "teacher": t, "model": m, "records": n}
                           for (p, t, m), n in sorted(self.makers.items(), key=lambda kv: (kv[0][0] != "task", -kv[1]))],
                "requests_with_demos": len(self.requests),
                "seeds": {"distinct_shown": len(seeds), "shown_total": sum(seeds.values()),
                          "machine_demos_shown": sum(n for d, n in self.shown.items() if MACHINE_ID.match(d)),
                          "top": [{"id": d, "shown": n, "accepted": self.accepted_from.get(d, 0)} for d, n in top[:TOP_SEEDS]],
                          "never_accepted": sum(1 for d in seeds if not self.accepted_from.get(d))},
                "records_cached": self.cached,
                "methods": self.method_rows()}


def state_usage(state: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """generate's per-teacher counters from state.json (``failures``/``seconds`` kept too)."""
    out: dict[str, dict[str, float]] = {}
    teachers = (state or {}).get("teachers")
    add_usage(out, teachers)
    for name, c in (teachers or {}).items():
        if isinstance(c, dict) and name in out:
            for k in ("failures", "seconds"):
                if isinstance(c.get(k), (int, float)):
                    out[name][k] = c[k]
    return out


def log_usage(path: Path, kind: str, progress: Progress | None = None) -> dict[str, dict[str, float]]:
    """Requests, cache hits and (for candidates) tokens per teacher, counted from a respond or
    judge log: the fallback when stages.jsonl has no usage for that stage. Judge lines carry no
    token counts, so those stay unknown (None)."""
    out: dict[str, dict[str, Any]] = {}
    for row in iter_jsonl(path, path.name, progress):
        acc = out.setdefault(str(row.get("teacher")), {k: 0 for k in USAGE_KEYS})
        acc["requests"] += 1
        acc["cache_hits"] += bool(row.get("cached"))
        u = row.get("usage") if isinstance(row.get("usage"), dict) else None
        for k in ("prompt_tokens", "completion_tokens"):
            if u is not None and isinstance(u.get(k), (int, float)):
                acc[k] += u[k]
            elif kind == "judge":
                acc[k] = None
    for acc in out.values():
        acc["retries"] = acc["cost"] = None  # not in the logs
    return out
