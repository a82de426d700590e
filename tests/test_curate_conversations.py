"""`datakit filter` and `dedup` on multi-turn records: rules on every user turn, ROUGE-L and
near-duplicates on the whole conversation (not only the first instruction)."""

import json

import pytest

from datakit.cli import main


def conv(i, first, second, answer="Sure, here it is."):
    return {"id": f"c{i}", "instruction": first, "input": "", "output": answer,
            "messages": [{"role": "user", "content": first}, {"role": "assistant", "content": answer},
                         {"role": "user", "content": second}, {"role": "assistant", "content": answer}]}


def run(*args):
    with pytest.raises(SystemExit) as e:
        main(list(map(str, args)))
    return e.value.code


def test_rules_check_every_user_turn_and_novelty_sees_the_whole_conversation(tmp_path):
    rows = [conv(1, "Plan a three day hiking trip in the Alps for beginners.", "Now make the plan cheaper, please."),
            # same first turn, a very different follow-up: a different conversation, kept
            conv(2, "Plan a three day hiking trip in the Alps for beginners.",
                 "Translate the whole itinerary into German and add train times between every village.",
                 "Gern: Tag eins beginnt in Zermatt mit dem Zug um acht Uhr, danach wandern wir zum "
                 "Riffelsee, am zweiten Tag fahren wir nach Grindelwald und am dritten nach Wengen."),
            # a later user turn that breaks the rules (too short)
            conv(3, "Explain how tides work to a ten year old child.", "Ok?")]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run("filter", src, "--out", tmp_path / "out.jsonl", "--rouge-l", "0.7") == 0
    kept = [json.loads(l)["id"] for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    removed = {json.loads(l)["id"]: json.loads(l)["reason"]
               for l in (tmp_path / "out.jsonl.removed.jsonl").read_text().splitlines()}
    assert kept == ["c1", "c2"] and removed == {"c3": "too_short"}

    twin = conv(4, rows[0]["messages"][0]["content"], rows[0]["messages"][2]["content"])
    src.write_text("".join(json.dumps(r) + "\n" for r in rows[:2] + [twin]))
    assert run("dedup", src, "--out", tmp_path / "d.jsonl") == 0
    kept = [json.loads(l)["id"] for l in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert kept == ["c1", "c2"]  # the exact twin of c1 goes; c2 shares only its first turn
