"""The copied_example filter: outputs that reproduce the instance prompt's own example are
rejected at generate time with their reason, and short labels are never called copies."""

import json
from collections import Counter

from datakit.curate.copies import CopyDetector
from datakit.seeds import load_seeds
from datakit.teachers.fake_server import FakeOpenAIServer, default_responder
from helpers import REPO, jsonl, run_cli

EMAIL = ("Subject: Update on your order #48213\n\nDear Priya, we are sorry that your order will arrive "
         "on May 17 instead of May 14 because of a supplier shortage. As a thank-you for your patience "
         "we have added a 10% voucher to your account.")


def test_verbatim_near_and_contained_copies_are_found():
    d = CopyDetector({"example.output": EMAIL, "example.input": "Customer: Priya Nair. Order #48213."})
    assert d.check(EMAIL).source == "example.output" and d.check(EMAIL).score == 1.0
    near = EMAIL.replace("Priya", "Sam").replace("10%", "15%")
    assert d.check(near).score >= 0.8
    assert d.check("Here is my reply:\n" + EMAIL + "\nBest regards").score == 1.0  # contained whole
    assert d.check("A haiku about autumn leaves falling on a quiet pond at dusk.") is None


def test_short_example_texts_never_count_as_copies():
    d = CopyDetector({"example.output": "Positive", "example.input": ""})
    assert d.check("Positive") is None and d.check("") is None


def test_chinese_copies_are_compared_by_characters():
    ex = "尊敬的王先生：很抱歉您的订单将延迟三天送达，我们已为您的账户添加一张优惠券。"
    d = CopyDetector({"example.output": ex})
    assert d.check(ex.replace("王", "李")).score >= 0.9
    assert d.check("春天来了，公园里的花都开了，孩子们在草地上放风筝。") is None


def copying_responder(body):
    """Every third instance answer copies the example the prompt showed; the rest are fresh."""
    text = default_responder(body)
    if body.get("response_format"):
        msg = body["messages"][-1]["content"]
        example = json.loads(msg.split("Example:\n", 1)[1].split("\n", 2)[1])
        if sum(map(ord, msg[-60:])) % 3 == 0:
            return json.dumps({"input": example["input"], "output": example["output"]}, ensure_ascii=False)
    return text


def test_generate_rejects_copied_examples_with_their_reason(tmp_path):
    with FakeOpenAIServer(responder=copying_responder) as srv:
        proc = run_cli("generate", "--num", "24", "--out", str(tmp_path / "run"), "--base-url", srv.base_url,
                       "--model", "fake")
    assert proc.returncode == 0, proc.stderr
    recs, rej = jsonl(tmp_path / "run" / "records.jsonl"), jsonl(tmp_path / "run" / "rejected.jsonl")
    copied = [r for r in rej if r["reason"] == "copied_example"]
    assert len(recs) == 24 and len(copied) >= 3
    examples = {s.instances[0][1] for s in load_seeds(REPO / "seeds")}
    assert not any(r["output"] in examples for r in recs)
    for r in copied:
        v = r["filters"][-1]
        assert v["filter"] == "copied_example" and not v["passed"] and v["score"] >= 0.8
        assert v["detail"]["field"] in ("input", "output") and v["detail"]["example_id"].startswith("seed_")
    assert all(r["filters"][-1] == {"filter": "copied_example", "passed": True, "score": None, "reason": None}
               for r in recs)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["rejected"]["copied_example"] == len(copied)
    assert Counter(r["reason"] for r in rej)["copied_example"] == len(copied)
