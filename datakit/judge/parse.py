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
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

# The rubric. Response aspects make a candidate's score; task aspects judge the instruction
# itself (is it clear, can a text-only model do it) and are kept per record.
RESPONSE_ASPECTS = ("instruction_following", "helpfulness", "correctness", "harmlessness")
TASK_ASPECTS = ("clarity", "feasibility")
ASPECTS = RESPONSE_ASPECTS + TASK_ASPECTS
SCORE_MIN, SCORE_MAX = 1, 10

# Names a judge may use for an aspect (normalised: lower case, no spaces/underscores/dashes).
_ALIASES: dict[str, str] = {}
for _name, _alts in {
    "instruction_following": ["instructionfollowing", "instructions", "following", "adherence",
                              "instructionadherence", "compliance", "指令遵循", "遵循指令",
                              "指令跟随", "遵循度", "指令遵从"],
    "helpfulness": ["helpfulness", "helpful", "usefulness", "有用性", "帮助性", "有帮助性", "实用性"],
    "correctness": ["correctness", "correct", "accuracy", "factuality", "正确性", "准确性", "准确度"],
    "harmlessness": ["harmlessness", "harmless", "safety", "无害性", "安全性", "无害"],
    "clarity": ["clarity", "taskclarity", "clear", "清晰度", "清晰性", "明确性", "任务清晰度"],
    "feasibility": ["feasibility", "taskfeasibility", "feasible", "可行性", "任务可行性"],
}.items():
    _ALIASES[_name.replace("_", "")] = _name
    for _a in _alts:
        _ALIASES[_a] = _name

_OVERALL_KEYS = {"overall", "score", "overallscore", "total", "final", "finalscore", "总分", "总体",
                 "综合", "综合评分", "总评"}
_RATIONALE_KEYS = ("rationale", "reason", "reasoning", "explanation", "justification", "comment",
                   "理由", "原因", "解释", "说明")
_SCORE_KEYS = ("score", "rating", "value", "grade", "分数", "评分", "得分")

_EN_NUMBERS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
              "七": 7, "八": 8, "九": 9}


def _norm_key(key: str) -> str:
    key = unicodedata.normalize("NFKC", str(key)).strip().lower()
    return re.sub(r"[\s_\-:：/]+", "", key)


def aspect_name(key: str) -> str | None:
    """The rubric aspect a judge's key means, or None."""
    return _ALIASES.get(_norm_key(key))


def _zh_number(text: str) -> int | None:
    """Chinese numerals up to 十几 / 几十: 八 → 8, 十 → 10, 十一 → 11, 二十 → 20."""
    if not text:
        return None
    if "十" in text:
        left, _, right = text.partition("十")
        tens = _ZH_DIGITS.get(left, None) if left else 1
        ones = _ZH_DIGITS.get(right, None) if right else 0
        if tens is None or ones is None:
            return None
        return tens * 10 + ones
    if len(text) == 1 and text in _ZH_DIGITS:
        return _ZH_DIGITS[text]
    return None


_NUM_RE = re.compile(
    r"(?P<num>-?\d+(?:\.\d+)?|[零〇一二两三四五六七八九十]+|"
    r"\b(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)\b)"
    r"(?:\s*(?:/|out\s+of|of)\s*(?P<den>\d+(?:\.\d+)?|ten|十))?",
    re.IGNORECASE,
)


def parse_score(value: Any) -> float | None:
    """A score from what a judge wrote: 8, "8", "8/10", "eight", "8 out of 10", "八分", "7.5".

    Returns the number on the 1..10 scale, or None when there is no number. A fraction with a
    denominator other than 10 is rescaled to 10 (4/5 → 8). Range is *not* checked here.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return None
    text = unicodedata.normalize("NFKC", value).strip()
    m = _NUM_RE.search(text)
    if not m:
        return None
    raw = m.group("num")
    num = _word_or_number(raw)
    if num is None:
        return None
    den_raw = m.group("den")
    if den_raw:
        den = _word_or_number(den_raw)
        if not den:
            return None
        if den != 10:
            num = num * 10.0 / den
    return float(num)


def _word_or_number(raw: str) -> float | None:
    raw = raw.strip()
    low = raw.lower()
    if low in _EN_NUMBERS:
        return float(_EN_NUMBERS[low])
    try:
        return float(raw)
    except ValueError:
        z = _zh_number(raw)
        return float(z) if z is not None else None


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


# "Helpfulness: 8/10 - clear and complete" / "**有用性**：8分，理由……" / "- correctness (7): ..."
_LINE_RE = re.compile(
    r"^[ \t>*\-#\d.)]*\**[ \t]*(?P<key>[A-Za-z][A-Za-z _\-]{2,40}?|[\u4e00-\u9fff]{2,8})[ \t]*\**[ \t]*"
    r"(?:[:：=\-–(（]|\bscore\b|得分|评分)[ \t]*\**[ \t]*(?P<val>[^\n,，;；。]*?(?:\d+(?:\.\d+)?|[零一二两三四五六七八九十]+|"
    r"\b(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)\b)"
    r"(?:[ \t]*(?:/|out[ \t]+of)[ \t]*\d+)?)[ \t]*(?:分)?[)）]?[ \t]*\**[ \t]*(?:[-–—:：,，.;；][ \t]*)?(?P<why>.*)$",
    re.IGNORECASE | re.MULTILINE,
)


def _collect_from_text(text: str) -> dict[str, tuple[Any, str]]:
    found: dict[str, tuple[Any, str]] = {}
    for m in _LINE_RE.finditer(unicodedata.normalize("NFKC", text)):
        name = aspect_name(m.group("key"))
        if name and name not in found:
            found[name] = (m.group("val"), m.group("why").strip())
    return found


def parse_pointwise(text: str | None, aspects: tuple[str, ...] = ASPECTS) -> PointwiseVerdict:
    """Parse a pointwise rubric judgement (see the module docstring for the rules)."""
    if text is None or not str(text).strip():
        return PointwiseVerdict("unparsed", None, missing=list(aspects), error="empty judge output")
    obj = extract_json(text)
    source = "json"
    overall_raw = None
    if obj is not None:
        found, overall_raw = _collect_from_json(obj)
        if not found and overall_raw is None:
            found = _collect_from_text(text)
            source = "text" if found else "json"
    else:
        found = _collect_from_text(text)
        source = "text" if found else "none"

    parsed: dict[str, dict[str, Any]] = {}
    invalid: dict[str, Any] = {}
    for name in aspects:
        if name not in found:
            continue
        raw, why = found[name]
        s = parse_score(raw)
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


_TEXT_PATTERNS = [
    (re.compile(r"\[\[\s*(A|B|tie|C)\s*\]\]", re.IGNORECASE), None),
    (re.compile(r"(?:winner|better|preferred|verdict|choice)\s*(?:response|answer)?\s*(?:is|:|：|=)\s*\**\s*"
                r"(?:response|answer)?\s*\**\s*\b(A|B|tie)\b", re.IGNORECASE), None),
    (re.compile(r"\b(?:response|answer)\s+(A|B)\s+is\s+(?:better|preferred|superior)", re.IGNORECASE), None),
    (re.compile(r"(?:回答|答案|回复)?\s*([AB甲乙])\s*(?:更好|更佳|较好|胜出|更优)"), None),
    (re.compile(r"(?:胜者|更好的是|选择)\s*[:：是为]?\s*(?:回答|答案|回复)?\s*([AB甲乙])"), None),
    (re.compile(r"\b(tie)\b|平局|不分上下|同样好", re.IGNORECASE), "tie"),
]


def parse_pairwise(text: str | None) -> str | None:
    """The winner a pairwise judgement names: ``"A"``, ``"B"``, ``"tie"``, or None (unparsed)."""
    if text is None or not str(text).strip():
        return None
    obj = extract_json(text)
    if obj is not None:
        for k, v in obj.items():
            if _norm_key(k) in _WINNER_KEYS:
                w = _winner_value(v)
                if w is not None:
                    return w
    norm = unicodedata.normalize("NFKC", text)
    for rx, fixed in _TEXT_PATTERNS:
        m = rx.search(norm)
        if m:
            if fixed:
                return fixed
            w = _winner_value(m.group(1))
            if w == "tie" or m.group(1).upper() == "C":
                return "tie"
            if w is not None:
                return w
    return None
