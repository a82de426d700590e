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
