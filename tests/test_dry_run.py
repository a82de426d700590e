"""--dry-run against the scripted server on 127.0.0.1: it sends nothing at all, and its
estimate is within 15% of what the run then really uses and costs.

The server counts prompt tokens as a chat API does (characters / 4, plus 3 per message and 3
per request), so the prompt side is a real test of the counting of the rendered prompts.
Completion lengths are the estimator's stated assumptions (half of ``--max-tokens`` for
respond, 200 tokens for a rubric answer, 60 for a pairwise verdict): the responder below
writes answers of those lengths on average, with a spread, so what is tested on that side is
the request count (samples, teachers, pairs, orders, cache) and the pricing, not the
assumption itself."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from datakit.config import load_config
from datakit.judge.dry_run import estimate_judge, estimate_respond
from datakit.judge.run import JudgeOptions, RespondOptions, judge, respond
from datakit.records import write_table
from datakit.teachers.fake_server import FakeOpenAIServer
from test_judge_run import stats

MAX_TOKENS = 300
PRICES = {"price_input": 0.27, "price_output": 1.10, "batch_price_input": 0.135, "batch_price_output": 0.55}


def _spread(body: dict, tokens: int) -> str:
    """About ``tokens`` tokens (4 characters each), +-40% by the request, deterministically."""
    rng = random.Random(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest())
    return ("lorem ipsum " * tokens)[:int(4 * tokens * rng.uniform(0.6, 1.4))]


def sized_responder(body: dict) -> str:
    msg = body["messages"][-1]["content"]
    if "[RESPONSE A]" in msg:
        return json.dumps({"winner": "A", "reason": _spread(body, 60)[:-30]})
    if "[RESPONSE]" in msg:
        aspects = ["clarity", "feasibility", "instruction_following", "helpfulness", "correctness", "harmlessness"]
        frame = len(json.dumps({a: {"score": 7, "rationale": ""} for a in aspects}))
        pad = _spread(body, 200)[frame:]
        return json.dumps({a: {"score": 7, "rationale": pad[i::6]} for i, a in enumerate(aspects)})
    return _spread(body, int(body["max_tokens"] * 0.5))


def make_run(path: Path, n: int) -> Path:
    rng = random.Random(7)
    words = "river market engine garden theory budget window signal harbor pattern".split()
    path.mkdir(parents=True)
    write_table(path / "records.jsonl", [
        {"id": f"r{i:02d}", "instruction": f"Summarize the notes about {rng.choice(words)} for a report.",
         "input": " ".join(rng.choice(words) for _ in range(rng.randrange(10, 120))), "output": "x"}
        for i in range(n)])
    return path


def cfg_for(*servers) -> object:
    return load_config(None, {"concurrency": 8, "teachers": [
        {"name": f"t{i}", "base_url": s.base_url, "model": f"m{i}", "rpm": 600, "tpm": 200000, **PRICES}
        for i, s in enumerate(servers)]})


def actual(rows: list[dict]) -> dict[str, float]:
    out = {"prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}
    for r in rows:
        out["prompt_tokens"] += r["tok in"]
        out["completion_tokens"] += r["tok out"]
        out["cost"] += (r["tok in"] * PRICES["price_input"] + r["tok out"] * PRICES["price_output"]) / 1e6
    return out


def close(est: dict, real: dict) -> None:
    for k in ("prompt_tokens", "completion_tokens", "cost"):
        assert est[k] == pytest.approx(real[k], rel=0.15), (k, est[k], real[k])


def test_respond_and_judge_estimates_match_the_run_within_15_percent(tmp_path):
    servers = [FakeOpenAIServer(responder=sized_responder, chat_overhead=(3, 3)) for _ in range(2)]
    for s in servers:
        s.start()
    try:
        run = make_run(tmp_path / "run", 16)
        cfg = cfg_for(*servers)
        est = estimate_respond(run, cfg, RespondOptions(n=2, max_tokens=MAX_TOKENS))
        assert all(stats(s)["http"] == {} for s in servers)          # nothing at all was sent
        tot = est.totals()
        assert tot["requests"] == 16 * 2 * 2
        assert tot["batch_cost"] == pytest.approx(tot["cost"] / 2, rel=0.01)
        r = respond(run, cfg, RespondOptions(n=2, max_tokens=MAX_TOKENS))
        assert r.done == 64
        close(tot, actual(r.teacher_rows))
        # a second estimate: everything is logged, nothing left to pay for
        assert estimate_respond(run, cfg, RespondOptions(n=2, max_tokens=MAX_TOKENS)).totals()["requests"] == 0

        before = [dict(stats(s)["http"]) for s in servers]
        est = estimate_judge(run, cfg, JudgeOptions(teacher="t0", max_pairs=3))
        assert [dict(stats(s)["http"]) for s in servers] == before
        tot = est.totals()
        # 4 candidates per record: 4 pointwise + 3 pairs in both orders
        assert tot["requests"] == 16 * (4 + 3 * 2)
        j = judge(run, cfg, JudgeOptions(teacher="t0", max_pairs=3))
        assert j.done == 160 and j.failed == 0
        close(tot, actual(j.teacher_rows))
    finally:
        for s in servers:
            s.stop()


def test_dry_run_cli_sends_nothing_and_counts_the_cache_as_free(tmp_path):
    with FakeOpenAIServer(responder=sized_responder, chat_overhead=(3, 3)) as srv:
        run = make_run(tmp_path / "run", 6)
        toml = tmp_path / "t.toml"
        toml.write_text(f'[[teachers]]\nname = "s"\nbase_url = "{srv.base_url}"\nmodel = "m"\n'
                        f'api_key_env = "DATAKIT_TEST_UNSET_KEY"\nprice_input = 1.0\nprice_output = 2.0\nrpm = 60\n')
        env_cmd = [sys.executable, "-m", "datakit"]
        for args in (["respond", str(run), "--n", "3"], ["judge", str(run)],
                     ["generate", "--num", "50", "--out", str(tmp_path / "gen")]):
            p = subprocess.run(env_cmd + args + ["--config", str(toml), "--dry-run"], capture_output=True,
                               text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
            assert p.returncode == 0, p.stderr
            assert "nothing was sent" in p.stderr and "USD batch" in p.stderr and "(rpm)" in p.stderr
            assert "assumed:" in p.stderr
        assert stats(srv)["http"] == {}   # not even the models list; no key was needed either
        assert not (tmp_path / "gen").exists() and not (run / "candidates.jsonl").exists()
        # answers already in the run's cache are free: a cut-short run, then the estimate
        cfg = load_config(None, {"teachers": [{"name": "s", "base_url": srv.base_url, "model": "m"}]})
        respond(run, cfg, RespondOptions(n=1, temperatures=[0.3]))  # sample 0 of n=2 is the same request
        (run / "candidates.jsonl").unlink()
        est = estimate_respond(run, cfg, RespondOptions(n=2)).tallies["s"]
        assert (est.cached, est.requests) == (6, 6)
