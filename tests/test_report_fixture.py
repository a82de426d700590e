"""(No tests here: the report tests' data.) A small hand-made run directory with known content, for the report tests (every count the
tests check is written out here, so a reader can verify it by hand)."""

from __future__ import annotations

import json
from pathlib import Path

BUNDLED = {"teacher": "local", "model": "smollm2-135m-instruct"}


def _w(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _lin(rnd: int, req: int, demos: list[str], instance: bool = True) -> dict:
    lin = {"round": rnd, "request": req, "demo_ids": demos, **BUNDLED, "cached": False}
    if instance:
        lin["instance"] = dict(BUNDLED)
    return lin


def _rouge(score: float, ok: bool = True) -> dict:
    return {"filter": "rouge_l", "passed": ok, "score": score, "reason": None if ok else "too_similar",
            "detail": {"nearest": "seed_en_001", "threshold": 0.7}}


def _rec(rid: str, instr: str, out: str, rnd: int, req: int, demos: list[str], score: float,
         inp: str = "", cls: bool = False) -> dict:
    return {"id": rid, "instruction": instr, "input": inp, "output": out, "is_classification": cls,
            "status": "accepted", "reason": None, "lineage": _lin(rnd, req, demos), "filters": [_rouge(score)]}


A = ["seed_en_001", "seed_zh_002"]
B = ["seed_en_001", "seed_en_003", "g00001-00-00"]
C = ["seed_en_004"]

RECORDS = [
    _rec("g00001-00-00", "Please write a short poem about cats.", "Soft paws and warm fur", 1, 0, A, 0.2),
    _rec("g00001-00-01", "Classify the sentiment of this review.", "positive", 1, 0, A, 0.3, inp="I loved it", cls=True),
    _rec("g00002-00-00", "Write a haiku about autumn leaves.", "Red leaves fall slowly down", 2, 0, B, 0.45),
    _rec("g00002-01-00", "请写一首关于春天的诗", "春风吹拂大地", 2, 1, C, 0.0),
    # past the last committed round (state.json round 2): left out
    _rec("g00003-00-00", "Write a limerick about dogs.", "There once was a dog", 3, 0, A, 0.1),
]


def _rej(rid: str, reason: str, instr: str, lin: dict, filters: list[dict], **extra) -> dict:
    return {"id": rid, "instruction": instr, "input": "", "output": "", "status": "rejected", "reason": reason,
            "lineage": lin, "filters": filters, **extra}


def _length(n: int) -> list[dict]:
    return [{"filter": "length", "passed": False, "score": n, "reason": "too_short"}]


REJECTED = [
    _rej("g00001-00-02", "too_short", "Hi there", _lin(1, 0, A, False), _length(2)),
    _rej("g00001-00-03", "too_short", "Go", _lin(1, 0, A, False), _length(1)),
    _rej("g00001-00-04", "too_short", "Sing now", _lin(1, 0, A, False), _length(2)),
    _rej("g00001-00-05", "exact_duplicate", "Write a short poem about cats.", _lin(1, 0, A, False),
         [{"filter": "length", "passed": True, "score": 6, "reason": None},
          {"filter": "exact_dup", "passed": False, "score": None, "reason": "exact_duplicate"}]),
    _rej("g00002-00-01", "too_similar", "Write a haiku about autumn trees.", _lin(2, 0, B, False), [_rouge(0.83, False)]),
    _rej("g00002-00-02", "too_similar", "Write a poem about cats please.", _lin(2, 0, B, False), [_rouge(0.91, False)]),
    _rej("g00002-00-03", "mystery_code", "Describe the colour blue.", _lin(2, 0, B, False),
         [{"filter": "rouge_l", "passed": False, "score": 0.75, "reason": "mystery_code"}]),
    _rej("g00002-01-01", "copied_example", "Write an apology e-mail.", _lin(2, 1, C),
         [_rouge(0.1), {"filter": "copied_example", "passed": False, "score": 1.0, "reason": "copied_example",
                        "detail": {"field": "output", "source": "example.output"}}], output="Dear Sam, I am sorry"),
    _rej("g00002-01-02", "instance_unparsed", "List three fruits.", _lin(2, 1, C), [_rouge(0.05)]),
    _rej("g00002-01-03", "surplus", "Name a colour.", _lin(2, 1, C, False), []),
    _rej("g00002-01-04", "surplus", "Name a river.", _lin(2, 1, C, False), []),
    _rej("g00002-02-xx", "unparsed_list", "", {"round": 2, "request": 2, "demo_ids": ["seed_en_005"], **BUNDLED,
                                                "raw": "I cannot list anything"}, []),
    _rej("g00003-00-01", "too_short", "No", _lin(3, 0, A, False), _length(1)),  # uncommitted
]
# proposed = 4 accepted + 11 candidate rejections (3 too_short, 1 exact, 2 too_similar, 1 other,
# 1 copied, 1 unparsed, 2 surplus); unparsed_list is a failed request, not a candidate.

STATE = {"round": 2, "accepted": 4, "task_requests": 4, "rejected": {},
         "teachers": {"local": {"requests": 9, "cache_hits": 2, "retries": 1, "failures": 0, "prompt_tokens": 4000,
                                "completion_tokens": 1500, "cost": 0.0, "seconds": 42.5, "errors": {}}}}


def _point(rid: str, cand: str, status: str, score: float | None, aspects: dict[str, int]) -> dict:
    v = {"status": status, "score": score, "task_score": None,
         "aspects": {a: {"score": s, "rationale": f"{a} is {s}"} for a, s in aspects.items()}, "source": "json"}
    return {"kind": "pointwise", "record_id": rid, "cand": cand, "verdict": v, "raw": "{}", **BUNDLED,
            "cached": False, "tag": "t"}


def _pair(rid: str, x: str, y: str, order: str, winner: str | None) -> dict:
    return {"kind": "pairwise", "record_id": rid, "x": x, "y": y, "order": order, "winner": winner, "raw": "",
            **BUNDLED, "cached": order == "yx", "tag": "t"}


R1, R2, R3 = "g00001-00-00", "g00001-00-01", "g00002-00-00"
JUDGEMENTS = [
    _point(R1, "local#0", "unparsed", None, {}),                       # replaced by the next line
    _point(R1, "local#0", "ok", 8.0, {"helpfulness": 8, "correctness": 8}),
    _point(R1, "local#1", "ok", 5.0, {"helpfulness": 5, "correctness": 5}),
    _point(R2, "local#0", "ok", 7.0, {"helpfulness": 7, "correctness": 7}),
    _point(R2, "local#1", "partial", 7.0, {"helpfulness": 7}),
    _point(R3, "local#0", "ok", 9.0, {"helpfulness": 9, "correctness": 9}),
    _point(R3, "local#1", "unparsed", None, {}),
    _pair(R1, "local#0", "local#1", "xy", "A"), _pair(R1, "local#0", "local#1", "yx", "B"),   # agreed on x
    _pair(R2, "local#0", "local#1", "xy", "A"), _pair(R2, "local#0", "local#1", "yx", "A"),   # position bias
    _pair(R3, "local#0", "local#1", "xy", "tie"), _pair(R3, "local#0", "local#1", "yx", "tie"),  # tie
]


def _cand(cid: str, out: str, status: str, score: float | None) -> dict:
    j = {"status": status, "score": score, "aspects": {"helpfulness": {"score": score, "rationale": "fine"}} if score else {}}
    return {"id": cid, "output": out, **BUNDLED, "judge": j}


def _judged(rec: dict, cands: list[dict], pair: dict) -> dict:
    return {**rec, "candidates": cands, "judge": {"score": None, "pair": dict(pair, min_margin=1.0)}}


JUDGED = [
    _judged(RECORDS[0], [_cand("local#0", "Purring poem", "ok", 8.0), _cand("local#1", "Meh", "ok", 5.0)],
            {"chosen": "local#0", "rejected": "local#1", "kept": True, "reason": None, "margin": 3.0}),
    _judged(RECORDS[1], [_cand("local#0", "positive", "ok", 7.0), _cand("local#1", "pos", "partial", 7.0)],
            {"chosen": "local#0", "rejected": "local#1", "kept": False, "reason": "all_tied", "margin": 0.0}),
    _judged(RECORDS[2], [_cand("local#0", "Leaves fall", "ok", 9.0), _cand("local#1", "", "unparsed", None)],
            {"chosen": None, "rejected": None, "kept": False, "reason": "too_few_candidates", "margin": None}),
    {**RECORDS[3], "candidates": []},
]

CANDIDATES = [{"record_id": rid, "id": f"local#{k}", "output": "x", **BUNDLED, "cached": k == 1,
               "usage": {"prompt_tokens": 10, "completion_tokens": 5}} for rid in (R1, R2, R3) for k in (0, 1)]

METRICS = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.6, "eval_loss": 1.9}, {"step": 3, "loss": 1.4},
           {"step": 4, "loss": 1.2, "eval_loss": 1.7}]
VALIDATION = {"judge": {**BUNDLED, "bundled": True}, "n_prompts": 4, "eval_loss": {"base": 2.1, "tuned": 1.7},
              "wins": 2, "ties": 1, "losses": 1, "unparsed": 0, "win_rate": 0.625, "ci95": [0.3, 0.9],
              "verdict": "no measurable difference",
              "judgements": [{"prompt": f"p{i}", "base": f"b{i}", "tuned": f"t{i}", "ab": ab, "ba": ba, "outcome": o}
                             for i, (ab, ba, o) in enumerate([("A", "B", "win"), ("A", "B", "win"),
                                                              ("tie", "tie", "tie"), ("B", "A", "loss")])]}


def make_run(run: Path, stages: bool = True) -> Path:
    """Write the run. With ``stages`` a stages.jsonl logs every stage; without it the report
    falls back to the curation and export files in the folder."""
    run.mkdir(parents=True, exist_ok=True)
    _w(run / "records.jsonl", RECORDS)
    _w(run / "rejected.jsonl", REJECTED)
    (run / "state.json").write_text(json.dumps(STATE))
    (run / "config.json").write_text(json.dumps({"command": "datakit generate", "config": {"teachers": []}}))
    _w(run / "candidates.jsonl", CANDIDATES)
    _w(run / "judgements.jsonl", JUDGEMENTS)
    _w(run / "judged.jsonl", JUDGED)
    removed = [dict(RECORDS[2], status="rejected", reason="near_duplicate", duplicate_of=R1, similarity=0.8),
               dict(RECORDS[1], status="rejected", reason="contaminated", duplicate_of="eval-7", similarity=0.9,
                    matched_file="eval.jsonl")]
    for r in removed:
        r["filters"] = r["filters"] + [{"filter": "dedup", "passed": False, "reason": r["reason"]}]
    _w(run / "clean.jsonl.removed.jsonl", removed)
    _w(run / "clean.jsonl", [RECORDS[0], RECORDS[3]])
    msg = lambda i: {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}], "id": str(i)}
    _w(run / "sft.jsonl", [msg(i) for i in range(3)])
    _w(run / "sft.eval.jsonl", [msg(9)])
    _w(run / "dpo.jsonl", [{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
                            "rejected": [{"role": "assistant", "content": "b"}]}])
    _w(run / "train-sft" / "metrics.jsonl", METRICS)
    (run / "train-sft" / "summary.json").write_text(json.dumps({"method": "sft", "model": "bundled", "steps": 4,
                                                                "best_eval_loss": 1.7, "first_loss": 2.0,
                                                                "last_loss": 1.2, "wall_s": 30.0}))
    (run / "train-sft" / "validation.json").write_text(json.dumps(VALIDATION))
    if stages:
        _w(run / "stages.jsonl", STAGES)
        with open(run / "stages.jsonl", "a", encoding="utf-8") as f:
            f.write('{"stage": "train", "wall')   # a torn last line (a killed writer): skipped
    return run


USAGE = lambda n: {"local": {"requests": n, "cache_hits": 1, "retries": 0, "prompt_tokens": 100 * n,
                             "completion_tokens": 10 * n, "cost": 0.0}}
STAGES = [
    {"stage": "generate", "started": "2026-01-01T00:00:00", "wall_s": 60.0, "argv": ["generate"], "counts": {},
     "usage": USAGE(9)},
    {"stage": "dedup", "started": "2026-01-01T00:01:00", "wall_s": 1.5, "argv": ["dedup"],
     "outputs": ["clean.jsonl", "clean.jsonl.removed.jsonl"],
     "counts": {"in": 4, "kept": 2, "removed": {"near_duplicate": 1, "contaminated": 1}, "clusters": 1,
                "against": {"eval.jsonl": 1}}},
    {"stage": "respond", "wall_s": 20.0, "counts": {"candidates": 6}, "usage": USAGE(6)},
    {"stage": "judge", "wall_s": 30.0, "counts": {}, "usage": USAGE(12)},
    {"stage": "judge", "wall_s": 5.0, "counts": {}, "usage": USAGE(2)},          # a rerun adds up
    {"stage": "export", "wall_s": 0.5, "counts": {"format": "sft", "style": "trl", "rows": 3, "eval_rows": 1,
                                                  "dropped": {"unscored": 1}}},
    {"stage": "export", "wall_s": 0.25, "counts": {"format": "dpo", "style": "trl", "rows": 1, "eval_rows": 0,
                                                   "dropped": {"all_tied": 1, "too_few_candidates": 1}}},
    {"not_a_stage": True},                                                         # skipped
]
