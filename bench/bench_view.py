"""Benchmark: ``datakit view`` on a synthetic run of N records (default 100,000).

The run: records.jsonl (N accepted records as generate writes them, ~1.6 KB each: lineage, filter
verdicts, en and zh text, a third of it Chinese), rejected.jsonl (N/10), state.json; with
``--judged`` also candidates.jsonl and judgements.jsonl (two candidates per record, two
pointwise verdicts and one pair in both orders).

Measured on the real server (``datakit view RUN --port 0`` in a subprocess, HTTP on 127.0.0.1):

* cold open: from starting the command to the first page of the list (no index yet), and to the
  index being complete (records, judge lines, full-text search);
* warm open: the same with the index already built (a second session on the run);
* per page: list pages at random offsets, with filters, with a search (trigram index; a
  2-character Chinese term, which the trigram index cannot serve, scans), and opening a record.

Printed beside datakit: the baseline a viewer without an index pays on every open and every page,
reading records.jsonl and ``json.loads`` of every line. Goals (issue 10): open < 2 s, page < 200 ms
on 2 cores.

Run: ``python bench/bench_view.py [--records 100000] [--judged] [--keep]`` (files in bench/out/).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the quick brown fox jumps over a lazy dog while we write a poem about cats and explain how to "
         "summarise this text then list three ideas for a rainy day with coffee and trains").split()
HANZI = "请写一首关于春天的诗解释为什么天空是蓝色总结下面的文章列出三个想法机器学习帮我翻译这句话"


def _text(rng: random.Random, k: int, zh: bool) -> str:
    return "".join(rng.choice(HANZI) for _ in range(k)) if zh else " ".join(rng.choice(WORDS) for _ in range(k))


def _record(i: int, rng: random.Random, status: str = "accepted", reason: str | None = None) -> dict:
    zh = i % 3 == 0
    teacher = ("local", "deepseek")[i % 2]
    return {"id": f"g{i // 20:05d}-00-{i % 20:02d}" if status == "accepted" else f"x{i:07d}",
            "instruction": _text(rng, 25, zh), "input": _text(rng, 10, zh) if i % 4 == 0 else "",
            "output": _text(rng, 150 if zh else 110, zh) if status == "accepted" else "",
            "is_classification": False, "status": status, "reason": reason,
            "lineage": {"round": i // 20 + 1, "request": 0, "demo_ids": ["seed_en_001", "seed_zh_002", "g00001-00-02"],
                        "teacher": teacher, "model": teacher + "-chat",
                        "prompt": {"name": "generate_tasks", "sha256": "ab" * 32},
                        "params": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 400}, "cached": False},
            "filters": [{"filter": "length", "passed": True, "score": 25, "reason": None},
                        {"filter": "rouge_l", "passed": status == "accepted", "score": round(rng.random() * 0.7, 4),
                         "reason": reason, "detail": {"nearest": "seed_en_001"}}]}


def make_run(run: Path, n: int, judged: bool) -> None:
    rng = random.Random(0)
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "records.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(_record(i, rng), ensure_ascii=False) + "\n")
    with open(run / "rejected.jsonl", "w", encoding="utf-8") as f:
        for i in range(n // 10):
            f.write(json.dumps(_record(i, rng, "rejected", ("too_short", "too_similar")[i % 2]), ensure_ascii=False) + "\n")
    (run / "state.json").write_text(json.dumps({"round": n // 20 + 1, "accepted": n}))
    (run / "config.json").write_text(json.dumps({"command": "datakit generate", "config": {}}))
    if judged:
        _judge_logs(run, n, rng)


def _judge_logs(run: Path, n: int, rng: random.Random) -> None:
    with open(run / "candidates.jsonl", "w") as cf, open(run / "judgements.jsonl", "w") as jf:
        for i in range(n):
            rid = f"g{i // 20:05d}-00-{i % 20:02d}"
            for k in range(2):
                cf.write(json.dumps({"record_id": rid, "id": f"local#{k}", "output": _text(rng, 80, False),
                                     "teacher": "local", "model": "m", "params": {"temperature": 0.3 + k}}) + "\n")
                v = {"status": "ok", "score": float(rng.randrange(1, 11)), "aspects": {
                    a: {"score": 7, "rationale": "fine"} for a in ("helpfulness", "correctness")}}
                jf.write(json.dumps({"kind": "pointwise", "record_id": rid, "cand": f"local#{k}", "verdict": v,
                                     "raw": "{}" * 200, "teacher": "local", "model": "m"}) + "\n")
            for order, w in (("xy", "A"), ("yx", "B")):
                jf.write(json.dumps({"kind": "pairwise", "record_id": rid, "x": "local#0", "y": "local#1",
                                     "order": order, "winner": w, "raw": "", "teacher": "local"}) + "\n")


# --------------------------------------------------------------------------- measuring

def _get(port: int, path: str) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, json.loads(body)


def _timed(port: int, path: str) -> tuple[float, dict]:
    t = time.perf_counter()
    status, body = _get(port, path)
    assert status == 200, (path, body)
    return time.perf_counter() - t, body


def open_server(run: Path) -> tuple[subprocess.Popen, int, float, float, list[float]]:
    """Start the viewer; (process, port, seconds to the first page, seconds to a complete index,
    seconds of list pages asked for while the index was being built)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "datakit", "view", str(run), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    line = proc.stderr.readline().decode()
    port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
    while True:
        status, page = _get(port, "/api/records?page=0&size=50")
        if status == 200 and page["items"]:
            break
        time.sleep(0.01)
    first = time.perf_counter() - t0
    during = []
    while _get(port, "/api/status")[1]["index"]["phase"] not in ("ready", "failed"):
        during.append(_timed(port, f"/api/records?page={len(during) % 20}&size=50")[0])
        time.sleep(0.2)
    return proc, port, first, time.perf_counter() - t0, during


def per_page(port: int, n: int) -> dict[str, list[float]]:
    rng = random.Random(1)
    pages = max(1, n // 50)
    cases = {
        "list page (random offset)": [f"/api/records?page={rng.randrange(pages)}&size=50" for _ in range(20)],
        "filters: zh, teacher, score order": [
            f"/api/records?lang=zh&teacher=deepseek&sort=score_desc&page={rng.randrange(pages // 6 or 1)}" for _ in range(10)],
        "filter: rejected, reason": [f"/api/records?status=rejected&reason=too_short&page={k}" for k in range(10)],
        "search en (index)": ["/api/records?q=" + quote(q) for q in ("brown fox", "rainy day coffee", "summarise")] * 3,
        "search zh (index)": ["/api/records?q=" + quote(q) for q in ("春天的", "机器学习", "翻译这句")] * 3,
        "search zh 2 chars (scan)": ["/api/records?q=" + quote(q) for q in ("天空", "想法")] * 3,
    }
    out = {k: [_timed(port, p)[0] for p in paths] for k, paths in cases.items()}
    ids = [it["id"] for it in _get(port, f"/api/records?page={rng.randrange(pages)}&size=50")[1]["items"]][:10]
    out["open one record"] = [_timed(port, "/api/record?id=" + quote(i))[0] for i in ids]
    return out


def baseline(run: Path) -> float:
    t = time.perf_counter()
    with open(run / "records.jsonl", "rb") as f:
        rows = [json.loads(line) for line in f]
    assert rows
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--judged", action="store_true", help="also candidates and judgements (2 per record)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    run = ROOT / "bench" / "out" / f"view-{a.records}{'-judged' if a.judged else ''}"
    shutil.rmtree(run, ignore_errors=True)
    make_run(run, a.records, a.judged)
    size = sum(p.stat().st_size for p in run.iterdir()) / 1e6
    print(f"run: {a.records:,} records + {a.records // 10:,} rejected, {size:.0f} MB, {os.cpu_count()} cores")
    base = baseline(run)
    proc, port, first, full, during = open_server(run)
    try:
        pages = per_page(port, a.records)
    finally:
        proc.kill()
        proc.wait()
    proc, port, warm, _, _ = open_server(run)
    proc.kill()
    proc.wait()
    print(f"{'':38}{'datakit':>12}{'baseline (no index)':>22}")
    print(f"{'cold open: first page':38}{first:>11.2f}s{base:>21.2f}s")
    print(f"{'cold open: index complete (search)':38}{full:>11.2f}s")
    if during:
        print(f"{'list page while indexing (median / max)':38}{statistics.median(during) * 1000:>7.0f} ms / "
              f"{max(during) * 1000:.0f} ms")
    print(f"{'warm open (index reused): first page':38}{warm:>11.2f}s{base:>21.2f}s")
    for k, v in pages.items():
        print(f"{k + ' (median / max)':38}{statistics.median(v) * 1000:>7.0f} ms / {max(v) * 1000:.0f} ms"
              f"{'':>4}{base:>12.2f}s")
    index = run / ".view-index.sqlite"
    print(f"index file: {index.stat().st_size / 1e6:.0f} MB")
    if not a.keep:
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
