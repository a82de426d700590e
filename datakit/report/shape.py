"""What the accepted data looks like: lengths, languages, task types, leading verbs and
objects, ROUGE-L to the nearest earlier text. One pass, one record at a time."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import Any

from datakit.report.stats import histogram, share
from datakit.report.text import language, n_tokens, verb_object, zh_lead

FIELDS = ("instruction", "input", "output")
TOP_VERBS = 20
TOP_OBJECTS = 4
TOKEN_NOTE = ("lengths are tokenizer-free counts: words for English and other space-separated "
              "text, one token per character for Chinese/Japanese/Korean")


class ShapeAcc:
    def __init__(self) -> None:
        self.n = 0
        self.lengths: dict[str, dict[str, list[int]]] = {f: defaultdict(list) for f in FIELDS}
        self.langs: Counter = Counter()
        self.cls: Counter = Counter()
        self.verbs: Counter = Counter()
        self.objects: dict[str, Counter] = defaultdict(Counter)
        self.zh: Counter = Counter()
        self.rouge: list[float] = []
        self.rouge_threshold: float | None = None
        self.outputs: Counter = Counter()       # normalised output -> records (exact repeats)
        self.output_text: dict[str, str] = {}

    def add(self, rec: dict[str, Any]) -> None:
        self.n += 1
        instr = str(rec.get("instruction") or "")
        lang = language(instr)
        self.langs[lang] += 1
        self.cls["classification" if rec.get("is_classification") else "open-ended"] += 1
        for f in FIELDS:
            self.lengths[f][lang].append(n_tokens(str(rec.get(f) or "")))
        if lang == "en":
            verb, obj = verb_object(instr)
            if verb:
                self.verbs[verb] += 1
                self.objects[verb][obj or "(none)"] += 1
        elif lang == "zh":
            lead = zh_lead(instr)
            if lead:
                self.zh[lead] += 1
        self._rouge(rec.get("filters"))
        out = " ".join(str(rec.get("output") or "").split()).lower()
        if out:
            key = hashlib.blake2b(out.encode("utf-8"), digest_size=12).hexdigest()
            self.outputs[key] += 1
            if self.outputs[key] == 2:
                self.output_text[key] = out[:240]

    def _rouge(self, filters: Any) -> None:
        for v in filters or []:
            if isinstance(v, dict) and v.get("filter") == "rouge_l" and isinstance(v.get("score"), (int, float)):
                self.rouge.append(float(v["score"]))
                d = v.get("detail") if isinstance(v.get("detail"), dict) else {}
                if isinstance(d.get("threshold"), (int, float)):
                    self.rouge_threshold = float(d["threshold"])
                return

    def _repeats(self) -> dict[str, Any]:
        rep = [(k, n) for k, n in self.outputs.most_common(5) if n > 1]
        return {"records_with_repeated_output": sum(n for n in self.outputs.values() if n > 1),
                "distinct_outputs": len(self.outputs),
                "top": [{"n": n, "output": self.output_text.get(k, "")} for k, n in rep]}

    def result(self) -> dict[str, Any]:
        lengths = {f: {lang: histogram(v, 20, integer=True) for lang, v in sorted(by.items())}
                   for f, by in self.lengths.items()}
        verbs = [{"verb": v, "n": n, "objects": self.objects[v].most_common(TOP_OBJECTS)}
                 for v, n in self.verbs.most_common(TOP_VERBS)]
        return {"n": self.n, "languages": share(self.langs), "classification": share(self.cls),
                "lengths": lengths, "token_note": TOKEN_NOTE,
                "verbs": {"n_en": self.langs.get("en", 0), "with_verb": sum(self.verbs.values()),
                          "distinct": len(self.verbs), "top": verbs},
                "zh_leading": {"n_zh": self.langs.get("zh", 0), "distinct": len(self.zh),
                               "top": self.zh.most_common(TOP_VERBS)},
                "repeated_outputs": self._repeats(),
                "rouge_l": dict(histogram(self.rouge, [i / 20 for i in range(21)]),
                                threshold=self.rouge_threshold)}
