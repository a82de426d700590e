"""Reading what a judge model wrote, robustly and without ever inventing a score.

Judges are asked for JSON (``json_mode`` where the server supports it), but small and remote
models alike wrap it in prose or code fences, write scores as words ("eight"), as fractions
("8/10"), in Chinese ("八分"), forget aspects, or drop the JSON altogether. The parsers here
accept all of that and say exactly what they found:

* :func:`parse_pointwise` returns a :class:`PointwiseVerdict` with ``status`` ``ok`` (every
  aspect scored), ``partial`` (some aspects missing or invalid: listed) or ``unparsed`` (not
  one usable response score). Scores outside 1..10 are *invalid*, never clipped. A missing
  aspect is *missing*, never filled with a default.
* :func:`parse_pairwise` returns ``"A"``, ``"B"``, ``"tie"`` or ``None`` (unparsed).

Without JSON, a number is a score only where the text gives it as one ("8/10", "8分",
"score: 8", the value right after an aspect's label): "this one", 一个, 十分准确, "step 1", ranges,
negated scores and other scales are never read. :mod:`datakit.judge.textscore` states the rules,
:mod:`datakit.judge.textlines` which aspect a score belongs to; a disagreement means no score.
``tests/data/judge_answers.jsonl`` is the corpus that holds them to it.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from datakit.judge.rubric import (ASPECTS, RESPONSE_ASPECTS, SCORE_MAX, SCORE_MIN, TASK_ASPECTS, _norm_key,
                                  aspect_name)
from datakit.judge.textlines import collect_text
from datakit.judge.textscore import declared_scale, normalise, read_value

__all__ = ["ASPECTS", "RESPONSE_ASPECTS", "TASK_ASPECTS", "SCORE_MIN", "SCORE_MAX", "aspect_name", "parse_score",
           "extract_json", "PointwiseVerdict", "parse_pointwise", "parse_pairwise"]

_OVERALL_KEYS = {"overall", "score", "overallscore", "total", "final", "finalscore", "总分", "总体",
                 "综合", "综合评分", "总评"}
_RATIONALE_KEYS = ("rationale", "reason", "reasoning", "explanation", "justification", "comment",
                   "理由", "原因", "解释", "说明")
_SCORE_KEYS = ("score", "rating", "value", "grade", "分数", "评分", "得分")


def parse_score(value: Any, scale: float = 10) -> float | None:
    """The score one value gives: 8, "8", "8/10", "eight", "8 out of 10", "八分", "7.5", "Good (8/10)".

    Returns the number, or None when the value gives no score as a score (see
    :mod:`datakit.judge.textscore`: "4/5" and "85/100" are None, never rescaled; "one of the
    best" is None). ``scale``: the one the whole answer declares ("on a 1-5 scale"); on any other
    than 10 only an explicit "N/10" is read. Range is *not* checked here.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if scale == 10 else None
    if not isinstance(value, str):
        return None
    return read_value(value, scale)


# --------------------------------------------------------------------------- JSON extraction

_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def _balanced_objects(text: str) -> list[str]:
    """Every top-level ``{...}`` span in ``text``, honouring strings and escapes."""
    spans, depth, start, in_str, esc = [], 0, -1, False, False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"' and depth > 0:
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start:i + 1])
    return spans


def _loads_lenient(s: str) -> Any:
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        pass
    # Common near-JSON: trailing commas, single quotes, full-width punctuation.
    t = unicodedata.normalize("NFKC", s)
    t = re.sub(r",\s*([}\]])", r"\1", t)
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        pass
    if "'" in t and '"' not in t:
        try:
            return json.loads(t.replace("'", '"'))
        except json.JSONDecodeError:
            pass
    return None


def extract_json(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text``: the whole text, a fenced block, or a ``{...}`` span."""
    if not text:
        return None
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE_RE.finditer(text)]
    candidates += _balanced_objects(text)
    for c in candidates:
        if not c.startswith("{"):
            continue
        obj = _loads_lenient(c)
        if isinstance(obj, dict):
            return obj
    return None


# --------------------------------------------------------------------------- pointwise

@dataclass
class PointwiseVerdict:
    """What a pointwise judgement said. ``score`` is the mean of the valid response aspects."""

    status: str  # "ok" | "partial" | "unparsed"
    score: float | None
    aspects: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    invalid: dict[str, Any] = field(default_factory=dict)
    task_score: float | None = None
    source: str = "none"  # "json" | "text" | "none"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"status": self.status, "score": self.score, "task_score": self.task_score,
             "aspects": self.aspects, "source": self.source}
        if self.missing:
            d["missing"] = self.missing
        if self.invalid:
            d["invalid"] = self.invalid
        if self.error:
            d["error"] = self.error
        return d


def _rationale_of(d: dict[str, Any]) -> str:
    for k, v in d.items():
        if _norm_key(k) in _RATIONALE_KEYS and isinstance(v, str):
            return v.strip()
    return ""


def _score_of(d: dict[str, Any]) -> Any:
    for k, v in d.items():
        if _norm_key(k) in _SCORE_KEYS:
            return v
    return None


def _collect_from_json(obj: dict[str, Any]) -> tuple[dict[str, tuple[Any, str]], Any]:
    """Map aspect → (raw score, rationale) from the shapes judges produce, and an overall score."""
    found: dict[str, tuple[Any, str]] = {}
    overall = None

    def visit(d: dict[str, Any], depth: int) -> None:
        nonlocal overall
        if depth > 3:
            return
        for k, v in d.items():
            name = aspect_name(k)
            if name is not None and name not in found:
                if isinstance(v, dict):
                    found[name] = (_score_of(v), _rationale_of(v))
                elif isinstance(v, list) and v:  # [score, "rationale"]
                    found[name] = (v[0], str(v[1]) if len(v) > 1 else "")
                else:
                    found[name] = (v, "")
                continue
            nk = _norm_key(k)
            if nk in _OVERALL_KEYS and not isinstance(v, (dict, list)) and overall is None and depth == 0:
                overall = v
            elif isinstance(v, dict):
                visit(v, depth + 1)
            elif isinstance(v, list):  # [{"aspect": "helpfulness", "score": 8, ...}, ...]
                for item in v:
                    if isinstance(item, dict):
                        label = next((item[x] for x in ("aspect", "name", "criterion", "dimension", "维度")
                                      if isinstance(item.get(x), str)), None)
                        an = aspect_name(label) if label else None
                        if an and an not in found:
                            found[an] = (_score_of(item), _rationale_of(item))
                        elif an is None:
                            visit(item, depth + 1)

    visit(obj, 0)
    return found, overall


def _aspects_in(text: str) -> tuple[dict[str, tuple[float | None, Any, str]], Any, str]:
    """aspect → (score or None, what the judge wrote, rationale), the overall value, and the source."""
    obj = extract_json(text)
    if obj is not None:
        raw, overall = _collect_from_json(obj)
        if raw or overall is not None:
            scale = declared_scale(normalise(text))
            return {a: (parse_score(v, scale), v, why) for a, (v, why) in raw.items()}, overall, "json"
    found = collect_text(text)
    return found, None, "text" if found else ("json" if obj is not None else "none")


def parse_pointwise(text: str | None, aspects: tuple[str, ...] = ASPECTS) -> PointwiseVerdict:
    """Parse a pointwise rubric judgement (see the module docstring for the rules)."""
    if text is None or not str(text).strip():
        return PointwiseVerdict("unparsed", None, missing=list(aspects), error="empty judge output")
    found, overall_raw, source = _aspects_in(str(text))

    parsed: dict[str, dict[str, Any]] = {}
    invalid: dict[str, Any] = {}
    for name in aspects:
        if name not in found:
            continue
        s, raw, why = found[name]
        if s is None or not (SCORE_MIN <= s <= SCORE_MAX):
            invalid[name] = raw
            continue
        parsed[name] = {"score": s, "rationale": why}
    missing = [a for a in aspects if a not in found]

    resp = [parsed[a]["score"] for a in RESPONSE_ASPECTS if a in parsed]
    task = [parsed[a]["score"] for a in TASK_ASPECTS if a in parsed]
    score = round(sum(resp) / len(resp), 4) if resp else None
    if score is None and overall_raw is not None:
        s = parse_score(overall_raw)
        if s is not None and SCORE_MIN <= s <= SCORE_MAX:
            score = s
            parsed["overall"] = {"score": s, "rationale": ""}
        else:
            invalid["overall"] = overall_raw
    task_score = round(sum(task) / len(task), 4) if task else None

    if score is None:
        err = "no valid response score" if (found or invalid) else "no JSON and no 'aspect: score' lines"
        return PointwiseVerdict("unparsed", None, parsed, missing, invalid, task_score, source, err)
    status = "ok" if not missing and not invalid else "partial"
    return PointwiseVerdict(status, score, parsed, missing, invalid, task_score, source)


# --------------------------------------------------------------------------- pairwise

_TIE_WORDS = {"tie", "draw", "equal", "same", "both", "neither", "none", "平局", "相同", "一样", "持平", "都好", "都差"}
_WINNER_KEYS = ("winner", "better", "preferred", "preference", "choice", "verdict", "answer",
                "result", "胜者", "更好", "选择", "结果")


def _winner_value(v: Any) -> str | None:
    if not isinstance(v, str):
        return None
    t = unicodedata.normalize("NFKC", v).strip().strip("[]()\"'*.。 ").lower()
    t = re.sub(r"^(?:response|answer|assistant|output|回答|答案|回复)\s*", "", t)
    if t in ("a", "1", "first", "甲"):
        return "A"
    if t in ("b", "2", "second", "乙"):
        return "B"
    if t in _TIE_WORDS or t.startswith("tie"):
        return "tie"
    return None


_SIDE = r"(?:(?:response|answer|assistant|output|回答|答案|回复)\s*)?(?P<s>(?-i:A|B)|甲|乙)(?![A-Za-z])"
# A final verdict: "[[B]]", "Winner: A", "the better response is B", "最终选择：乙".
_VERDICT = re.compile(
    r"\[\[\s*(?P<v>A|B|C|tie)\s*\]\]|(?:\bwinner|\bverdict|\bfinal\s+(?:verdict|answer|choice|decision)|"
    r"\bbetter\s+(?:response|answer)|\bpreferred\s+(?:response|answer)|\bmy\s+choice|\bchoice|胜者|获胜者|"
    r"最终(?:结论|选择|判断|裁决)|结论|判定|更好的(?:是|回答是|回答))[\"']?\s*(?:is|:|=|是|为)?\s*:?\s*"
    r"[\"']?(?:(?:response|answer|回答|答案|回复)\s*)?(?P<w>(?-i:A|B)|tie|平局|甲|乙)(?![A-Za-z])", re.IGNORECASE)
# Weaker statements, each pattern with the side it names: "Response A is better", "I prefer B",
# "A is worse than B", "B比A更好", "A不如B".
_BETTER = r"(?:clearly\s+|slightly\s+|much\s+|far\s+|somewhat\s+|significantly\s+)?(?:the\s+)?"
_STATEMENTS = [
    (re.compile(_SIDE + r"\s+(?:is|was)\s+" + _BETTER + r"(?:better|stronger|superior|preferable|preferred)"
                r"(?:\s+(?:one|response|answer|choice|overall))?(?=\s*(?:[.,;:!)]|$|\s+(?:than|overall|because|"
                r"since|here|in\s+every)\b))", re.IGNORECASE), "same"),
    (re.compile(r"\bprefer\s+" + _SIDE, re.IGNORECASE), "same"),
    (re.compile(_SIDE + r"\s+(?:clearly\s+)?(?:outperforms|beats|wins)\b", re.IGNORECASE), "same"),
    (re.compile(_SIDE + r"\s+is\s+the\s+(?:clear\s+|overall\s+)?winner\b", re.IGNORECASE), "same"),
    (re.compile(_SIDE + r"\s+(?:is|was)\s+" + _BETTER + r"(?:worse|weaker|inferior)\b", re.IGNORECASE), "other"),
    (re.compile(_SIDE + r"\s*(?:的回答)?\s*比\s*(?:回答|答案|回复)?\s*(?:A|B|甲|乙)\s*(?:更|要|明显)?\s*"
                r"(?:好|强|优秀|出色|准确|全面|佳|优)"), "same"),
    (re.compile(_SIDE + r"\s*不如\s*(?:回答|答案|回复)?\s*(?:A|B|甲|乙)"), "other"),
    (re.compile(_SIDE + r"\s*(?:明显|略|稍|整体|总体)?\s*(?:更好|更佳|较好|胜出|更优|获胜|更胜一筹)"),
     "same"),
]
_TIE = re.compile(r"\bit(?:'s|\s+is)\s+a\s+tie\b|\b(?:a|the)\s+tie\b|\bequally\s+(?:good|bad|strong|weak|helpful)\b|"
                  r"\bneither\b.{0,40}\bis\s+(?:clearly\s+)?better\b|\bno\s+clear\s+winner\b|"
                  r"平局|不分上下|同样好|一样好|旗鼓相当|难分伯仲|打平|势均力敌", re.IGNORECASE)
_NEGATED = re.compile(r"(?:\bnot|n't|\bnever|\bneither|\bnor|\bhardly)\b(?:\s+\w+){0,3}\s*$"
                      r"|(?:不是|并非|不认为|没有|不能说)\s*$", re.IGNORECASE)
_CONCEDED = re.compile(r"\b(?:although|though|while|whereas)\b|虽然|尽管", re.IGNORECASE)
_CONDITION = re.compile(r"\b(?:if|unless)\b|如果|假如|要是", re.IGNORECASE)
_FLIP = {"A": "B", "B": "A"}


def _side(raw: str) -> str | None:
    t = raw.strip().lower()
    return {"a": "A", "甲": "A", "b": "B", "乙": "B", "c": "tie", "tie": "tie", "平局": "tie"}.get(t)


def _said(text: str, m: re.Match) -> bool:
    """Not negated, conceded or conditional ("not a tie", "although A is better", "if B had …")."""
    sentence = re.split(r"[.;!?。；！？\n]", text[:m.start()])[-1]
    clause = re.split(r"[,，]", sentence)[-1]
    return not (_NEGATED.search(sentence[-40:]) or _CONCEDED.search(clause) or _CONDITION.search(sentence))


def _text_verdict(text: str) -> str | None:
    """The winner the text names: final verdicts first; all of them must agree, else None."""
    verdicts = {_side(m.group("v") or m.group("w")) for m in _VERDICT.finditer(text) if _said(text, m)}
    if verdicts:
        return verdicts.pop() if len(verdicts) == 1 else None
    said: set[str | None] = {"tie" for m in _TIE.finditer(text) if _said(text, m)}
    for rx, which in _STATEMENTS:  # in order; what one pattern read is blanked for the next ones
        for m in list(rx.finditer(text)):
            if _said(text, m):
                side = _side(m.group("s"))
                said.add(_FLIP[side] if which == "other" else side)
            text = text[:m.start()] + " " * (m.end() - m.start()) + text[m.end():]
    return said.pop() if len(said) == 1 else None


def parse_pairwise(text: str | None) -> str | None:
    """The winner a pairwise judgement names: ``"A"``, ``"B"``, ``"tie"``, or None (unparsed).

    A JSON ``winner`` field wins. In text, a final verdict ("[[B]]", "Winner: A") counts before
    statements ("Response A is better", "B比A更好"); when what the text says disagrees, or is
    negated or conditional ("not a tie", "although A is better"), the answer is None."""
    if text is None or not str(text).strip():
        return None
    obj = extract_json(text)
    if obj is not None:
        for k, v in obj.items():
            if _norm_key(k) in _WINNER_KEYS:
                w = _winner_value(v)
                if w is not None:
                    return w
    return _text_verdict(re.sub(r"\*\*|__|`", "", unicodedata.normalize("NFKC", str(text))))
