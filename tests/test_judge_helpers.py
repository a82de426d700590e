"""Shared helpers for the judge/export tests (imported by them; not a pytest plugin)."""

from __future__ import annotations

from pathlib import Path

from datakit.records import Record


def cand(cid: str, output: str, score: float | None, status: str = "ok", model: str = "m") -> dict:
    j = {"status": status, "score": score, "task_score": 8.0, "aspects": {}}
    return {"id": cid, "output": output, "teacher": "t", "model": model, "params": {"temperature": 0.7},
            "cached": False, "judge": j}


def judged_record(i: int, scores: list[float | None], *, input: str = "", lang: str = "en") -> Record:
    """A record as ``merge_run`` leaves it: candidates with pointwise verdicts, judge summary."""
    from datakit.judge.pairs import build_pair, rank_candidates

    if lang == "zh":
        instr = f"用三句话解释第{i}个概念。"
        outs = [f"回答{i}-{k}：这是一个说明。" for k in range(len(scores))]
    else:
        instr = f"Explain concept number {i} in three sentences."
        outs = [f"Answer {i}-{k}: here is an explanation with \"quotes\" and a newline.\nSecond line."
                for k in range(len(scores))]
    cands = [cand(f"c{k}", outs[k], s, "ok" if s is not None else "unparsed") for k, s in enumerate(scores)]
    rec = Record(id=f"r{i:03d}", instruction=instr, input=input, output=f"original output {i}",
                 lineage={"teacher": "gen", "model": "gen-model"})
    rec.candidates = cands
    ranked = rank_candidates(cands)
    d = build_pair(cands, [], 1.0)
    rec.judge = {"score": ranked[0]["judge"]["score"] if ranked else None,
                 "best": ranked[0]["id"] if ranked else None,
                 "ranking": [c["id"] for c in ranked], "pairwise": [], "pair": d.to_dict()}
    return rec


def bundled_gguf() -> Path | None:
    from datakit.errors import UserError
    from datakit.teachers.local import find_bundled_gguf

    try:
        return find_bundled_gguf()
    except UserError:
        return None