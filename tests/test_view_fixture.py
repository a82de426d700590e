"""(No tests here: data for the review tests.) A small run directory with known content — records
in English and Chinese, rejected candidates, two candidates per judged record with pointwise
scores and pairwise verdicts in both orders, and a dedup output — and a synthetic large run for
the paging tests and bench/bench_view.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

TEACHER = {"teacher": "local", "model": "smollm2"}


def _w(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def rec(rid: str, instruction: str, output: str, teacher: str = "local", rnd: int = 1, inp: str = "",
        status: str = "accepted", reason: str | None = None, rouge: float = 0.2) -> dict:
    lin = {"round": rnd, "request": 0, "demo_ids": ["seed_en_001", "seed_zh_002"], "teacher": teacher,
           "model": f"{teacher}-model", "prompt": {"name": "generate_tasks", "sha256": "ab" * 32},
           "params": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 400}, "cached": False}
    filters = [{"filter": "length", "passed": True, "score": 9, "reason": None},
               {"filter": "rouge_l", "passed": status == "accepted", "score": rouge,
                "reason": None if status == "accepted" else reason, "detail": {"nearest": "r-cats"}}]
    return {"id": rid, "instruction": instruction, "input": inp, "output": output, "is_classification": False,
            "status": status, "reason": reason, "lineage": lin, "filters": filters}


RECORDS = [
    rec("r-cats", "Write a short poem about cats.", "Soft paws, warm fur, a purring song."),
    rec("r-tea", "Explain how to brew green tea.", "Heat water to 80C and steep for two minutes.", teacher="deepseek"),
    rec("r-spring", "请写一首关于春天的诗", "春风吹拂大地，万物复苏。"),
    rec("r-sky", "解释为什么天空是蓝色的", "因为瑞利散射使蓝光散射得更多。", teacher="deepseek"),
    rec("r-sum", "Summarise the text below in one sentence.", "The council approved the new park.",
        inp="After a long debate the council voted to approve the new park on Main Street."),
    rec("r-dogs", "Write a short poem about dogs.", "Wagging tails and muddy paws."),
]
REJECTED = [
    rec("x-cats2", "Write a short poem about cats please.", "", status="rejected", reason="too_similar", rouge=0.91),
    rec("x-short", "Hi", "", status="rejected", reason="too_short"),
]
CANDS = {  # record -> [(candidate id, output, pointwise score)]
    "r-cats": [("local#0", "Whiskers in the sun, a cat naps.", 8.0), ("local#1", "cat cat cat", 4.0)],
    "r-tea": [("deepseek#0", "Use water at 80C; steep 2 minutes.", 9.0), ("local#0", "Boil it a lot.", 3.0)],
    "r-spring": [("local#0", "春天来了，花开了。", 7.0), ("local#1", "春。", 7.0)],
}


def _pointwise(rid: str, cid: str, score: float) -> dict:
    aspects = {a: {"score": score, "rationale": f"{a}: {'good' if score >= 7 else 'weak'} answer"}
               for a in ("instruction_following", "helpfulness", "correctness", "harmlessness")}
    return {"kind": "pointwise", "record_id": rid, "cand": cid, "raw": "{}", "tag": "t", "cached": False,
            "verdict": {"status": "ok", "score": score, "task_score": 8.0, "aspects": aspects, "source": "json"},
            **TEACHER}


def _pairwise(rid: str, x: str, y: str, order: str, winner: str) -> dict:
    return {"kind": "pairwise", "record_id": rid, "x": x, "y": y, "order": order, "winner": winner, "raw": "",
            "tag": "t", "cached": False, **TEACHER}


def make_run(run: Path) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    _w(run / "records.jsonl", RECORDS)
    _w(run / "rejected.jsonl", REJECTED)
    (run / "state.json").write_text(json.dumps({"round": 1, "accepted": len(RECORDS)}))
    (run / "config.json").write_text(json.dumps({"command": "datakit generate", "config": {}}))
    cands, judgements = [], []
    for rid, cs in CANDS.items():
        for cid, out, score in cs:
            cands.append({"record_id": rid, "id": cid, "output": out, "teacher": cid.split("#")[0],
                          "model": cid.split("#")[0] + "-model", "params": {"temperature": 0.7}, "cached": False})
            judgements.append(_pointwise(rid, cid, score))
        (x, *_), (y, *_) = cs[0], cs[1]
        judgements += [_pairwise(rid, x, y, "xy", "A"), _pairwise(rid, x, y, "yx", "B")]
    _w(run / "candidates.jsonl", cands)
    _w(run / "judgements.jsonl", judgements)
    removed = [dict(RECORDS[5], status="rejected", reason="near_duplicate", duplicate_of="r-cats", similarity=0.74)]
    _w(run / "curated" / "clean.jsonl", RECORDS[:5])
    _w(run / "curated" / "clean.jsonl.removed.jsonl", removed)
    return run


WORDS = ("the quick brown fox jumps over a lazy dog while we write a poem about cats and explain how "
         "to summarise this text then list three ideas").split()
HANZI = "请写一首关于春天的诗解释为什么天空是蓝色总结下面的文章列出三个想法"


def make_big(run: Path, n: int, seed: int = 0) -> Path:
    """A synthetic run of ``n`` accepted records (a third Chinese), about 1.6 KB each as
    generate writes them, and n/10 rejected ones."""
    rnd = random.Random(seed)
    run.mkdir(parents=True, exist_ok=True)

    def text(k: int, zh: bool) -> str:
        if zh:
            return "".join(rnd.choice(HANZI) for _ in range(k))
        return " ".join(rnd.choice(WORDS) for _ in range(k))

    with open(run / "records.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            zh = i % 3 == 0
            r = rec(f"g{i // 20:05d}-00-{i % 20:02d}", text(25, zh), text(150 if zh else 110, zh),
                    teacher=("local", "deepseek")[i % 2], rnd=i // 20 + 1)
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(run / "rejected.jsonl", "w", encoding="utf-8") as f:
        for i in range(n // 10):
            r = rec(f"x{i:06d}", text(3, False), "", status="rejected", reason=("too_short", "too_similar")[i % 2])
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (run / "state.json").write_text(json.dumps({"round": n // 20 + 1, "accepted": n}))
    (run / "config.json").write_text(json.dumps({"command": "datakit generate", "config": {}}))
    return run


def start_view(run: Path, *args: str, timeout: float = 60):
    """``datakit view RUN --port 0 ARGS`` in a subprocess; returns (process, base URL, printed line)."""
    import os
    import re
    import select
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("DATAKIT_VIEW_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "datakit", "view", str(run), "--port", "0", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline, buf = time.monotonic() + timeout, b""
    while b"\n" not in buf:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"datakit view did not start: {buf.decode(errors='replace')}{proc.stderr.read().decode()}")
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            buf += os.read(proc.stderr.fileno(), 4096)
    line = buf.decode().splitlines()[0]
    m = re.search(r"http://(\S+?)/", line)
    assert m, line
    return proc, f"http://{m.group(1)}", line
