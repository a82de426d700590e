"""Benchmark: ``datakit report`` on a synthetic run of N accepted records (default 100,000).

The run has what a real one has, at scale: records.jsonl (lineage with demo ids, a ROUGE-L
verdict, en and zh instructions, inputs and outputs of realistic length), rejected.jsonl (one
rejection per record, every reason code, a few unknown ones), state.json, candidates.jsonl,
judgements.jsonl (two candidates judged pointwise and one pair in both orders per record),
judged.jsonl, stages.jsonl and a train folder with metrics.jsonl and validation.json.

Printed beside datakit: the floor, i.e. reading every one of those files and ``json.loads`` of
every line and nothing else (the cost any report must pay). The goal is under 60 s on 2 cores.

Run: ``python bench/bench_report.py [--records 100000] [--keep]`` (files in bench/out/).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERBS = ["Write", "Explain", "Describe", "List", "Summarize", "Classify", "Translate", "Generate", "Create", "Give"]
NOUNS = ["poem", "story", "email", "summary", "list", "recipe", "plan", "review", "letter", "question", "joke"]
TOPICS = ["cats", "the ocean", "machine learning", "a rainy day", "coffee", "friendship", "the moon", "trains"]
ZH = ["请写一首关于春天的诗", "解释一下机器学习", "帮我翻译这句话", "列出五种水果", "总结这篇文章的要点"]
REASONS = ["too_short", "too_long", "too_similar", "exact_duplicate", "surplus", "instance_unparsed",
           "copied_example", "blacklisted", "novel_code"]
FILTER_OF = {"too_short": "length", "too_long": "length", "too_similar": "rouge_l", "exact_duplicate": "exact_dup",
             "blacklisted": "blacklist", "novel_code": "rouge_l", "copied_example": "copied_example"}
TEACHER = {"teacher": "deepseek", "model": "deepseek-chat"}


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(TOPICS + NOUNS) for _ in range(n))


def _record(i: int, rng: random.Random) -> dict:
    rnd, req = i // 40 + 1, (i // 5) % 8
    zh = i % 5 == 0
    instr = ZH[i % len(ZH)] + str(i) if zh else f"{rng.choice(VERBS)} a {rng.choice(NOUNS)} about {rng.choice(TOPICS)} {i}."
    demos = [f"seed_en_{rng.randrange(175):03d}" for _ in range(6)] + [f"g{max(1, rnd - 1):05d}-00-00"] * 2
    return {"id": f"g{rnd:05d}-{req:02d}-{i % 5:02d}", "instruction": instr, "input": _text(rng, rng.randrange(0, 30)),
            "output": _text(rng, rng.randrange(10, 200)), "is_classification": i % 7 == 0, "status": "accepted",
            "reason": None, "lineage": {"round": rnd, "request": req, "demo_ids": demos, **TEACHER,
                                        "prompt": {"name": "generate_tasks", "sha256": "ab" * 32},
                                        "params": {"temperature": 0.7}, "cached": False,
                                        "instance": {**TEACHER, "prompt": {"name": "instance_input_first"}}},
            "filters": [{"filter": "length", "passed": True, "score": 9, "reason": None},
                        {"filter": "exact_dup", "passed": True, "score": None, "reason": None},
                        {"filter": "rouge_l", "passed": True, "score": round(rng.random() * 0.7, 4), "reason": None,
                         "detail": {"nearest": "seed_en_001", "threshold": 0.7}}]}


def _rejected(rec: dict, i: int) -> dict:
    reason = REASONS[i % len(REASONS)]
    row = {**rec, "id": rec["id"] + "r", "status": "rejected", "reason": reason, "output": "", "input": ""}
    f = FILTER_OF.get(reason)
    row["filters"] = [{"filter": f, "passed": False, "score": 0.9, "reason": reason}] if f else []
    return row


def _judge_rows(rec: dict, rng: random.Random) -> tuple[list[dict], dict]:
    rid, out, cands = rec["id"], [], []
    for k in range(2):
        s = rng.randint(3, 9)
        v = {"status": "ok", "score": float(s), "aspects": {a: {"score": s, "rationale": "ok"} for a in
                                                            ("helpfulness", "correctness", "clarity")}}
        out.append({"kind": "pointwise", "record_id": rid, "cand": f"t#{k}", "verdict": v, **TEACHER, "cached": False})
        cands.append({"id": f"t#{k}", "output": rec["output"][:200], **TEACHER, "judge": v})
    for order, w in (("xy", rng.choice("AB")), ("yx", rng.choice("AB"))):
        out.append({"kind": "pairwise", "record_id": rid, "x": "t#0", "y": "t#1", "order": order, "winner": w, **TEACHER})
    margin = abs(cands[0]["judge"]["score"] - cands[1]["judge"]["score"])
    judged = {**rec, "candidates": cands, "judge": {"pair": {"kept": margin >= 1, "margin": margin, "min_margin": 1.0,
                                                              "reason": None if margin >= 1 else "all_tied"}}}
    return out, judged


def build(run: Path, n: int) -> None:
    rng = random.Random(0)
    run.mkdir(parents=True)
    with open(run / "records.jsonl", "w") as rf, open(run / "rejected.jsonl", "w") as xf, \
            open(run / "judgements.jsonl", "w") as jf, open(run / "judged.jsonl", "w") as df:
        for i in range(n):
            rec = _record(i, rng)
            rf.write(json.dumps(rec, ensure_ascii=False) + "\n")
            xf.write(json.dumps(_rejected(rec, i), ensure_ascii=False) + "\n")
            rows, judged = _judge_rows(rec, rng)
            jf.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            df.write(json.dumps(judged, ensure_ascii=False) + "\n")
    usage = {"deepseek": {"requests": n, "cache_hits": 0, "retries": 3, "prompt_tokens": 900 * n,
                          "completion_tokens": 300 * n, "cost": 0.0004 * n}}
    (run / "state.json").write_text(json.dumps({"round": n // 40 + 1, "accepted": n, "teachers": usage}))
    (run / "config.json").write_text(json.dumps({"command": "datakit generate", "config": {"teachers": [{"name": "deepseek"}]}}))
    stages = [{"stage": s, "wall_s": 100.0, "usage": usage, "counts": {}} for s in ("generate", "respond", "judge")]
    (run / "stages.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stages))
    (run / "train-sft").mkdir()
    (run / "train-sft" / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2 - s / 500}) + "\n" for s in range(1, 501)))


def floor_seconds(run: Path) -> float:
    t0 = time.perf_counter()
    for name in ("records.jsonl", "rejected.jsonl", "judgements.jsonl", "judged.jsonl"):
        with open(run / name, "rb") as f:
            for line in f:
                json.loads(line)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--keep", action="store_true", help="keep bench/out/report-run afterwards")
    args = ap.parse_args()
    run = ROOT / "bench" / "out" / "report-run"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    build(run, args.records)
    size = sum(p.stat().st_size for p in run.glob("*.jsonl")) / 2**20
    print(f"synthetic run: {args.records:,} records, {size:,.0f} MiB of JSONL, built in {time.perf_counter() - t0:.1f} s")
    floor = floor_seconds(run)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "datakit", "report", str(run)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "100"})
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"datakit report failed:\n{proc.stderr}")
    rep = json.loads((run / "card" / "report.json").read_text())
    assert rep["summary"]["accepted_records"] == args.records, rep["summary"]
    print(f"cores available: {len(os.sched_getaffinity(0))}")
    print(f"{'':28}{'records':>10}{'seconds':>10}")
    print(f"{'floor (read + json.loads)':28}{args.records:>10,}{floor:>10.1f}")
    print(f"{'datakit report (CLI)':28}{args.records:>10,}{took:>10.1f}   goal < 60 s: {'yes' if took < 60 else 'NO'}")
    if not args.keep:
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
