"""The judging rubric: its aspects, the score range, and the names judges use for each aspect."""

from __future__ import annotations

import re
import unicodedata

# Response aspects make a candidate's score; task aspects judge the instruction itself (is it
# clear, can a text-only model do it) and are kept per record.
RESPONSE_ASPECTS = ("instruction_following", "helpfulness", "correctness", "harmlessness")
TASK_ASPECTS = ("clarity", "feasibility")
ASPECTS = RESPONSE_ASPECTS + TASK_ASPECTS
SCORE_MIN, SCORE_MAX = 1, 10

# Nouns name an aspect anywhere in a sentence ("its accuracy is 9/10").
_NOUNS = {
    "instruction_following": ["instruction following", "instruction adherence", "following instructions",
                              "指令遵循", "遵循指令", "指令跟随", "遵循度", "指令遵从"],
    "helpfulness": ["helpfulness", "usefulness", "有用性", "帮助性", "有帮助性", "实用性"],
    "correctness": ["correctness", "accuracy", "factuality", "factual accuracy", "正确性", "准确性", "准确度"],
    "harmlessness": ["harmlessness", "safety", "无害性", "安全性"],
    "clarity": ["task clarity", "clarity", "清晰度", "清晰性", "明确性", "任务清晰度"],
    "feasibility": ["task feasibility", "feasibility", "可行性", "任务可行性"],
}
# Adjectives and loose words name an aspect only as a JSON key or as the label a line starts
# with ("Correct: 9/10"); in a sentence they mean something else ("the answer is correct").
_LABELS = {
    "instruction_following": ["instructions", "following", "adherence", "compliance"],
    "helpfulness": ["helpful"],
    "correctness": ["correct"],
    "harmlessness": ["harmless", "无害"],
    "clarity": ["clear"],
    "feasibility": ["feasible"],
}


def _norm_key(key: str) -> str:
    key = unicodedata.normalize("NFKC", str(key)).strip().lower()
    return re.sub(r"[\s_\-:：/]+", "", key)


_ALIASES: dict[str, str] = {}
for _name in ASPECTS:
    for _word in [_name, *_NOUNS[_name], *_LABELS[_name]]:
        _ALIASES[_norm_key(_word)] = _name


def aspect_name(key: str) -> str | None:
    """The rubric aspect a judge's key means, or None."""
    return _ALIASES.get(_norm_key(key))


def _alternation(words: list[str]) -> str:
    parts = []
    for w in sorted(set(words), key=len, reverse=True):
        if w.isascii():
            parts.append(r"\b" + r"[\s_\-]*".join(map(re.escape, w.replace("_", " ").split())) + r"\b")
        else:
            parts.append(re.escape(w))
    return "|".join(parts)


_ALL_NOUNS = [w for ws in _NOUNS.values() for w in ws] + [a.replace("_", " ") for a in ASPECTS]
NOUN_RE = re.compile(_alternation(_ALL_NOUNS), re.IGNORECASE)
LABEL_WORDS = _alternation(_ALL_NOUNS + [w for ws in _LABELS.values() for w in ws])
