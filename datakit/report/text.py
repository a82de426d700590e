"""Cheap, tokenizer-free text measures for the card.

* Length: words (whitespace-separated) for text without CJK; each CJK character (Han, kana,
  Hangul) counts as one token and the rest is split on whitespace. No model tokenizer: the
  numbers compare datasets with each other, not with a model's context window.
* Language: ``zh`` when CJK characters outnumber the other words of the instruction, ``en``
  when it is mostly ASCII letters, else ``other``.
* Leading verb and object (English): self-instruct's diversity view without a parser: strip a
  polite prefix ("please", "can you", ...), skip a leading clause ("Given a list, ..."), take
  the first word as the verb and the next word that is not a determiner, number or common
  adjective as its object (none when a preposition comes first). Questions ("what", "how", "is" ...) count as ``(question)``.
* Leading words (Chinese): the first two CJK characters after a polite prefix (请, 帮我 ...).
"""

from __future__ import annotations

import re

_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_CJK = re.compile(f"[{_CJK_RANGES}]")
_ZH_LEAD = re.compile(f"[^{_CJK_RANGES}]{{0,6}}?([{_CJK_RANGES}]{{1,2}})")
_WORDS = re.compile(r"[a-z][a-z'\-]*")

POLITE = [p.split() for p in (
    "please", "kindly", "can you", "could you", "would you", "will you", "can you please",
    "could you please", "i want you to", "i would like you to", "i'd like you to", "help me",
    "help me to", "you are asked to", "your task is to", "the task is to", "you need to",
    "you should", "you must", "let's", "let us", "try to", "now", "also", "then")]
POLITE.sort(key=len, reverse=True)
LEAD_CLAUSE = {"given", "using", "based", "for", "in", "if", "with", "from", "after", "as", "when",
               "according", "assuming", "suppose", "imagine", "consider", "below", "here"}
QUESTION = {"what", "how", "why", "who", "whom", "which", "when", "where", "whose", "is", "are",
            "was", "were", "do", "does", "did", "can", "could", "should", "would", "will", "has",
            "have", "am", "may", "might", "shall"}
SKIP = set("""a an the some any each every all my your our their its his her me us you i we they one
two three four five six seven eight nine ten few several many more most short brief simple new
different following given good best whole entire same other another such very quick detailed
creative funny single random couple own""".split())
STOP = set("about of to for on in into with by at from up out down over as than and or but so".split())
PRONOUN_OBJECTS = {"it", "them", "this", "that", "these", "those"}
ZH_POLITE = ("请你帮我", "请帮我", "麻烦你", "请你", "帮我", "你能", "能否", "可以", "试着", "请")


def n_tokens(text: str) -> int:
    """Words, with each CJK character counted as one."""
    if not text:
        return 0
    if text.isascii():
        return len(text.split())
    cjk = len(_CJK.findall(text))
    return cjk + (len(_CJK.sub(" ", text).split()) if cjk else len(text.split()))


def language(text: str) -> str:
    if not text or text.isascii():
        return "en" if text and any(c.isalpha() for c in text) else "other"
    cjk = len(_CJK.findall(text))
    words = _CJK.sub(" ", text).split()
    if cjk and cjk >= len(words):
        return "zh"
    ascii_words = sum(w.isascii() for w in words)
    return "en" if words and ascii_words >= 0.8 * len(words) else "other"


def _strip_polite(words: list[str]) -> list[str]:
    changed = True
    while changed and words:
        changed = False
        for p in POLITE:
            if words[:len(p)] == p:
                words, changed = words[len(p):], True
                break
    return words


def verb_object(text: str) -> tuple[str | None, str | None]:
    """(leading verb, its object) of an English instruction; (None, None) without words."""
    head = text[:300].lower()
    first = _WORDS.findall(head[:40])
    if first and first[0] in LEAD_CLAUSE and "," in head:
        head = head.split(",", 1)[1]
    words = _strip_polite(_WORDS.findall(head)[:30])
    if not words:
        return None, None
    verb = words[0]
    if verb in QUESTION:
        return "(question)", None
    for w in words[1:6]:
        if w in STOP:
            return verb, None
        if w in PRONOUN_OBJECTS or (w not in SKIP and len(w) > 1):
            return verb, w
    return verb, None


def zh_lead(text: str) -> str | None:
    """The first two CJK characters of an instruction after a polite prefix."""
    t = text.strip()
    for p in ZH_POLITE:
        if t.startswith(p) and len(t) > len(p) + 1:
            t = t[len(p):]
            break
    m = _ZH_LEAD.match(t[:16])
    return m.group(1) if m else None
