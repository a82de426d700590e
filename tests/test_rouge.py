"""The fast ROUGE-L filter against rouge-score itself (the real package, no mocks)."""

import random

from hypothesis import given, settings, strategies as st
from rouge_score import rouge_scorer
from rouge_score import tokenize as rs_tokenize

from datakit.curate._synth import Synth
from datakit.curate.rouge import RougeLNovelty, lcs_length, novelty_filter, rouge_l_f, tokenize

WORDS = ["the", "a", "of", "write", "poem", "list", "x", "y", "z", "1", "2"]
text_st = st.lists(st.sampled_from(WORDS + ["!!", "...", "ÄÖ", "中文", "写", "  ", "\n", "İ", "K", "é"]),
                   max_size=14).map(" ".join)


def _ref_greedy(texts, thr):
    kept, out = [], []
    for t in texts:
        toks = rs_tokenize.tokenize(t, None)
        best = max((rouge_scorer._score_lcs(toks, k).fmeasure for k in kept), default=0.0)
        out.append(best <= thr)
        if best <= thr:
            kept.append(toks)
    return out


@settings(max_examples=400, deadline=None)
@given(text_st, text_st)
def test_pair_scores_bit_identical(a, b):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    ref = scorer.score(a, b)["rougeL"].fmeasure
    assert tokenize(a) == rs_tokenize.tokenize(a, None)
    assert rouge_l_f(tokenize(a), tokenize(b)) == ref  # exact float equality, not approx


@settings(max_examples=40, deadline=None)
@given(st.lists(text_st, max_size=40), st.sampled_from([0.0, 0.3, 0.5, 2 / 3, 0.7, 0.75, 1.0]))
def test_greedy_decisions_match_rouge_score(texts, thr):
    f = RougeLNovelty(thr)
    got = [f.offer(t, str(i))[0] for i, t in enumerate(texts)]
    assert got == _ref_greedy(texts, thr)


def test_adversarial_cases():
    assert rouge_l_f([], ["a"]) == 0.0
    assert tokenize("!!! ... ???") == []
    assert tokenize("写一首诗") == []  # rouge-score drops every non-ASCII letter
    assert tokenize("写一首诗 about AI", "cjk") == ["写", "一", "首", "诗", "about", "ai"]
    assert lcs_length(["a"] * 70, ["a"] * 65) == 65  # > 63 tokens: the Python-int path
    f = RougeLNovelty(0.7)
    assert f.offer("", "e")[0] and f.offer("", "e2")[0]  # empty texts never match anything
    assert f.offer("the the the the", "t")[0]
    kept, score, nearest = f.offer("the the the the", "t2")
    assert (kept, score, nearest) == (False, 1.0, "t")


def test_cjk_tokenizer_catches_chinese_near_duplicates():
    a, b = "请写一首关于秋天的短诗", "请写一首关于秋天的诗"
    assert RougeLNovelty(0.7, "rouge").offer(a, "1")[0]
    f = RougeLNovelty(0.7, "cjk")
    assert f.offer(a, "1")[0]
    kept, score, nearest = f.offer(b, "2")
    assert not kept and nearest == "1" and score > 0.9


def test_realistic_corpus_parity_and_scores():
    texts, _ = Synth(7).corpus(700, dup_rate=0.2)
    rng = random.Random(0)
    texts += [" ".join(rng.sample(t.split(), len(t.split()))) for t in texts[:60]]  # reorderings
    ref = _ref_greedy(texts, 0.7)
    res = novelty_filter(texts, [str(i) for i in range(len(texts))], 0.7)
    assert [r[0] for r in res] == ref
    assert 0 < sum(ref) < len(ref)
    # for dropped texts the score is rouge-score's maximum and the id reaches it
    toks = [rs_tokenize.tokenize(t, None) for t in texts]
    kept_idx = [i for i, k in enumerate(ref) if k]
    for i in [i for i, k in enumerate(ref) if not k][:50]:
        earlier = [k for k in kept_idx if k < i]
        best = max(rouge_scorer._score_lcs(toks[i], toks[k]).fmeasure for k in earlier)
        assert res[i][1] == best
        assert rouge_scorer._score_lcs(toks[i], toks[int(res[i][2])]).fmeasure == best
