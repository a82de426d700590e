"""Scores in a judge's free text, read only where the text gives them as scores.

A number is a *candidate* score only in these positions (``N`` is a number, an English number
word or a Chinese numeral):

* marked: ``N/10``, ``N out of 10``, ``N分`` (not 分钟, 分之, 分制; after a Chinese numeral the
  分 must not start a word, so 十分准确 is "very accurate", not 10), ``score: N``, ``score of N``,
  ``rated N``, ``give it an N``, ``得分N``, ``评分：N``, ``分数为N``;
* the value standing alone right after an aspect's label (``Helpfulness: 8``, ``有用性：九``,
  ``Correctness (7): …``, ``| Helpfulness | 8 |``, ``helpfulness 8/10``). "Standing alone" means
  the number ends its clause or is followed by punctuation, a dash, a bracket or "because"/"but":
  ``Helpfulness: 3 examples are given`` has no score.

Everything else is not a score: "this one", 一个, 十分, step 1, 2024, top 3, 80%. A candidate is
dropped when it is part of a range (``7-8``, ``7 to 8``, 七到八分, 七八分: neither end is taken),
negated or a bound (``not a 10``, ``at least 7/10``, 不是8分, 不到6分), or a scale (满分10分,
``on a scale of 1-10``). Only the 1..10 scale is read: ``4/5``, ``85/100``, ``out of 5`` and any
score on a line that declares another scale (满分5分, ``a 5-point scale``) are *invalid*, never
rescaled.

A candidate belongs to the aspect whose label or name comes before it in its clause, else to
the aspect the line (or the section, under a heading) is about; a clause with no such aspect
gives its numbers to an aspect only when it names exactly one ("8/10 for helpfulness"). Names
after "than", "unlike", 比 are comparisons and own nothing. When an aspect gets candidates that
disagree, it has no score (``conflicting``): the parser never picks one.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


_EN = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
       "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
              "七": 7, "八": 8, "九": 9}
_NUM = r"\d+(?:\.\d+)?|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|[零〇一二两三四五六七八九十]+"

_TOKEN = re.compile(
    r"(?<![A-Za-z0-9.])(?P<d>\d+(?:\.\d+)?)(?![A-Za-z0-9%]|\.\d)"
    r"|(?<![A-Za-z])(?P<w>zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)(?![A-Za-z])"
    r"|(?P<z>[零〇一二两三四五六七八九十百千]+)", re.IGNORECASE)
_DEN = re.compile(r"\s*(?:/|\(?\s*out\s+of\b)\s*(?P<den>\d+(?:\.\d+)?|ten|十|五|百)(?![0-9])", re.IGNORECASE)
_FEN = re.compile(r"\s*分(?![钟之制数])")
_AFTER_OK = re.compile(r"[\s\"']*[)\]]?\s*(?:$|[.,:;!?(|)\]}。、]|\b(?:because|since|as|but|though|although|while|"
                       r"given|overall)\b)", re.IGNORECASE)
_KEYWORD = re.compile(
    r"(?:\b(?:score[sd]?|rating|rated?|grade[sd]?|give it|gave it|giving it|awarded?|deserves?|earns?|"
    r"merits?)\b[\"']?\s*(?:(?:[:=]|\b(?:of|is|was|at|as|it|this|a|an|solid|strong)\b)\s*)*"
    r"|(?:得分|评分|打分|分数|分值|评为|评级)[\"']?\s*[:为是]?\s*)$", re.IGNORECASE)
_NEGATED = re.compile(
    r"(?:\b(?:not|never|no|less|more|fewer|least|most|above|below|over|under|higher|lower|nearly|almost|"
    r"instead|rather|except|beyond|close|than)\b|n't)(?:\s+(?:than|of|to|a|an|the|even|quite|really|"
    r"give|given|giving|gave|it|this|rate|rated|deserve|deserves|be|score|scored|scoring|worth|earn|"
    r"earns|get|gets|reach|reaches)\b)*\s*$"
    r"|(?:不是|不到|不足|不能|不会|不值|不给|不应|没有|没|并非|而非|非|至少|超过|高于|低于|不止|接近|不够|"
    r"达不到|谈不上|算不上|称不上|不配)\s*(?:给|打|得|拿|到|上|是|为|有)?\s*$", re.IGNORECASE)
_RANGE = re.compile(rf"(?:{_NUM})\s*分?\s*(?:/\s*10\s*)?(?:-|–|~|～|\bto\b|\bor\b|到|至|或者?)\s*(?:{_NUM})"
                    rf"|\bbetween\s+(?:{_NUM})\s+and\s+(?:{_NUM})", re.IGNORECASE)
_SCALE = re.compile(
    r"满分\s*[:为是]?\s*(?P<a>\d+|十|五|百|一百)\s*分?|(?P<b>\d+|十|五|百)\s*分制"
    r"|scale\s+(?:of|from)\s+[01]\s*(?:-|–|to)\s*(?P<c>\d+)|(?P<d>\d+)[\s-]*point\s+scale"
    r"|\b[01]\s*(?:-|–|to)\s*(?P<e>\d+)[\s-]*scale", re.IGNORECASE)
CLAUSE_SPLIT = re.compile(r"[,;!?，；、。！？]|\.(?=\s|$)|\s[-–—]\s|\s?—\s?|\s(?:and|but|whereas|while)\s|但是|但|不过|然而",
                           re.IGNORECASE)


@dataclass
class Cand:
    """One score a text gives: ``value`` (None: a numeral that cannot be read) on ``scale``."""

    start: int
    end: int
    value: float | None
    scale: float
    raw: str


def _is_cjk(ch: str) -> bool:
    return bool(ch) and "\u4e00" <= ch <= "\u9fff"


def zh_number(text: str) -> int | None:
    """Chinese numerals up to 九十九: 八 → 8, 十 → 10, 十一 → 11, 二十 → 20; else None (七八, 一百)."""
    if "十" in text:
        left, _, right = text.partition("十")
        tens = _ZH_DIGITS.get(left) if left else 1
        ones = _ZH_DIGITS.get(right) if right else 0
        return None if tens is None or ones is None else tens * 10 + ones
    return _ZH_DIGITS.get(text) if len(text) == 1 else None


def _number(raw: str) -> float | None:
    low = raw.strip().lower()
    if low in _EN:
        return float(_EN[low])
    if low in ("百", "一百"):
        return 100.0
    try:
        return float(low)
    except ValueError:
        z = zh_number(low)
        return None if z is None else float(z)


_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


def normalise(text: str) -> str:
    """NFKC (full-width digits and punctuation), markdown emphasis and code marks removed."""
    text = unicodedata.normalize("NFKC", text).replace("\t", " ")
    text = text.translate(_QUOTES)
    return re.sub(r"\*\*|__|`", "", text)


def declared_scale(text: str, default: float = 10.0) -> float:
    """The scale a text declares ("满分5分", "on a scale of 1-5"); ``default`` when it declares none."""
    scale = default
    for m in _SCALE.finditer(text):
        top = _number(next(g for g in m.groups() if g))
        if top is not None and top != 10:
            scale = top
    return scale


def candidates(clause: str, lead_at: set[int], scale: float) -> list[Cand]:
    """The scores ``clause`` gives (see the module docstring); ``lead_at``: where a label's value starts."""
    skip = [m.span() for m in _RANGE.finditer(clause)] + [m.span() for m in _SCALE.finditer(clause)]
    out: list[Cand] = []
    done = -1
    for m in _TOKEN.finditer(clause):
        if m.start() < done or any(a < m.end() and m.start() < b for a, b in skip):
            continue
        end, den, marked = m.end(), None, False
        after = clause[end:]
        d, f = _DEN.match(after), _FEN.match(after)
        if d:
            den, end, marked = _number(d.group("den")), end + d.end(), True
        elif f and not (m.group("z") and _is_cjk(after[f.end():f.end() + 1])):
            end, marked = end + f.end(), True
        alone = bool(_AFTER_OK.match(clause, end)) and not (m.group("z") and _is_cjk(clause[end:end + 1]))
        before = clause[:m.start()]
        kw = _KEYWORD.search(before[-40:])
        if not marked and alone and (kw or m.start() in lead_at):
            marked = True
        if not marked:
            continue
        done = end
        plain = before[:len(before) - len(kw.group())] if kw else before
        if _NEGATED.search(plain[-40:]):
            continue
        raw = m.group()
        value = _number(raw) if not m.group("z") else zh_number(raw)
        out.append(Cand(m.start(), end, None if value is None else float(value),
                        den if den is not None else scale, clause[m.start():end].strip()))
    return out


def choose(cands: list[Cand]) -> tuple[float | None, str]:
    """One score when every valid candidate agrees; else None and what was seen."""
    raws = "; ".join(c.raw for c in cands)
    values = {c.value for c in cands if c.value is not None and c.scale == 10}
    if len(values) == 1:
        return values.pop(), raws
    return None, ("conflicting: " + raws) if values else raws


def value_candidates(value: str, scale: float = 10.0) -> list[Cand]:
    """The scores one value gives when it stands on its own (a JSON field, a table cell);
    ``scale``: the one the whole answer declares."""
    line = normalise(value).strip()
    scale = declared_scale(line, scale)
    cands: list[Cand] = []
    for i, clause in enumerate(CLAUSE_SPLIT.split(line)):
        lead = {len(clause) - len(clause.lstrip(" \"'(*"))} if i == 0 else set()
        lead |= {m.end() for m in re.finditer(r":\s*", clause)}
        cands += candidates(clause, lead, scale)
    return cands


def read_value(value: str, scale: float = 10.0) -> float | None:
    """The score a single value gives ("8", "8/10", "eight", "八分", "Good (8/10)"), or None."""
    cands = value_candidates(value, scale)
    return choose(cands)[0] if cands else None
