"""The funnel: from candidate tasks proposed by the teacher to exported rows.

Generate's steps come from ``rejected.jsonl`` reason codes (docs/FORMATS.md). A known code maps
to its step; ``copied_example`` and any code this version does not know go to the step of the
filter verdict that failed (``filters``), or, with no failed verdict, to the instance step when
the record has an instance and the rules step otherwise. Unknown codes are counted under
``other`` (their own codes listed beside it)."""

from __future__ import annotations

from collections import Counter
from typing import Any

GEN_STEPS = [("proposed", "candidates proposed"), ("surplus", "needed (not surplus)"),
             ("rules", "passed rules"), ("exact_dup", "passed exact-dup"), ("rouge_l", "passed ROUGE-L"),
             ("instance", "instances parsed and kept")]
RULE_REASONS = {"too_short", "too_long", "blacklisted", "starts_with_punctuation", "non_printable",
                "wrong_language", "repetitive"}
KNOWN = {**{r: "rules" for r in RULE_REASONS}, "exact_duplicate": "exact_dup", "too_similar": "rouge_l",
         "instance_unparsed": "instance", "surplus": "surplus"}
CONTEXT_CODES = {"copied_example", "teacher_error"}   # known codes whose step depends on the row
REQUEST_CODES = {"unparsed_list"}                      # a failed task request, not a candidate
FILTER_STEP = {"length": "rules", "blacklist": "rules", "punct_start": "rules", "non_printable": "rules",
               "language": "rules", "repetition": "rules", "exact_dup": "exact_dup", "rouge_l": "rouge_l"}
EXAMPLES = 2
TEXT_CHARS = 240


def _clip(s: Any, n: int = TEXT_CHARS) -> str:
    s = " ".join(str(s or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


def step_of(row: dict[str, Any]) -> tuple[str, str]:
    """(step, reason bucket) of a rejected generate row; step "requests" for failed requests."""
    reason = str(row.get("reason") or "unknown")
    lin = row.get("lineage") if isinstance(row.get("lineage"), dict) else {}
    if reason in REQUEST_CODES or (reason == "teacher_error" and "instance" not in lin):
        return "requests", reason
    if reason in KNOWN:
        return KNOWN[reason], reason
    bucket = reason if reason in CONTEXT_CODES else "other"
    for v in row.get("filters") or []:
        if isinstance(v, dict) and v.get("passed") is False:
            step = FILTER_STEP.get(str(v.get("filter")))
            if step:
                return step, bucket
            break
    return ("instance" if "instance" in lin or row.get("output") else "rules"), bucket


def example_of(row: dict[str, Any], reason: str) -> dict[str, Any]:
    """A short, real example of a rejection: id, the text, and what the filter said."""
    lin = row.get("lineage") if isinstance(row.get("lineage"), dict) else {}
    ex: dict[str, Any] = {"id": row.get("id"), "reason": row.get("reason"), "instruction": _clip(row.get("instruction"))}
    if row.get("output"):
        ex["output"] = _clip(row.get("output"))
    failed = next((v for v in row.get("filters") or [] if isinstance(v, dict) and v.get("passed") is False), None)
    if failed:
        ex["filter"], ex["score"] = failed.get("filter"), failed.get("score")
        detail = failed.get("detail") if isinstance(failed.get("detail"), dict) else {}
        ex["detail"] = _clip(", ".join(f"{k}={v}" for k, v in detail.items() if k != "threshold"), 160) or None
    raw = lin.get("error") or (lin.get("instance") or {}).get("error") or lin.get("raw") or (lin.get("instance") or {}).get("raw")
    if raw and not ex["instruction"]:
        ex["instruction"] = _clip(raw)
    elif raw:
        ex["detail"] = _clip(raw, 160)
    return ex


class GenerateFunnel:
    """Counts generate's candidates per step and reason, keeping two examples of each."""

    def __init__(self) -> None:
        self.accepted = 0
        self.removed: dict[str, Counter] = {s: Counter() for s, _ in GEN_STEPS + [("requests", "")]}
        self.other_codes: Counter = Counter()
        self.examples: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def add_accepted(self) -> None:
        self.accepted += 1

    def add_rejected(self, row: dict[str, Any]) -> None:
        step, bucket = step_of(row)
        self.removed[step][bucket] += 1
        if bucket == "other":
            self.other_codes[str(row.get("reason"))] += 1
        ex = self.examples.setdefault((step, bucket), [])
        if len(ex) < EXAMPLES:
            ex.append(example_of(row, bucket))

    def steps(self) -> list[dict[str, Any]]:
        proposed = self.accepted + sum(sum(c.values()) for s, c in self.removed.items() if s != "requests")
        out, left = [], proposed
        for key, label in GEN_STEPS:
            removed = self.removed.get(key, Counter()) if key != "proposed" else Counter()
            left -= sum(removed.values())
            out.append({"key": key, "label": label, "count": left, "removed": dict(removed.most_common()),
                        "examples": {r: self.examples.get((key, r), []) for r in removed}})
        return out

    def result(self) -> dict[str, Any]:
        req = self.removed["requests"]
        return {"steps": self.steps(), "accepted": self.accepted,
                "failed_requests": dict(req.most_common()),
                "failed_request_examples": {r: self.examples.get(("requests", r), []) for r in req},
                "other_codes": dict(self.other_codes.most_common())}
