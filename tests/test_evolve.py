"""`datakit evolve` (Evol-Instruct) on the scripted server: eliminations with their reason
codes, lineage, the evolved pool going through the same filters and getting instances, export
of the derived run, and resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from datakit.generate.evolve import rewrite_verdict, resolve_mutations
from datakit.teachers.fake_methods import methods_responder
from datakit.teachers.fake_server import FakeOpenAIServer
from helpers import REPO, assert_user_error, jsonl, run_cli
from test_generate import cache_body_keys


def teacher(srv):
    return ["--base-url", srv.base_url, "--model", "fake"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    run = tmp_path_factory.mktemp("evolve") / "run"
    with FakeOpenAIServer(responder=methods_responder) as srv:
        p = run_cli("generate", "--num", "40", "--out", str(run), *teacher(srv))
    assert p.returncode == 0, p.stderr
    return run


def test_rewrite_verdicts():
    parent = "Write a short poem about bees for a science class."
    assert rewrite_verdict("", parent, 0.9, "cjk").reason == "empty"
    assert rewrite_verdict("NO CHANGE.", parent, 0.9, "cjk").reason == "no_change"
    assert rewrite_verdict("I'm sorry, but I can't do that.", parent, 0.9, "cjk").reason == "refusal"
    assert rewrite_verdict("#Rewritten Prompt#: " + parent, parent, 0.9, "cjk").reason == "leaked_prompt"
    assert rewrite_verdict("Following the given prompt, write an ode.", parent, 0.9, "cjk").reason == "leaked_prompt"
    assert rewrite_verdict("改写后的任务：写一首诗。", parent, 0.9, "cjk").reason == "leaked_prompt"
    same = rewrite_verdict(parent.replace("short ", ""), parent, 0.9, "cjk")
    assert same.reason == "no_change" and same.score > 0.9
    deeper = rewrite_verdict(parent + " Use rhyming couplets and name three species of bee.", parent, 0.9, "cjk")
    assert deeper.passed and deeper.score < 0.9
    assert resolve_mutations("depth") == ["constraints", "deepen", "concretise", "reasoning", "complicate_input"]
    assert resolve_mutations("breadth,constraints") == ["breadth", "constraints"]


def test_evolve_eliminates_with_reasons_and_keeps_lineage(source):
    with FakeOpenAIServer(responder=methods_responder) as srv:
        p = run_cli("evolve", str(source), "--rounds", "2", *teacher(srv))
    assert p.returncode == 0, p.stderr
    out = source / "evolve"
    recs, rej = jsonl(out / "records.jsonl"), jsonl(out / "rejected.jsonl")
    src_ids = {r["id"] for r in jsonl(source / "records.jsonl")}
    reasons = Counter(r["reason"] for r in rej)
    assert {"no_change", "refusal", "leaked_prompt"} <= set(reasons), reasons
    # the scripted empty answers: the teacher client retries an empty completion as a fault, so
    # after its retries they end as teacher_error (never as an accepted, empty evolution)
    assert reasons["empty"] + reasons["teacher_error"] >= 1, reasons
    said = [r for r in rej if r["reason"] == "no_change" and r["filters"][-1]["detail"].get("teacher_said")]
    by_rouge = [r for r in rej if r["reason"] == "no_change" and r["filters"][-1]["score"]]
    assert said and by_rouge and all(r["filters"][-1]["score"] > 0.9 for r in by_rouge)
    assert recs and len({r["id"] for r in recs + rej}) == len(recs + rej)
    round1 = {r["id"] for r in recs if r["lineage"]["round"] == 1}
    for r in recs:
        lin = r["lineage"]
        assert lin["method"] == "evolve" and lin["mutation"] in resolve_mutations("depth,breadth")
        assert lin["parent"] in (src_ids if lin["round"] == 1 else round1)
        assert lin["root"] in src_ids
        assert lin["prompt"]["name"] in ("evolve_depth", "evolve_breadth")
        assert r["output"] and lin["instance"]["prompt"]["name"].startswith("instance_")
        assert [f["filter"] for f in r["filters"]][:2] == ["evolution", "length"]
        assert {"exact_dup", "rouge_l", "copied_example"} <= {f["filter"] for f in r["filters"]}
    assert {r["lineage"]["round"] for r in recs} == {1, 2}
    assert {r["lineage"]["family"] for r in recs} == {"depth", "breadth"}
    state = json.loads((out / "state.json").read_text())
    assert state["round"] == 2 and state["accepted"] == len(recs) and sum(state["rejected"].values()) == len(rej)
    # the derived run is a run directory: export reads it as it is
    e = run_cli("export", str(out), "--out", str(out / "sft.jsonl"))
    assert e.returncode == 0, e.stderr
    assert len(jsonl(out / "sft.jsonl")) == len(recs)
    # done: the same command again sends nothing
    with FakeOpenAIServer(responder=methods_responder) as srv:
        assert run_cli("evolve", str(source), "--rounds", "2", *teacher(srv)).returncode == 0
        assert srv.stats.requests == 0


def test_evolve_bad_options_are_one_line(source, tmp_path):
    assert_user_error(run_cli("evolve", str(source), "--mutations", "deeper", "--out", str(tmp_path / "e")),
                      "--mutations: unknown mutation 'deeper'")
    assert_user_error(run_cli("evolve", str(source), "--rounds", "0", "--out", str(tmp_path / "e")),
                      "--rounds: must be at least 1")
    assert_user_error(run_cli("evolve", str(tmp_path / "nothing")), "nothing")


def kill_mid_run(args, state_path, srv, min_round=1):
    """Start `datakit ARGS`, SIGKILL it once a round is committed and more requests are in flight."""
    p = subprocess.Popen([sys.executable, "-m", "datakit", *args], cwd=REPO, env=dict(os.environ),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    base = None
    while time.monotonic() < deadline:
        if state_path.exists() and json.loads(state_path.read_text() or "{}").get("round", 0) >= min_round:
            base = base if base is not None else srv.stats.requests
            if srv.stats.requests >= base + 3:
                break
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()


def assert_resumed_like_reference(run, ref, srv, cached_at_kill, received_before):
    strip = lambda r: {**r, "lineage": {k: v for k, v in r["lineage"].items() if k not in ("cached", "instance", "turns")}}
    for name in ("records.jsonl", "rejected.jsonl"):
        got, want = jsonl(run / name), jsonl(ref / name)
        assert [strip(r) for r in got] == [strip(r) for r in want], name
    assert cached_at_kill, "the kill came before anything was cached"
    for key in cached_at_kill:
        assert srv.stats.received[key] == received_before[key], "a cached request was sent again"


def test_evolve_kill_9_then_resume(source, tmp_path):
    args = ["evolve", str(source), "--rounds", "3", "--concurrency", "2"]
    with FakeOpenAIServer(responder=methods_responder) as ref_srv:
        assert run_cli(*args, "--out", str(tmp_path / "ref"), *teacher(ref_srv)).returncode == 0
    run = tmp_path / "run"
    with FakeOpenAIServer(responder=methods_responder, latency=0.03) as srv:
        kill_mid_run([*args, "--out", str(run), *teacher(srv)], run / "state.json", srv)
        state = json.loads((run / "state.json").read_text())
        assert 1 <= state["round"] < 3, "the run must be killed mid-way for this test to mean anything"
        cached_at_kill = cache_body_keys(run / "cache.sqlite")
        received_before = Counter(srv.stats.received)
        p = run_cli(*args, "--out", str(run), *teacher(srv))
        assert p.returncode == 0, p.stderr
        assert "resumed after round" in p.stderr
    assert_resumed_like_reference(run, tmp_path / "ref", srv, cached_at_kill, received_before)
