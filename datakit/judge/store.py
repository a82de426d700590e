"""The run directory's respond/judge logs and the merged view built from them.

Files in a run directory (next to the lead's ``records.jsonl``):

* ``candidates.jsonl``: one line per finished candidate response
  ``{"record_id", "id", "output", "teacher", "model", "params", "cached", "usage"}``.
* ``judgements.jsonl``: one line per finished judge call, pointwise
  ``{"kind": "pointwise", "record_id", "cand", "verdict": {...}, "raw", ...}`` or pairwise
  ``{"kind": "pairwise", "record_id", "x", "y", "order": "xy"|"yx", "winner": "A"|"B"|"tie"|null, ...}``.
* ``judged.jsonl``: the merged records (candidates and judge results inside), rewritten
  atomically at the end of ``judge``; a snapshot for people and other tools.

Both logs are append-only and fsync'd per batch (:class:`datakit.records.JsonlAppender`), so a
kill -9 loses at most the batch in flight; a rerun reads the logs, skips every unit already
there and does the rest. When a unit appears twice (a rerun with a different judge), the last
line wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datakit.judge.pairs import build_pair, candidate_score, combine_orders, rank_candidates
from datakit.records import Record, read_jsonl, read_records

CANDIDATES = "candidates.jsonl"
JUDGEMENTS = "judgements.jsonl"
JUDGED = "judged.jsonl"
OUTPUT_CANDIDATE = "output"


def pointwise_key(row: dict[str, Any]) -> tuple:
    return ("pointwise", row["record_id"], row["cand"])


def pairwise_key(row: dict[str, Any]) -> tuple:
    return ("pairwise", row["record_id"], row["x"], row["y"], row["order"])


def unit_key(row: dict[str, Any]) -> tuple:
    return pointwise_key(row) if row.get("kind") == "pointwise" else pairwise_key(row)


def load_candidates(run_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """record_id → candidate id → candidate, from ``candidates.jsonl`` (last line wins)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    path = Path(run_dir) / CANDIDATES
    if not path.exists():
        return out
    for row in read_jsonl(path):
        cand = {k: v for k, v in row.items() if k != "record_id"}
        out.setdefault(row["record_id"], {})[row["id"]] = cand
    return out


def load_judgements(run_dir: Path) -> dict[tuple, dict[str, Any]]:
    out: dict[tuple, dict[str, Any]] = {}
    path = Path(run_dir) / JUDGEMENTS
    if not path.exists():
        return out
    for row in read_jsonl(path):
        out[unit_key(row)] = row
    return out


def output_candidate(rec: Record) -> dict[str, Any]:
    """The record's own output as a candidate (its lineage says who wrote it)."""
    lin = rec.lineage or {}
    return {"id": OUTPUT_CANDIDATE, "output": rec.output, "teacher": lin.get("teacher"),
            "model": lin.get("model"), "params": lin.get("params") or {}, "cached": None,
            "source": "record.output"}


def _natural(cid: str) -> tuple[str, int, str]:
    name, _, k = str(cid).rpartition("#")
    return (name, int(k), "") if name and k.isdigit() else (str(cid), -1, "")


def is_conversation(rec: Record) -> bool:
    return isinstance((rec.extra or {}).get("messages"), list)


def turn_candidates(rec: Record) -> list[dict[str, Any]]:
    """A conversation's assistant turns as candidates ``turn#1``, ``turn#2``, … (judged one by
    one, each with the conversation up to it as its task; never paired with each other)."""
    out, k = [], 0
    for m in rec.extra["messages"]:
        if isinstance(m, dict) and m.get("role") == "assistant":
            k += 1
            out.append({"id": f"turn#{k}", "output": m.get("content") or "", "turn": k,
                        "source": "record.messages"})
    return out


def conversation_task(rec: Record, turn: int) -> str:
    """What the judge sees as the task of assistant turn ``turn``: the conversation before it."""
    lines, k = [], 0
    for m in rec.extra["messages"]:
        role = m.get("role")
        if role == "assistant":
            k += 1
            if k == turn:
                break
        lines.append(f"{str(role).capitalize()}: {m.get('content', '')}")
    return "[Conversation so far; judge the assistant's next reply]\n" + "\n\n".join(lines)


def record_candidates(rec: Record, logged: dict[str, dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Candidates of a record: those already inside it, then those from the log (same id: log
    wins). A record with none judges its own output as the single candidate ``output``; a
    conversation's candidates are its assistant turns."""
    if is_conversation(rec):
        return turn_candidates(rec)
    by_id: dict[str, dict[str, Any]] = {}
    for c in rec.candidates or []:
        by_id[str(c.get("id"))] = dict(c)
    # Log order follows completion order, which varies run to run: order by id instead
    # ("teacher#k" by teacher, then k as a number), so pair choice and ties are reproducible.
    for cid in sorted(logged or {}, key=_natural):
        by_id[cid] = dict(logged[cid])
    if not by_id and (rec.output or "").strip():
        by_id[OUTPUT_CANDIDATE] = output_candidate(rec)
    return list(by_id.values())


def attach_judgements(rec: Record, cands: list[dict[str, Any]], judgements: dict[tuple, dict[str, Any]],
                      min_margin: float, tie_break: str | None = None) -> None:
    """Put pointwise verdicts into each candidate's ``judge``, pairwise outcomes and the pair
    decision into ``rec.judge``. Leaves a record no judge has seen untouched."""
    seen = False
    for c in cands:
        row = judgements.get(("pointwise", rec.id, c["id"]))
        if row is not None:
            seen = True
            c["judge"] = dict(row["verdict"], teacher=row.get("teacher"), model=row.get("model"),
                              cached=row.get("cached"))
    pairwise = []
    ids = [c["id"] for c in cands]
    for i, x in enumerate(ids):
        for y in ids[i + 1:]:
            xy = judgements.get(("pairwise", rec.id, x, y, "xy"))
            yx = judgements.get(("pairwise", rec.id, x, y, "yx"))
            if xy is None and yx is None:
                continue
            seen = True
            ab = xy.get("winner") if xy else None
            ba = yx.get("winner") if yx else None
            comb = combine_orders(ab, ba)
            pairwise.append({"x": x, "y": y, "xy": ab, "yx": ba, **comb})
    rec.candidates = cands
    if not seen:
        return
    if is_conversation(rec):
        rec.judge = conversation_judgement(cands)
        return
    ranked = rank_candidates(cands, pairwise)
    decision = build_pair(cands, pairwise, min_margin, tie_break)
    task_scores = [c["judge"]["task_score"] for c in cands
                   if isinstance((c.get("judge") or {}).get("task_score"), (int, float))]
    judged = [c for c in cands if c.get("judge")]
    rec.judge = {
        "score": candidate_score(ranked[0]) if ranked else None,
        "best": ranked[0]["id"] if ranked else decision.chosen,
        "ranking": decision.ranking or [c["id"] for c in ranked],
        "task_score": round(sum(task_scores) / len(task_scores), 4) if task_scores else None,
        "n_candidates": len(cands),
        "n_judged": len(judged),
        "n_unparsed": sum(1 for c in judged if c["judge"].get("status") == "unparsed"),
        "pairwise": pairwise,
        "pair": dict(decision.to_dict(), min_margin=min_margin, tie_break=tie_break),
    }


def conversation_judgement(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """A conversation's judge summary: every turn's score, and the record's score = the worst
    turn (None while any turn has no score: an unread turn may be the bad one)."""
    scores = [candidate_score(c) for c in turns]
    per_turn = [{"turn": c.get("turn"), "score": s, "status": (c.get("judge") or {}).get("status")}
                for c, s in zip(turns, scores)]
    judged = [c for c in turns if c.get("judge")]
    worst = min(scores) if scores and all(s is not None for s in scores) else None
    return {"score": worst, "turns": per_turn, "best": None, "ranking": [], "task_score": None,
            "n_candidates": len(turns), "n_judged": len(judged),
            "n_unparsed": sum(1 for c in judged if c["judge"].get("status") == "unparsed"),
            "pairwise": [], "pair": {"chosen": None, "rejected": None, "kept": False, "reason": "multi_turn",
                                     "margin": None, "chosen_score": None, "rejected_score": None, "basis": None}}


def merge_run(run_dir: str | Path, min_margin: float = 1.0, only: set[str] | None = None,
              tie_break: str | None = None) -> list[Record]:
    """The accepted records of a run (those with ids in ``only``, when given) with their
    candidates and judge results merged in."""
    run_dir = Path(run_dir)
    records = [r for r in read_records(run_dir) if only is None or r.id in only]
    cands = load_candidates(run_dir)
    judgements = load_judgements(run_dir)
    out = []
    for rec in records:
        if rec.status != "accepted":
            continue
        cl = record_candidates(rec, cands.get(rec.id))
        attach_judgements(rec, cl, judgements, min_margin, tie_break)
        out.append(rec)
    return out
