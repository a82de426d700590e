"""--max-cost / max_cost against the scripted server on 127.0.0.1: the run stops with exit 1 and
a line saying what was spent, never spends past the cap (every reservation is a true worst case
here), keeps what was in flight, and a rerun with a higher budget continues."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from datakit.config import load_config
from datakit.generate.loop import generate
from datakit.judge.run import RespondOptions, respond, respond_messages
from datakit.records import Record, read_jsonl
from datakit.runs import RunDir
from datakit.teachers.budget import Budget, worst_case_cost
from datakit.teachers.cache import ResponseCache
from datakit.teachers.fake_server import FakeOpenAIServer
from test_judge_run import judge_responder, make_run, stats

P_IN, P_OUT = 100.0, 200.0     # USD per million tokens: large, so that cents add up quickly
TASKS = [f"Explain topic {i} to a child, with an example." for i in range(30)]


def toml_for(tmp: Path, srv: FakeOpenAIServer, extra: str = "") -> Path:
    p = tmp / "t.toml"
    p.write_text(f'concurrency = 6\n{extra}\n[[teachers]]\nname = "s"\nbase_url = "{srv.base_url}"\nmodel = "m"\n'
                 f"price_input = {P_IN}\nprice_output = {P_OUT}\n")
    return p


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datakit", *args], capture_output=True, text=True, timeout=120)


def spent(run: Path) -> float:
    """What the logged candidates cost, from the usage the server reported for each."""
    return sum((c["usage"]["prompt_tokens"] * P_IN + c["usage"]["completion_tokens"] * P_OUT) / 1e6
               for c in read_jsonl(run / "candidates.jsonl"))


def test_budget_stops_with_exit_1_keeps_in_flight_work_and_a_higher_budget_continues(tmp_path):
    with FakeOpenAIServer(responder=judge_responder, latency=0.05) as srv:
        run = make_run(tmp_path / "run", TASKS)
        toml = toml_for(tmp_path, srv)
        worst = max(worst_case_cost({"messages": respond_messages(Record(id="x", instruction=t)), "max_tokens": 40},
                                    P_IN, P_OUT) for t in TASKS)
        budget = 0.08
        p = cli("respond", str(run), "--config", str(toml), "--n", "2", "--max-tokens", "40", "--max-cost", str(budget))
        assert p.returncode == 1, p.stderr
        assert "Traceback" not in p.stderr
        line = [l for l in p.stderr.splitlines() if "budget reached" in l]
        assert line and "spent $" in line[0] and "--max-cost" in p.stderr
        first = spent(run)
        # never past the cap, and stopped only when the next worst case no longer fit
        assert budget - worst < first <= budget
        # every request the server answered was kept: work in flight finished and was logged
        n1 = len(list(read_jsonl(run / "candidates.jsonl")))
        assert stats(srv)["statuses"]["200"] == n1 and 0 < n1 < 60
        # the spend is on the run: the same budget again sends nothing
        assert cli("respond", str(run), "--config", str(toml), "--n", "2", "--max-tokens", "40",
                   "--max-cost", str(budget)).returncode == 1
        assert stats(srv)["statuses"]["200"] == n1
        # a higher budget continues where the first stopped
        p = cli("respond", str(run), "--config", str(toml), "--n", "2", "--max-tokens", "40", "--max-cost", "0.16")
        assert p.returncode == 1 and first < spent(run) <= 0.16
        p = cli("respond", str(run), "--config", str(toml), "--n", "2", "--max-tokens", "40", "--max-cost", "5")
        assert p.returncode == 0, p.stderr
        keys = [(c["record_id"], c["id"]) for c in read_jsonl(run / "candidates.jsonl")]
        assert len(keys) == len(set(keys)) == 60
        assert set(Counter(stats(srv)["answered"]).values()) == {1}  # nothing paid twice
        # the config's max_cost holds as --max-cost does (here: already spent past it)
        p = cli("respond", str(run), "--config", str(toml_for(tmp_path, srv, "max_cost = 0.01")), "--n", "3",
                "--max-tokens", "40")
        assert p.returncode == 1 and "budget reached" in p.stderr and stats(srv)["statuses"]["200"] == 60


def uncached(path: Path) -> list[dict]:
    rows = list(read_jsonl(path))
    for r in rows:
        r["lineage"].pop("cached")
        r["lineage"]["instance"].pop("cached")
    return rows


def test_per_teacher_budget_stops_only_that_teacher(tmp_path):
    with FakeOpenAIServer(responder=judge_responder) as a, FakeOpenAIServer(responder=judge_responder) as b:
        run = make_run(tmp_path / "run", TASKS)
        cfg = load_config(None, {"teachers": [
            {"name": "a", "base_url": a.base_url, "model": "m", "price_input": P_IN, "price_output": P_OUT,
             "max_cost": 0.05},
            {"name": "b", "base_url": b.base_url, "model": "m", "price_input": P_IN, "price_output": P_OUT}]})
        r = respond(run, cfg, RespondOptions(teachers=["a", "b"], max_tokens=40))
        assert r.stopped and "teacher 'a'" in r.stopped and r.failed == 0
        got = Counter(c["teacher"] for c in read_jsonl(run / "candidates.jsonl"))
        assert got["b"] == 30 and 0 < got["a"] < 30
        assert ResponseCache(run / "cache.sqlite").spent()["a"] <= 0.05


def test_generate_stopped_by_the_budget_then_continued_makes_the_same_records(tmp_path):
    with FakeOpenAIServer() as srv:
        def cfg(max_cost):
            return load_config(None, {"max_cost": max_cost, "generate": {"num": 20, "requests_per_round": 1},
                                      "teachers": [{"name": "s", "base_url": srv.base_url, "model": "m",
                                                    "price_input": P_IN, "price_output": P_OUT}]})

        whole = asyncio.run(generate(cfg(None), RunDir(tmp_path / "whole")))
        run = RunDir(tmp_path / "run")
        s1 = asyncio.run(generate(cfg(0.3), run))
        assert s1.stopped_reason.startswith("budget reached") and s1.accepted < 20
        state = run.load_state()
        assert state["accepted"] == s1.accepted and state["teachers"]["s"]["cost"] <= 0.3
        s2 = asyncio.run(generate(cfg(50.0), run))
        assert s2.stopped_reason == "done" and s2.accepted == whole.accepted == 20
        # the same records; only the replayed round's answers say they came from the cache
        assert uncached(tmp_path / "run/records.jsonl") == uncached(tmp_path / "whole/records.jsonl")
        assert ResponseCache(tmp_path / "run/cache.sqlite").spent()["s"] == pytest.approx(
            whole.totals["s"]["cost"], rel=1e-9)


def test_budget_waits_for_requests_in_flight_before_it_closes():
    async def main() -> tuple[list[bool], float]:
        b = Budget(1.0, {})
        assert await b.reserve("t", 0.6)
        waiter = asyncio.ensure_future(b.reserve("t", 0.6))   # does not fit next to the first
        await asyncio.sleep(0.01)
        assert not waiter.done()
        b.settle("t", 0.6, 0.1)                                # the first cost far less
        ok = await waiter
        b.settle("t", 0.6, 0.5)
        third = await b.reserve("t", 0.6)                      # 0.6 spent: 0.6 more cannot fit
        return [ok, third, await b.reserve("t", 0.01)], b.total_spent()

    (ok, third, after), total = asyncio.run(main())
    assert ok and not third and not after and total == pytest.approx(0.6)


def test_batch_lines_are_reserved_at_batch_prices_within_the_budget(tmp_path):
    with FakeOpenAIServer(responder=judge_responder) as srv:
        run = make_run(tmp_path / "run", TASKS)

        def cfg(max_cost):
            return load_config(None, {"max_cost": max_cost, "batch": {"enabled": True, "poll_seconds": 0.02},
                                      "teachers": [{"name": "s", "base_url": srv.base_url, "model": "m",
                                                    "price_input": P_IN, "price_output": P_OUT,
                                                    "batch_price_input": P_IN / 2, "batch_price_output": P_OUT / 2}]})

        r = respond(run, cfg(0.1), RespondOptions(max_tokens=40))
        entry = json.loads((run / "batches.json").read_text())["batches"][0]
        assert r.stopped and 0 < entry["n"] < 30 and r.done == entry["n"]
        assert stats(srv)["http"].get("POST /v1/chat/completions", 0) == 0  # nothing was sent online past it
        assert ResponseCache(run / "cache.sqlite").spent()["s"] <= 0.1
        r = respond(run, cfg(1.0), RespondOptions(max_tokens=40))
        assert r.stopped is None and r.done == 30 - entry["n"] and stats(srv)["batches_created"] == 2
