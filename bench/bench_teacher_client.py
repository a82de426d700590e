"""Teacher client throughput and CPU cost against a local OpenAI-compatible server.

The scripted server (datakit.teachers.fake_server, in its own process so that its CPU is not
counted as the client's) answers every request after a fixed latency. With ``concurrency``
requests in flight and latency L, its capacity is concurrency / L requests per second. The
client side measured here is the whole datakit path: TeacherPool.chat (routing, SQLite cache
lookup and write, accounting) plus writing each answer as a record to an fsync'd JSONL log.

Goal (issue 2): >= 90% of the server's capacity at concurrency 64, < 1 ms client CPU per request.

    python bench/bench_teacher_client.py [--requests 3000] [--concurrency 64] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datakit.config import TeacherConfig  # noqa: E402
from datakit.records import JsonlAppender, Record  # noqa: E402
from datakit.teachers.cache import ResponseCache  # noqa: E402
from datakit.teachers.pool import Teacher, TeacherPool  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_datakit(url: str, n: int, conc: int, workdir: Path) -> tuple[float, float]:
    pool = TeacherPool([Teacher(TeacherConfig(name="bench", base_url=url, model="m", timeout=30), max_in_flight=conc)],
                       ResponseCache(workdir / "cache.sqlite"), conc)
    log = JsonlAppender(workdir / "records.jsonl")
    pending: list[dict] = []

    async def one(i: int) -> None:
        r = await pool.chat("generate", [{"role": "user", "content": f"Write task number {i} please."}],
                            params={"temperature": 0.7, "max_tokens": 256})
        assert r.ok, r.error
        pending.append(Record(id=f"b{i}", instruction=f"task {i}", output=r.text,
                              lineage={"teacher": r.teacher, "model": r.model, "params": r.params}).to_dict())
        if len(pending) >= 64:
            log.write_batch(pending)
            pending.clear()

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    log.write_batch(pending)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    log.close()
    await pool.aclose()
    return wall, cpu


async def run_raw_httpx(url: str, n: int, conc: int) -> tuple[float, float]:
    """Reference point: bare httpx posts with a semaphore, no SDK, no cache, no records."""
    sem = asyncio.Semaphore(conc)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=conc), timeout=30) as client:
        async def one(i: int) -> None:
            async with sem:
                r = await client.post(f"{url}/chat/completions", json={
                    "model": "m", "messages": [{"role": "user", "content": f"raw {i}"}]})
                r.raise_for_status()
                r.json()
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0, time.process_time() - cpu0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    a = ap.parse_args()
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-m", "datakit.teachers.fake_server", "--port", str(port),
                            "--latency", str(a.latency)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        capacity = a.concurrency / a.latency
        rows = []
        with tempfile.TemporaryDirectory() as d:
            asyncio.run(run_datakit(url, 200, a.concurrency, Path(d) / "warm"))  # warm-up
            wall, cpu = asyncio.run(run_datakit(url, a.requests, a.concurrency, Path(d)))
            rows.append(("datakit TeacherPool + cache + records", wall, cpu))
            cached_wall, cached_cpu = asyncio.run(run_datakit(url, a.requests, a.concurrency, Path(d)))
        wall_raw, cpu_raw = asyncio.run(run_raw_httpx(url, a.requests, a.concurrency))
        rows.append(("bare httpx (reference)", wall_raw, cpu_raw))
    finally:
        srv.terminate()
        srv.wait()
    print(f"\nteacher client vs a server with {a.latency * 1000:.0f} ms latency, concurrency {a.concurrency}, "
          f"{a.requests} requests; capacity {capacity:.0f} req/s")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}\n")
    print("| client | req/s | % of capacity | client CPU ms/request |")
    print("|---|---:|---:|---:|")
    for name, wall, cpu in rows:
        rps = a.requests / wall
        print(f"| {name} | {rps:,.0f} | {100 * rps / capacity:.1f}% | {1000 * cpu / a.requests:.3f} |")
    print(f"| datakit, every answer from the cache (rerun) | {a.requests / cached_wall:,.0f} | n/a | "
          f"{1000 * cached_cpu / a.requests:.3f} |")
    dk_rps = a.requests / rows[0][1]
    ok = dk_rps >= 0.9 * capacity and 1000 * rows[0][2] / a.requests < 1.0
    print(f"\ngoal (>= 90% of capacity, < 1 ms CPU/request): {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
