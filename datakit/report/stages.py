"""The stage log ``RUN/stages.jsonl``: one line per command that touched the run.

``{"stage", "started", "wall_s", "argv", "inputs", "outputs", "counts", "usage"}``, where
``usage`` is ``{teacher: {requests, cache_hits, retries, prompt_tokens, completion_tokens,
cost}}``. Read tolerantly: missing keys and wrong types are ignored rather than fatal, so a
log written by an older or newer datakit still gives what it can."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datakit.records import read_jsonl

STAGE_ORDER = ("generate", "filter", "dedup", "respond", "judge", "export", "train", "validate")
USAGE_KEYS = ("requests", "cache_hits", "retries", "prompt_tokens", "completion_tokens", "cost")


def _num(v: Any) -> float | int | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def read_stages(run: Path) -> list[dict[str, Any]]:
    """Rows of stages.jsonl with a text ``stage`` (other rows are skipped); [] when absent."""
    path = run / "stages.jsonl"
    if not path.is_file():
        return []
    out = []
    for row in read_jsonl(path):
        if isinstance(row.get("stage"), str):
            out.append(row)
    return out


def add_usage(into: dict[str, dict[str, float]], usage: Any) -> None:
    """Add one ``{teacher: {counter: n}}`` block to ``into`` (unknown counters ignored)."""
    if not isinstance(usage, dict):
        return
    for teacher, counters in usage.items():
        if not isinstance(counters, dict):
            continue
        acc = into.setdefault(str(teacher), {k: 0 for k in USAGE_KEYS})
        for k in USAGE_KEYS:
            v = _num(counters.get(k))
            if v is not None:
                acc[k] += v


def per_stage(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """stage -> {runs, wall_s, usage: {teacher: counters}}, stages in pipeline order."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        s = out.setdefault(r["stage"], {"runs": 0, "wall_s": 0.0, "usage": {}})
        s["runs"] += 1
        s["wall_s"] = round(s["wall_s"] + (_num(r.get("wall_s")) or 0.0), 3)
        add_usage(s["usage"], r.get("usage"))
    rank = {name: i for i, name in enumerate(STAGE_ORDER)}
    return dict(sorted(out.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def counts_of(row: dict[str, Any]) -> dict[str, Any]:
    c = row.get("counts")
    return c if isinstance(c, dict) else {}


def paths_of(row: dict[str, Any], key: str) -> list[str]:
    v = row.get(key)
    return [str(p) for p in v if isinstance(p, str)] if isinstance(v, list) else []
