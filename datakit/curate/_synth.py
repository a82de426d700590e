"""Synthetic instruction text for tests and benchmarks (no dataset can be downloaded here).

Instructions come from templates in the style of self-instruct tasks, with slots filled from a
small English vocabulary and a large Zipf-distributed vocabulary of made-up content words, so
token frequencies look like real text (a few very common words, a long tail). A share of the
texts are planted near-duplicates of earlier ones: word substitutions, deletions, insertions,
swaps of neighbouring words.
"""

from __future__ import annotations

import random

TEMPLATES = [
    "Write a {adj} {genre} about {topic}.",
    "Explain {topic} to {audience} in {n} sentences.",
    "Give me a list of {n} {things} related to {topic}.",
    "Summarize the following {doc} about {topic} in one paragraph.",
    "Classify the following {things} as {adj} or {adj2}.",
    "Translate this sentence about {topic} into {lang}.",
    "What are the main differences between {topic} and {topic2}?",
    "Suggest {n} ways to improve {topic} for {audience}.",
    "Rewrite the {doc} below so that it sounds more {adj}.",
    "Generate a {adj} title for an article on {topic}.",
    "Compare {topic} with {topic2} and explain which is better for {audience}.",
    "Describe how {topic} affects {topic2} in everyday life.",
    "Create a {n}-step plan to learn {topic} as {audience}.",
    "Find the {adj} mistakes in this {doc} and correct them.",
    "Why do {audience} often struggle with {topic}?",
    "Write an email to {audience} announcing {topic}.",
    "Propose a {adj} name for a company that sells {things}.",
    "Is it true that {topic} causes {topic2}? Answer yes or no and explain.",
    "Turn the following notes on {topic} into a {adj} {genre}.",
    "List {n} questions {audience} might ask about {topic}.",
    "Design a quiz with {n} questions on {topic} for {audience}.",
    "Convert this {doc} about {topic} into a table with {n} columns.",
    "Tell me a {adj} story in which {topic} meets {topic2}.",
    "Write a function that checks whether {topic} is {adj}.",
]
ADJ = ("short funny formal simple clear detailed friendly persuasive concise creative serious "
       "positive negative modern classic technical casual polite").split()
GENRE = "poem story essay tweet haiku letter review speech dialogue song report".split()
AUDIENCE = ["a child", "a beginner", "an expert", "students", "managers", "a new employee",
            "customers", "teachers", "a tourist", "my grandmother", "engineers", "doctors"]
DOC = "paragraph text article email review report abstract essay paper memo".split()
LANG = "French Spanish German Chinese Japanese Italian Russian Korean".split()
THINGS = ("fruits animals countries books movies tools habits sports foods jobs cities games "
          "plants colors songs apps").split()
FILLERS = ["please", "briefly", "in detail", "step by step", "for a blog", "with examples",
           "using simple words", "in a table", "as bullet points", "for beginners"]
_SYL = ["ka", "lo", "mi", "ren", "tu", "sa", "vor", "en", "li", "dra", "po", "qui", "nes", "ta",
        "bel", "or", "fi", "gan", "xu", "zel", "mo", "ri", "an", "sol", "ve", "tor", "ny", "ul"]


def make_vocab(size: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYL) for _ in range(rng.randint(2, 4))))
    return sorted(words)


class Synth:
    def __init__(self, seed: int = 0, vocab_size: int = 20000):
        self.rng = random.Random(seed)
        self.vocab = make_vocab(vocab_size, seed)
        # Zipf-like weights: rank r gets weight 1/r
        self._cum: list[float] = []
        acc = 0.0
        for r in range(1, vocab_size + 1):
            acc += 1.0 / r
            self._cum.append(acc)

    def word(self) -> str:
        return self.rng.choices(self.vocab, cum_weights=self._cum)[0]

    def topic(self) -> str:
        k = self.rng.choice((1, 2, 2, 3))
        return " ".join(self.word() for _ in range(k))

    def instruction(self) -> str:
        r = self.rng
        t = r.choice(TEMPLATES)
        adj, adj2 = r.sample(ADJ, 2)
        s = t.format(adj=adj, adj2=adj2, genre=r.choice(GENRE), topic=self.topic(),
                     topic2=self.topic(), audience=r.choice(AUDIENCE), n=r.randint(2, 12),
                     doc=r.choice(DOC), lang=r.choice(LANG), things=r.choice(THINGS))
        if r.random() < 0.3:
            s = s[:-1] + ", " + r.choice(FILLERS) + s[-1]
        if r.random() < 0.2:
            s += " " + " ".join(self.word() for _ in range(r.randint(3, 12))) + "."
        return s

    def mutate(self, text: str, edits: int) -> str:
        """A near-duplicate of ``text``: ``edits`` random word edits."""
        r = self.rng
        words = text.split()
        for _ in range(edits):
            op = r.random()
            if op < 0.35 and words:
                words[r.randrange(len(words))] = self.word()
            elif op < 0.55 and len(words) > 3:
                del words[r.randrange(len(words))]
            elif op < 0.8:
                words.insert(r.randrange(len(words) + 1), self.word())
            elif len(words) > 1:
                i = r.randrange(len(words) - 1)
                words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)

    def corpus(self, n: int, dup_rate: float = 0.1, max_edits: int = 3
               ) -> tuple[list[str], list[int]]:
        """``n`` instructions; returns texts and, for each, the index of the text it was
        planted from (-1 for fresh ones)."""
        texts: list[str] = []
        src: list[int] = []
        for i in range(n):
            if texts and self.rng.random() < dup_rate:
                j = self.rng.randrange(len(texts))
                texts.append(self.mutate(texts[j], self.rng.randint(0, max_edits)))
                src.append(j)
            else:
                texts.append(self.instruction())
                src.append(-1)
        return texts, src
