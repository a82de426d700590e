"""Conversations are judged turn by turn: every assistant turn gets a rubric score with the
conversation before it as its task, the record's score is the worst turn, and turns are never
paired with each other. Against the scripted server on 127.0.0.1."""

import json

from datakit.config import load_config
from datakit.export import ExportOptions, export
from datakit.judge.run import JudgeOptions, RespondOptions, judge, respond
from datakit.records import read_jsonl, read_table, write_table
from datakit.teachers.fake_server import FakeOpenAIServer

ASPECTS = ["clarity", "feasibility", "instruction_following", "helpfulness", "correctness", "harmlessness"]
SEEN_TASKS = []


def scorer(body):
    msg = body["messages"][-1]["content"]
    task = msg.split("[TASK]", 1)[1].split("[END OF TASK]", 1)[0]
    resp = msg.split("[RESPONSE]", 1)[1].split("[END OF RESPONSE]", 1)[0]
    SEEN_TASKS.append(task)
    s = 9 if "GOOD" in resp else 4
    return json.dumps({a: {"score": s, "rationale": "ok"} for a in ASPECTS})


def conv(i, second):
    return {"id": f"c{i}", "instruction": "Plan a trip.", "input": "", "output": "GOOD plan",
            "messages": [{"role": "user", "content": "Plan a trip."},
                         {"role": "assistant", "content": "GOOD plan"},
                         {"role": "user", "content": f"Make it cheaper ({i})."},
                         {"role": "assistant", "content": second}]}


def test_every_assistant_turn_is_scored_and_the_worst_turn_is_the_records_score(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_table(run / "records.jsonl", [conv(1, "GOOD cheaper plan"), conv(2, "weak reply")])
    with FakeOpenAIServer(responder=scorer) as srv:
        cfg = load_config(None, {"teachers": [{"name": "j", "base_url": srv.base_url, "model": "m"}]})
        assert respond(run, cfg, RespondOptions(n=2)).conversations_skipped == 2
        res = judge(run, cfg, JudgeOptions())
    assert res.pointwise_total == 4 and res.pairwise_total == 0
    rows = list(read_jsonl(run / "judgements.jsonl"))
    assert sorted((r["record_id"], r["cand"]) for r in rows) == [
        ("c1", "turn#1"), ("c1", "turn#2"), ("c2", "turn#1"), ("c2", "turn#2")]
    # the judge saw the conversation up to each turn, not just the first instruction
    second = [t for t in SEEN_TASKS if "Make it cheaper (2)" in t]
    assert second and "Assistant: GOOD plan" in second[0] and "weak reply" not in second[0]
    merged = {r["id"]: r for r in read_jsonl(run / "judged.jsonl")}
    assert [t["score"] for t in merged["c1"]["judge"]["turns"]] == [9.0, 9.0]
    assert merged["c1"]["judge"]["score"] == 9.0 and merged["c2"]["judge"]["score"] == 4.0
    assert merged["c2"]["judge"]["pair"]["reason"] == "multi_turn"
    out = export(run, tmp_path / "sft.jsonl", ExportOptions(format="sft", min_score=5))
    kept = read_table(tmp_path / "sft.jsonl")
    assert out.n_train == 1 and len(kept[0]["messages"]) == 4 and kept[0]["messages"][-1]["content"] == "GOOD cheaper plan"
