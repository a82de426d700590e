"""Rule filters for instructions: cheap checks with a reason code each.

``RuleFilter(config).check(text) -> list[Verdict]`` gives one verdict per rule, always in this
order (a rule that is switched off passes):

=============  ==================================  =====================================
filter         fails when                          reason code
=============  ==================================  =====================================
length         fewer than min_words / more than    ``too_short`` / ``too_long``
               max_words (a CJK character = 1)
blacklist      a blacklisted word or phrase        ``blacklisted`` (detail: the match)
punct_start    starts with punctuation or symbol   ``starts_with_punctuation``
non_printable  control, private-use, unassigned,   ``non_printable`` (detail: code point)
               surrogate or U+FFFD characters
language       share of the wanted script among    ``wrong_language`` (score: the share)
               letters below min_language_share
repetition     share of repeated word n-grams      ``repetitive`` (score: the share)
               above max_repeat_ratio
=============  ==================================  =====================================

Used by the generate loop on every new instruction and by ``datakit filter``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from datakit.records import Verdict

# Things a text-only model cannot do (self-instruct's idea; our own list, en and zh).
DEFAULT_BLACKLIST = (
    "image", "images", "picture", "pictures", "photo", "graph", "graphs", "draw", "plot",
    "video", "audio", "music", "sound", "flowchart", "diagram", "map", "file", "files",
    "go to", "record a", "图片", "图像", "照片", "画一", "绘制", "视频", "音频", "音乐", "流程图",
)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def count_words(text: str) -> int:
    """Words for length bounds: each CJK character counts as one word, other words as one."""
    cjk = len(_CJK.findall(text))
    rest = _CJK.sub(" ", text)
    return cjk + len(_WORD.findall(rest))


@dataclass(frozen=True)
class RulesConfig:
    min_words: int = 3
    max_words: int = 150
    blacklist: tuple[str, ...] = DEFAULT_BLACKLIST
    language: str | None = None  # "zh" or "en": require that script's share of letters
    min_language_share: float = 0.5
    repeat_ngram: int = 3
    max_repeat_ratio: float = 0.3
    check_punct_start: bool = True


_LATIN = re.compile(r"[A-Za-z]")
_LETTER = re.compile(r"[^\W\d_]")
_TOKENS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+")
_BAD_CATEGORIES = {"Cc", "Co", "Cs", "Cn"}


def language_share(text: str, language: str) -> float:
    """Share of letters in ``text`` that belong to ``language``'s script (zh: CJK ideographs,
    en: ASCII Latin); 0.0 for a text without letters."""
    letters = len(_LETTER.findall(text))
    if not letters:
        return 0.0
    if language == "zh":
        return len(_CJK.findall(text)) / letters
    if language == "en":
        return len(_LATIN.findall(text)) / letters
    raise ValueError(f"unknown language {language!r} (use 'zh' or 'en')")


def repeat_ratio(text: str, n: int = 3) -> float:
    """Share of word n-grams (a CJK character is a word) that repeat an earlier n-gram."""
    toks = _TOKENS.findall(text.lower())
    grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _non_printable(text: str) -> str | None:
    for ch in text:
        if ch in "\n\t\r":
            continue
        if unicodedata.category(ch) in _BAD_CATEGORIES or ch == "\ufffd":
            return f"U+{ord(ch):04X}"
    return None


class RuleFilter:
    def __init__(self, config: RulesConfig | None = None):
        self.config = config or RulesConfig()
        words = [re.escape(w) for w in self.config.blacklist]
        ascii_words = [w for w in words if w.isascii()]
        other = [w for w in words if not w.isascii()]
        parts = []
        if ascii_words:
            parts.append(r"\b(?:" + "|".join(ascii_words) + r")\b")
        if other:
            parts.append("(?:" + "|".join(other) + ")")
        self._blacklist = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def check(self, text: str) -> list[Verdict]:
        c = self.config
        out = []
        n = count_words(text)
        if n < c.min_words:
            out.append(Verdict("length", False, n, "too_short"))
        elif n > c.max_words:
            out.append(Verdict("length", False, n, "too_long"))
        else:
            out.append(Verdict("length", True, n))
        m = self._blacklist.search(text) if self._blacklist else None
        out.append(Verdict("blacklist", m is None, None, None if m is None else "blacklisted",
                           {"match": m.group(0)} if m else None))
        stripped = text.strip()
        first = stripped[:1]
        bad_start = c.check_punct_start and bool(first) and (
            unicodedata.category(first).startswith("P") or unicodedata.category(first).startswith("S"))
        out.append(Verdict("punct_start", not bad_start, None, "starts_with_punctuation" if bad_start else None))
        bad = _non_printable(text)
        out.append(Verdict("non_printable", bad is None, None, "non_printable" if bad else None,
                           {"char": bad} if bad else None))
        if c.language:
            share = language_share(text, c.language)
            ok = share >= c.min_language_share
            out.append(Verdict("language", ok, round(share, 4), None if ok else "wrong_language",
                               {"language": c.language}))
        else:
            out.append(Verdict("language", True, None))
        rr = repeat_ratio(text, c.repeat_ngram)
        ok = rr <= c.max_repeat_ratio
        out.append(Verdict("repetition", ok, round(rr, 4), None if ok else "repetitive"))
        return out


# --------------------------------------------------------------------------- conversations

def user_turns(row: dict) -> list[str]:
    """The texts the rule filters check in a record: every user turn of a conversation
    (``messages``), else the instruction."""
    msgs = row.get("messages")
    if isinstance(msgs, list) and msgs:
        return [m.get("content") or "" for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
    return [row.get("instruction") or ""]


def conversation_text(row: dict) -> str | None:
    """The whole conversation as one text (every turn but the system message, one per line) for
    ROUGE-L and near-duplicate checks; None for a single-turn record."""
    msgs = row.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return None
    return "\n".join(m.get("content") or "" for m in msgs if isinstance(m, dict) and m.get("role") != "system")


def check_turns(rules: RuleFilter, row: dict) -> list[Verdict]:
    """The verdicts of the first user turn that fails a rule (``detail.turn``, 1-based), or of
    the last turn when every one passes."""
    verdicts: list[Verdict] = []
    for k, text in enumerate(user_turns(row), 1):
        verdicts = rules.check(text)
        if not all(v.passed for v in verdicts):
            for v in verdicts:
                if not v.passed:
                    v.detail = {**(v.detail or {}), "turn": k}
            return verdicts
    return verdicts
