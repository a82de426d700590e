"""`datakit generate` against a teacher that lays its task lists out the way strong hosted models
do (markdown headings, bold category labels, example inputs under items): the scripted server
`datakit/teachers/fake_server.py` on 127.0.0.1, the real CLI in a subprocess."""

import json
import re
from collections import Counter

from datakit.teachers.fake_server import _AUDIENCES, _THINGS, _TOPICS, _VERBS, FakeOpenAIServer, hosted_responder
from helpers import jsonl, run_cli


def _alt(words):
    return "|".join(re.escape(w) for w in words)


# Exactly the tasks the server writes (fake_server.canned_task), with nothing of the layout.
CLEAN_TASK = re.compile(rf"(?:{_alt(_VERBS)}) (?:{_alt(_THINGS)}) about (?:{_alt(_TOPICS)}) "
                        rf"for (?:{_alt(_AUDIENCES)})\.")


def run_generate(tmp_path, styles, num):
    with FakeOpenAIServer(responder=hosted_responder(styles)) as srv:
        proc = run_cli("generate", "--num", str(num), "--out", str(tmp_path / "run"),
                       "--base-url", srv.base_url, "--model", "fake")
    assert proc.returncode == 0, proc.stderr
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    return jsonl(tmp_path / "run" / "records.jsonl"), jsonl(tmp_path / "run" / "rejected.jsonl"), state


def test_hosted_layouts_give_clean_instructions(tmp_path):
    recs, rej, state = run_generate(tmp_path, ("heading", "heading_title", "bold_label", "bold_task",
                                               "label_input"), 40)
    assert len(recs) == 40 and state["accepted"] == 40
    for r in recs:
        assert CLEAN_TASK.fullmatch(r["instruction"]), r["instruction"]
    reasons = Counter(r["reason"] for r in rej)
    assert reasons["unparsed_list"] == 0
    # the server's deliberately bad tasks still reach the filters, label-free
    assert reasons["blacklisted"] >= 1 and reasons["too_short"] >= 1
    bad = re.compile(rf"Do it\.|Draw a picture of (?:{_alt(_TOPICS)})\.")
    for r in rej:
        if r["instruction"]:
            assert CLEAN_TASK.fullmatch(r["instruction"]) or bad.fullmatch(r["instruction"]), r["instruction"]


def test_heading_only_teacher_does_not_go_idle(tmp_path):
    # Before the fix every answer of this teacher parsed to nothing: 20 idle rounds, then a stop.
    recs, rej, state = run_generate(tmp_path, ("heading",), 12)
    assert len(recs) == 12 and state["round"] < 5
    assert not [r for r in rej if r["reason"] == "unparsed_list"]
    assert all(CLEAN_TASK.fullmatch(r["instruction"]) for r in recs)
