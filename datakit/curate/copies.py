"""Copies of a prompt's own examples: the ``copied_example`` filter.

A small teacher shown one worked example (an instruction, its input and its output) often
answers a new task with that example's text, word for word or nearly. Such an output trains a
model to recite the example. :class:`CopyDetector` holds the example texts a prompt showed and
says whether a generated text reproduces one of them: ROUGE-L F (CJK-aware tokens) at or above
``threshold``, or the example's text contained whole in the generated one.

Short example texts are ignored: a classification label ("positive") or a one-word answer is
*supposed* to repeat across tasks, so texts under ``min_tokens`` tokens never count as copies.
"""

from __future__ import annotations

from dataclasses import dataclass

from datakit.curate.rouge import rouge_l_f, tokenize

DEFAULT_THRESHOLD = 0.8
MIN_TOKENS = 8


@dataclass(frozen=True)
class Copy:
    source: str       # which example text was reproduced, e.g. "example.output"
    score: float      # ROUGE-L F against it (1.0 for a contained copy)


class CopyDetector:
    def __init__(self, examples: dict[str, str], *, threshold: float = DEFAULT_THRESHOLD,
                 min_tokens: int = MIN_TOKENS, tokenizer: str = "cjk"):
        self.threshold, self.tokenizer = threshold, tokenizer
        self._examples = []
        for name, text in examples.items():
            toks = tokenize(text or "", tokenizer)
            if len(toks) >= min_tokens:
                self._examples.append((name, toks, " ".join(toks)))

    def check(self, text: str) -> Copy | None:
        """The example that ``text`` reproduces (the closest one), or None."""
        toks = tokenize(text or "", self.tokenizer)
        if not toks:
            return None
        joined = f" {' '.join(toks)} "
        best: Copy | None = None
        for name, ex_toks, ex_joined in self._examples:
            score = 1.0 if f" {ex_joined} " in joined else rouge_l_f(toks, ex_toks)
            if score >= self.threshold and (best is None or score > best.score):
                best = Copy(name, round(score, 4))
        return best
