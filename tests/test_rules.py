from datakit.curate.rules import RuleFilter, RulesConfig, count_words, language_share, repeat_ratio


def _failed(text, **kw):
    return [(v.filter, v.reason) for v in RuleFilter(RulesConfig(**kw)).check(text) if not v.passed]


def test_one_verdict_per_rule_in_order():
    names = [v.filter for v in RuleFilter().check("Write a short poem about autumn.")]
    assert names == ["length", "blacklist", "punct_start", "non_printable", "language", "repetition"]
    assert _failed("Write a short poem about autumn.") == []


def test_reason_codes():
    assert _failed("Hi there") == [("length", "too_short")]
    assert ("length", "too_long") in _failed("word " * 200)
    assert _failed("Describe the picture below in detail.") == [("blacklist", "blacklisted")]
    assert _failed("- list three fruits please") == [("punct_start", "starts_with_punctuation")]
    assert _failed("Write a poem\x00 about cats") == [("non_printable", "non_printable")]
    assert _failed("Write a poem about cats", language="zh") == [("language", "wrong_language")]
    assert _failed("spam spam spam spam spam spam spam spam") == [("repetition", "repetitive")]


def test_cjk_text_passes_with_ideographic_space():
    assert _failed("请写一首关于　秋天的诗。", language="zh") == []
    assert count_words("请写一首诗 about AI") == 7
    assert language_share("请写一首诗 about", "zh") == 5 / 10
    assert repeat_ratio("a b c a b c a b c", 3) == 1 - 3 / 7
