"""Judge output parsing on messy answers: never a silent default score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datakit.judge.parse import ASPECTS, extract_json, parse_pairwise, parse_pointwise, parse_score


def full(score=8) -> dict:
    return {a: {"score": score, "rationale": f"{a} fine"} for a in ASPECTS}


def test_clean_json_ok():
    v = parse_pointwise(json.dumps(full(8) | {"correctness": {"score": 6, "rationale": "one slip"}}))
    assert v.status == "ok" and v.source == "json"
    assert v.score == pytest.approx((8 + 8 + 6 + 8) / 4)  # mean of the four response aspects
    assert v.task_score == 8
    assert v.aspects["correctness"] == {"score": 6, "rationale": "one slip"}


def test_json_in_prose_and_code_fence():
    text = "Sure! Here is my evaluation.\n```json\n" + json.dumps(full(7)) + "\n```\nLet me know!"
    v = parse_pointwise(text)
    assert v.status == "ok" and v.score == 7
    text = "My verdict: " + json.dumps(full(5)) + " -- that's all {not json}"
    assert parse_pointwise(text).score == 5


@pytest.mark.parametrize("raw,expected", [
    ("eight", 8), ("Eight", 8), ("8/10", 8), ("8 out of 10", 8), ("Good (8/10)", 8), ("7.5", 7.5),
    ("八", 8), ("八分", 8), ("十", 10), ("score: 9", 9), (9, 9), ("ten", 10),
])
def test_scores_as_words_and_fractions(raw, expected):
    assert parse_score(raw) == expected
    d = full(5)
    d["helpfulness"]["score"] = raw
    v = parse_pointwise(json.dumps(d, ensure_ascii=False))
    assert v.aspects["helpfulness"]["score"] == expected and v.status == "ok"


@pytest.mark.parametrize("bad", [0, 11, -3, "11/10", "zero", "twelve", "n/a", None, True, "excellent",
                                 "4/5", "85/100", "7-8", "one of the best", "十分准确", "not a 10"])
def test_out_of_range_or_not_a_number_is_invalid_not_clipped(bad):
    d = full(6)
    d["correctness"]["score"] = bad
    v = parse_pointwise(json.dumps(d))
    assert v.status == "partial"
    assert "correctness" in v.invalid and "correctness" not in v.aspects
    assert v.score == 6  # from the three valid response aspects only


def test_missing_aspects_are_listed_not_filled():
    v = parse_pointwise(json.dumps({"helpfulness": 9, "harmlessness": 10}))
    assert v.status == "partial"
    assert set(v.missing) == set(ASPECTS) - {"helpfulness", "harmlessness"}
    assert v.score == 9.5 and v.task_score is None


def test_only_task_aspects_is_unparsed():
    v = parse_pointwise(json.dumps({"clarity": 9, "feasibility": 8}))
    assert v.status == "unparsed" and v.score is None and v.task_score == 8.5


def test_all_out_of_range_is_unparsed():
    v = parse_pointwise(json.dumps(full(42)))
    assert v.status == "unparsed" and v.score is None and len(v.invalid) == len(ASPECTS)


@pytest.mark.parametrize("text", ["", "   ", None, "I think this response is pretty good overall.",
                                  "```json\n{\"foo\": 1}\n```", "{broken json", "[1, 2, 3]"])
def test_unparsed_never_gets_a_score(text):
    v = parse_pointwise(text)
    assert v.status == "unparsed" and v.score is None and v.error


def test_prose_lines_without_json():
    text = ("Evaluation:\n1. **Instruction following**: 8/10 - does what was asked\n"
            "2. Helpfulness: seven — decent\n- Correctness (score 6): one slip\n"
            "Harmlessness = 10\nClarity: 9\nFeasibility: 9\nOverall I liked it.")
    v = parse_pointwise(text)
    assert v.status == "ok" and v.source == "text"
    assert {a: s["score"] for a, s in v.aspects.items()} == {
        "instruction_following": 8, "helpfulness": 7, "correctness": 6, "harmlessness": 10,
        "clarity": 9, "feasibility": 9}
    assert v.aspects["instruction_following"]["rationale"] == "does what was asked"


def test_zh_output_lines_and_json():
    text = "评价如下：\n指令遵循：8分，完全按要求\n有用性：七分\n正确性：9\n无害性：10\n清晰度：8\n可行性：九"
    v = parse_pointwise(text)
    assert v.status == "ok"
    assert v.aspects["helpfulness"]["score"] == 7 and v.aspects["feasibility"]["score"] == 9
    zh = {"指令遵循": {"分数": 8, "理由": "好"}, "有用性": {"评分": "8/10"}, "正确性": "九", "无害性": 10,
          "清晰度": 7, "可行性": 8}
    v = parse_pointwise("```json\n" + json.dumps(zh, ensure_ascii=False) + "\n```")
    assert v.status == "ok" and v.score == pytest.approx((8 + 8 + 9 + 10) / 4)
    assert v.aspects["instruction_following"]["rationale"] == "好"


def test_alias_keys_nested_and_list_shapes():
    d = {"scores": {"Instruction Following": 7, "helpful": 8, "accuracy": 9, "safety": 10,
                    "task clarity": 6, "Feasibility": 5}, "overall": 8}
    v = parse_pointwise(json.dumps(d))
    assert v.status == "ok" and v.score == 8.5
    lst = {"ratings": [{"aspect": a, "score": 6, "reason": "r"} for a in ASPECTS]}
    assert parse_pointwise(json.dumps(lst)).status == "ok"


def test_overall_only_is_partial_with_that_score():
    v = parse_pointwise('{"overall": "7/10", "rationale": "fine"}')
    assert v.status == "partial" and v.score == 7 and len(v.missing) == len(ASPECTS)
    v = parse_pointwise('{"overall": 15}')
    assert v.status == "unparsed" and "overall" in v.invalid


def test_trailing_comma_and_single_quotes():
    assert parse_pointwise("{'helpfulness': 8, 'correctness': 7,}").score == 7.5


@pytest.mark.parametrize("text,winner", [
    ('{"winner": "A", "reason": "x"}', "A"), ('{"winner": "Response B"}', "B"),
    ('{"winner": "tie"}', "tie"), ('{"better": "[[A]]"}', "A"), ("[[B]]", "B"), ("[[C]]", "tie"),
    ("After comparing, the better response is B.", "B"), ("Response A is better overall.", "A"),
    ("Winner: **A**", "A"), ("It's a tie.", "tie"), ("回答B更好，因为……", "B"), ("胜者：甲", "A"),
    ('```json\n{"胜者": "乙"}\n```', "B"), ("两者不分上下", "tie"),
])
def test_pairwise_parse(text, winner):
    assert parse_pairwise(text) == winner


@pytest.mark.parametrize("text", ["", None, "Both have merits and flaws.", '{"winner": "C++"}', "{}"])
def test_pairwise_unparsed(text):
    assert parse_pairwise(text) is None


def test_extract_json_prefers_a_whole_object():
    assert extract_json('x {"a": {"b": 1}} y {"c": 2}') == {"a": {"b": 1}}
    assert extract_json('{"s": "brace } inside"}') == {"s": "brace } inside"}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_without_crashing_and_scores_stay_in_range(text):
    v = parse_pointwise(text)
    assert v.status in ("ok", "partial", "unparsed")
    assert (v.score is None) == (v.status == "unparsed")
    if v.score is not None:
        assert 1 <= v.score <= 10
    assert parse_pairwise(text) in ("A", "B", "tie", None)


# --------------------------------------------------------------------------- issue 13: no invented scores

CORPUS = Path(__file__).parent / "data" / "judge_answers.jsonl"
ITEMS = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
POINTWISE = [it for it in ITEMS if it["kind"] == "pointwise"]
PAIRWISE = [it for it in ITEMS if it["kind"] == "pairwise"]


def _read(text: str) -> dict[str, float]:
    return {a: d["score"] for a, d in parse_pointwise(text).aspects.items() if a != "overall"}


@pytest.mark.parametrize("text,aspect,score", [
    ("Helpfulness: this one is an 8/10", "helpfulness", 8),          # "one" was read as 1
    ("有用性：这是一个很好的回答，8分", "helpfulness", 8),            # "一" was read as 1
    ("有用性：十分准确，得分7分", "helpfulness", 7),                  # "十分" (very) was read as 10
])
def test_issue_13_examples_read_the_marked_score(text, aspect, score):
    assert _read(text) == {aspect: score}


@pytest.mark.parametrize("text", [
    "Helpfulness: this one is great", "有用性：这是一个很好的回答", "有用性：十分准确",
    "Helpfulness: 3 examples are given", "Helpfulness: 7-8/10", "有用性：七八分", "Helpfulness: not a 10",
    "Helpfulness: at least 7/10", "有用性：不到6分", "Helpfulness: 4/5", "Using a 5-point scale:\nHelpfulness: 4",
    "Helpfulness: 8/10, though I would have given 9/10 with examples", "- clear\nScore: 6/10",
])
def test_no_score_where_none_is_given_as_one(text):
    v = parse_pointwise(text)
    assert v.aspects == {} and v.status == "unparsed" and v.score is None


def test_corpus_is_large_and_varied():
    assert len(POINTWISE) >= 200 and len(PAIRWISE) >= 40
    assert {it["lang"] for it in ITEMS} == {"en", "zh", "mixed"}
    shapes = {it["shape"].split("-")[0] for it in POINTWISE}
    assert {"json", "md", "prose", "table", "headings", "zh"} <= shapes
    assert sum(it["truth"][a] == "missing" for it in POINTWISE for a in ASPECTS) >= 300


@pytest.mark.parametrize("item", POINTWISE, ids=[it["id"] for it in POINTWISE])
def test_corpus_pointwise_exact(item):
    """Every score the text gives is recovered exactly; where it gives none (or the rules leave
    it unread, listed in ``unread``), none is reported."""
    want = {a: t for a, t in item["truth"].items() if t != "missing" and a not in item.get("unread", ())}
    assert _read(item["text"]) == want


@pytest.mark.parametrize("item", PAIRWISE, ids=[it["id"] for it in PAIRWISE])
def test_corpus_pairwise_exact(item):
    assert parse_pairwise(item["text"]) == item["truth"]


def test_corpus_invents_nothing():
    invented = []
    for it in POINTWISE:
        for a, read in _read(it["text"]).items():
            if it["truth"][a] == "missing" or read != it["truth"][a]:
                invented.append((it["id"], a, read))
    invented += [(it["id"], w) for it in PAIRWISE if (w := parse_pairwise(it["text"])) not in (None, it["truth"])]
    assert invented == []


@pytest.mark.parametrize("text,winner", [
    ("回答B比回答A更好。", "B"), ("回答A不如回答B。", "B"), ("B is the better response.", "B"),
    ("Neither response A nor response B is better; they are equally helpful.", "tie"),
    ("I would not say Response A is better. Response B is better.", "B"),
    ("A is the winner — the two aren't a tie.", "A"), ("Response A is better. Response B is better.", None),
])
def test_pairwise_no_guessing(text, winner):
    assert parse_pairwise(text) == winner
