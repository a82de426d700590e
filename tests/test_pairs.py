"""Pair building edge cases and pairwise order agreement."""

from __future__ import annotations

import pytest

from datakit.judge.pairs import build_pair, combine_orders, position_bias_rate, rank_candidates

from test_judge_helpers import cand


def pw(x, y, ab, ba):
    return {"x": x, "y": y, "xy": ab, "yx": ba, **combine_orders(ab, ba)}


def test_best_vs_worst():
    cs = [cand("a", "A!", 6.0), cand("b", "B!", 9.0), cand("c", "C!", 3.0)]
    d = build_pair(cs, min_margin=1.0)
    assert (d.chosen, d.rejected, d.kept, d.margin) == ("b", "c", True, 6.0)
    assert d.ranking == ["b", "a", "c"]


def test_one_candidate_and_none():
    d = build_pair([cand("a", "A!", 9.0)])
    assert not d.kept and d.reason == "too_few_candidates" and d.chosen == "a" and d.rejected is None
    assert build_pair([]).reason == "too_few_candidates"


def test_all_tied_never_a_pair_even_with_zero_margin():
    cs = [cand("a", "A!", 7.0), cand("b", "B!", 7.0), cand("c", "C!", 7.0)]
    for m in (0.0, 1.0):
        d = build_pair(cs, min_margin=m)
        assert not d.kept and d.reason == "all_tied" and d.margin == 0


@pytest.mark.parametrize("hi,lo,m,kept", [
    (8.0, 7.0, 1.0, True),              # exactly at the bound: inclusive
    (7.75, 6.75, 1.0, True),
    (8.0, 7.25, 0.75, True),
    (2.01, 1.01, 1.0, True),            # float noise: 2.01 - 1.01 < 1.0 in floats, still counts
    (8.0, 7.01, 1.0, False),
    (8.0, 7.0, 1.5, False),
])
def test_margin_bound(hi, lo, m, kept):
    d = build_pair([cand("a", "A!", hi), cand("b", "B!", lo)], min_margin=m)
    assert d.kept is kept
    if not kept:
        assert d.reason == "margin_below_min"


def test_unparsed_and_empty_candidates_do_not_take_part():
    cs = [cand("a", "A!", None, status="unparsed"), cand("b", "", 9.0), cand("c", "C!", 8.0),
          cand("d", "D!", 2.0)]
    d = build_pair(cs)
    assert (d.chosen, d.rejected) == ("c", "d") and d.ranking == ["c", "d"]
    assert build_pair(cs[:3]).reason == "too_few_candidates"


def test_identical_outputs():
    d = build_pair([cand("a", "same ", 9.0), cand("b", "same", 2.0)])
    assert not d.kept and d.reason == "identical_outputs"


def test_combine_orders():
    assert combine_orders("A", "B") == {"result": "x", "position_bias": False}   # x wins both ways
    assert combine_orders("B", "A") == {"result": "y", "position_bias": False}
    assert combine_orders("A", "A") == {"result": "disagree", "position_bias": True}
    assert combine_orders("B", "B") == {"result": "disagree", "position_bias": True}
    assert combine_orders("tie", "tie") == {"result": "tie", "position_bias": False}
    assert combine_orders("A", "tie") == {"result": "disagree", "position_bias": False}
    assert combine_orders(None, "A")["result"] == "unparsed"


@pytest.mark.parametrize("ab,ba,kept,reason", [
    ("A", "B", True, None),                      # both orders prefer the high scorer
    ("A", "A", False, "pairwise_disagree"),      # position bias
    ("tie", "tie", False, "pairwise_tie"),
    ("B", "A", False, "pairwise_contradicts"),   # pairwise prefers the low scorer
    (None, "B", False, "pairwise_unparsed"),
])
def test_pairwise_must_agree_with_scores(ab, ba, kept, reason):
    cs = [cand("a", "A!", 9.0), cand("b", "B!", 3.0)]
    d = build_pair(cs, [pw("a", "b", ab, ba)])
    assert (d.kept, d.reason) == (kept, reason)


def test_pairwise_wins_break_score_ties():
    cs = [cand("a", "A!", 8.0), cand("b", "B!", 8.0), cand("c", "C!", 2.0)]
    assert [c["id"] for c in rank_candidates(cs, [pw("a", "b", "B", "A")])] == ["b", "a", "c"]
    assert [c["id"] for c in rank_candidates(cs)] == ["a", "b", "c"]  # then by id


def test_pairwise_only_mode():
    cs = [cand(i, f"{i}!", None, status="unparsed") for i in "abc"]
    p = [pw("a", "b", "A", "B"), pw("a", "c", "A", "B"), pw("b", "c", "A", "B")]
    d = build_pair(cs, p)
    assert (d.chosen, d.rejected, d.kept, d.margin) == ("a", "c", True, 2.0)
    p[1] = pw("a", "c", "A", "A")
    d = build_pair(cs, p)
    assert not d.kept and d.reason == "pairwise_disagree"


def test_position_bias_rate():
    p = [pw("a", "b", "A", "A"), pw("a", "c", "A", "B"), pw("b", "c", "B", "B"), pw("b", "d", None, "A"),
         pw("c", "d", "tie", "A")]
    rate, n = position_bias_rate(p)
    assert n == 4 and rate == 0.5
    assert position_bias_rate([]) == (None, 0)


# --------------------------------------------------------------------------- tie-break by design

def tcand(cid, out, score, temp, teacher="t"):
    c = cand(cid, out, score)
    c["params"], c["teacher"] = {"temperature": temp}, teacher
    return c


def test_no_tie_break_keeps_the_old_rule():
    cs = [tcand("a", "A!", 7.0, 0.3), tcand("b", "B!", 7.0, 1.2)]
    d = build_pair(cs)
    assert not d.kept and d.reason == "all_tied" and d.basis is None


def test_temperature_tie_break_decides_only_what_the_judge_could_not():
    cs = [tcand("hot", "H!", 7.0, 1.2), tcand("cold", "C!", 7.0, 0.3), tcand("mid", "M!", 7.0, 0.7)]
    d = build_pair(cs, tie_break="temperature")
    assert (d.kept, d.chosen, d.rejected, d.basis, d.judge_reason, d.margin) == \
        (True, "cold", "hot", "design:temperature", "all_tied", None)
    assert d.to_dict()["basis"] == "design:temperature" and d.chosen_score == 7.0  # real scores, none invented
    # a position-biased pairwise judge (disagreeing orders) also leaves it to the design
    biased = [pw("cold", "hot", "A", "A")]
    assert build_pair(cs, biased, tie_break="temperature").basis == "design:temperature"
    # a judge that separates them decides, whatever the design says
    judged = build_pair([tcand("hot", "H!", 9.0, 1.2), tcand("cold", "C!", 4.0, 0.3)], tie_break="temperature")
    assert (judged.kept, judged.chosen, judged.basis) == (True, "hot", "judge")


def test_tie_break_never_goes_against_the_judge():
    # pointwise prefers the hot sample, by less than the margin: no pair, not a design pair
    cs = [tcand("hot", "H!", 7.5, 1.2), tcand("cold", "C!", 7.0, 0.3)]
    d = build_pair(cs, min_margin=1.0, tie_break="temperature")
    assert not d.kept and d.reason == "judge_contradicts_design"
    # pairwise agrees (both orders) that the hot sample is better while scores tie
    cs = [tcand("hot", "H!", 7.0, 1.2), tcand("cold", "C!", 7.0, 0.3)]
    d = build_pair(cs, [pw("cold", "hot", "B", "A")], tie_break="temperature")
    assert not d.kept and d.reason == "judge_contradicts_design"


def test_teacher_tie_break_prefers_the_named_teacher_over_the_student():
    cs = [tcand("s#0", "student says", 6.0, 0.7, "student"), tcand("g#0", "gpt says", 6.0, 0.7, "gpt")]
    d = build_pair(cs, tie_break="teacher:gpt")
    assert (d.kept, d.chosen, d.rejected, d.basis) == (True, "g#0", "s#0", "design:teacher")
    same = [tcand("a", "x", 6.0, 0.3, "gpt"), tcand("b", "x ", 6.0, 1.0, "student")]
    assert build_pair(same, tie_break="teacher:gpt").reason == "identical_outputs"
    nobody = [tcand("a", "A", 6.0, 0.3, "x"), tcand("b", "B", 6.0, 1.0, "y")]
    assert build_pair(nobody, tie_break="teacher:gpt").reason == "all_tied"


def test_tie_break_values_are_checked():
    from datakit.judge.pairs import check_tie_break

    assert check_tie_break("none") is None and check_tie_break("teacher:q") == "teacher:q"
    for bad in ("teacher:", "random", "temp"):
        with pytest.raises(ValueError):
            check_tie_break(bad)
