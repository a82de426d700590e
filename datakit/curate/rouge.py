"""ROUGE-L novelty filter (self-instruct's rule: drop a text whose ROUGE-L F against any kept
text is above the threshold).

PLACEHOLDER: simple, correct all-pairs version; the fast exact one replaces the internals and
keeps this API.
"""

from __future__ import annotations

import re

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_CJK_OR_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[a-z0-9]+")


def tokenize(text: str, tokenizer: str = "rouge") -> list[str]:
    text = text.lower()
    if tokenizer == "rouge":
        return [t for t in _NON_ALNUM.sub(" ", text).split() if t]
    if tokenizer == "cjk":
        return _CJK_OR_WORD.findall(text)
    raise ValueError(f"unknown tokenizer {tokenizer!r} (use 'rouge' or 'cjk')")


def lcs_length(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_f(a: list[str], b: list[str]) -> float:
    lcs = lcs_length(a, b)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(b), lcs / len(a)
    return 2 * p * r / (p + r)


class RougeLNovelty:
    """Keeps a set of texts; :meth:`offer` keeps a new text unless it is too close to a kept one."""

    def __init__(self, threshold: float = 0.7, tokenizer: str = "rouge"):
        self.threshold = threshold
        self.tokenizer = tokenizer
        self._kept: list[tuple[list[str], str]] = []

    def __len__(self) -> int:
        return len(self._kept)

    def check(self, text: str) -> tuple[float, str | None]:
        """Highest ROUGE-L F of ``text`` against the kept texts, and the id of that text."""
        toks = tokenize(text, self.tokenizer)
        best, best_id = 0.0, None
        for kt, kid in self._kept:
            s = rouge_l_f(kt, toks)
            if s > best:
                best, best_id = s, kid
        return best, best_id

    def add(self, text: str, id: str) -> None:
        self._kept.append((tokenize(text, self.tokenizer), id))

    def offer(self, text: str, id: str) -> tuple[bool, float, str | None]:
        score, nearest = self.check(text)
        keep = score <= self.threshold
        if keep:
            self.add(text, id)
        return keep, score, nearest
