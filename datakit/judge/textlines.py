"""Which aspect each score in a judge's free text belongs to: labelled lines, sections under a
heading, markdown tables and plain sentences. The scores themselves are read by
:mod:`datakit.judge.textscore` (its docstring has the rules); nothing here guesses a number."""

from __future__ import annotations

import re

from datakit.judge.rubric import LABEL_WORDS, NOUN_RE, aspect_name
from datakit.judge.textscore import (CLAUSE_SPLIT, Cand, candidates, choose, declared_scale, normalise,
                                     value_candidates)

_LINE_KEY = re.compile(
    r"^[\s>#*\-+•·{\[\"'`]*(?:\(?(?:\d{1,2}|[一二三四五六七八九十]{1,2})[.)、:]\s*)?[\s*\"'`]*"
    rf"(?P<key>{LABEL_WORDS})[\"'`*]*\s*(?P<sep>(?:\bscore\b|\brating\b|得分|评分|分数|方面)\s*[:=]?|[:=|(]|[-–—]\s|\.{{3,}})?"
    r"[\s\"'`*]*", re.IGNORECASE)
_LABEL_SEP = re.compile(r"[\s\"'*`]*(?:(?:\bscore\b|\brating\b|得分|评分|分数|方面)\s*[:=]?|[:=(|])[\s\"'*`]*",
                        re.IGNORECASE)
_VERB_SEP = re.compile(r"[\s\"'*`]*(?:(?:is|gets?|deserves?|earns?|scores?|receives?|rated|merits|at)\s+(?:an?\s+)?"
                       r"|为|是|给|获得|得到|达到)?[\s\"'*`]*", re.IGNORECASE)
_COMPARED = re.compile(r"(?:\bthan|\bunlike|\bcompared\s+(?:to|with)|\bversus|\bvs\.?|比|不如|相比)\s*(?:the\s+|its\s+)?$",
                       re.IGNORECASE)
_TOPIC = re.compile(r"(?:\bin\s+terms\s+of|\bregarding|\bas\s+(?:for|to)|\bconcerning|\bwhen\s+it\s+comes\s+to)"
                    r"\s+(?:the\s+|its\s+)?$|(?:关于|就|对于|从|在)\s*$", re.IGNORECASE)
_SUBJECT = re.compile(r"\s*(?:(?:the|its|this|overall|response|answer|response's|answer's)\s+)*$"
                      r"|\s*(?:这个|该|此|其)?(?:回答|回复|答案|任务|内容)?的?$", re.IGNORECASE)
_PREDICATE = re.compile(r"\s*(?:,|:|\b(?:is|was|seems|looks|remains|stays|gets|deserves|earns|scores|could|would|"
                        r"should|can)\b)", re.IGNORECASE)
_RELATIVE = re.compile(r"\s*(?:which|whose)\b", re.IGNORECASE)
_KEEPS_SECTION = {"score", "scores", "rating", "grade", "rationale", "reason", "reasoning", "explanation",
                  "justification", "comment", "comments", "analysis", "notes", "note", "strengths", "weaknesses",
                  "pros", "cons", "分数", "评分", "得分", "理由", "原因", "说明", "解释", "评语", "分析", "优点", "缺点", "不足"}
_LABEL_LINE = re.compile(r"^[\s>*\-+•·\d.)\"'`{]*(?P<label>[^\W\d_][\w \-]{0,30}?)[\"'`*\s]*:")
_SEP_ROW = re.compile(r"^\s*\|?\s*:?-{2,}")
_SCORE_HEAD = re.compile(r"score|rating|grade|分数|评分|得分|^分$", re.IGNORECASE)


def _clauses(line: str) -> list[tuple[int, str, bool]]:
    """(start, clause, whether a sentence ends after it)."""
    out, start = [], 0
    for m in CLAUSE_SPLIT.finditer(line):
        out.append((start, line[start:m.start()], m.group().strip() in (".", ";", "!", "?", "。")))
        start = m.end()
    return out + [(start, line[start:], True)]


def _line_key(line: str) -> tuple[str, int] | None:
    """(aspect, where its value starts) when the line opens with an aspect's label."""
    m = _LINE_KEY.match(line)
    if not m:
        return None
    rest = line[m.end():]
    heading = not rest.strip(" #*\"'`") and NOUN_RE.fullmatch(m.group("key"))
    if m.group("sep") or heading or re.match(r"\d|[零一二两三四五六七八九十]", rest):
        return aspect_name(m.group("key")), m.end()
    return None


def _ends_section(line: str) -> bool:
    if line.lstrip().startswith("#"):
        return True
    m = _LABEL_LINE.match(line)
    return bool(m) and m.group("label").strip().lower() not in _KEEPS_SECTION


def _mentions(clause: str) -> tuple[list[tuple[int, str, bool]], dict[int, int], bool, str | None]:
    """Aspect names in a clause: (position, aspect, labelled); for unlabelled names, where a
    value right after them ("accuracy is 9/10") would start; and whether a label with a colon
    was among them (it holds past the end of the sentence); and the last aspect named at all."""
    found, leads, colon, last = [], {}, False, None
    for m in NOUN_RE.finditer(clause):
        before = clause[:m.start()]
        a = last = aspect_name(m.group())
        if _COMPARED.search(before[-30:]):
            continue
        s = _LABEL_SEP.match(clause, m.end())
        if s and s.end() > m.end() and re.search(r"[:=(|]|score|rating|得分|评分|分数|方面", s.group(), re.I):
            found.append((m.start(), a, True))
            leads[s.end()] = len(found) - 1
            colon = True
            continue
        subject = _SUBJECT.match(before) and (not m.group().isascii() or _PREDICATE.match(clause, m.end()))
        found.append((m.start(), a, bool(subject or _TOPIC.search(before[-30:]))))
        leads[_VERB_SEP.match(clause, m.end()).end()] = len(found) - 1
    return found, leads, colon, last


def _owner(c: Cand, mentions: list[tuple[int, str, bool]], current: str | None, base: str | None) -> str | None:
    """The aspect a score belongs to: the label before it in its clause, else what the line is
    about; an unlabelled name before it gets it only when it is the one aspect in sight."""
    prev = [m for m in mentions if m[0] < c.start]
    plain = {a for _, a, labelled in mentions if not labelled}
    alone = len(plain) == 1 and not any(m[2] for m in mentions)
    if prev and prev[-1][2]:
        return prev[-1][1]
    if prev:
        a = prev[-1][1]
        if base is None:
            return a if alone else None
        return base if a == base else None
    if current is not None:
        return current
    return plain.pop() if alone else None


def _read_line(line: str, base: str | None, key: tuple[str, int] | None, found: dict[str, list[Cand]],
               whys: dict[str, str], scale: float) -> set[str]:
    """Give each score on the line to its aspect; returns the aspects that got one."""
    current, holds, pending, got, last = base, True, False, set(), None
    body = line[key[1]:] if key else line
    for start, clause, sentence_ends in _clauses(body):
        first = key is not None and start == 0
        mentions: list[tuple[int, str, bool]] = [(-1, key[0], True)] if first else []
        lead_at = {0} if first else set()
        if pending:
            lead_at.add(len(clause) - len(clause.lstrip(" \"'*([{")))
        if _RELATIVE.match(clause):  # "…than its correctness, which I'd put at 6/10"
            current, holds = last, False
        more, leads, colon, named = _mentions(clause)
        last = named or last
        mentions += more
        cands = candidates(clause, lead_at | set(leads), scale)
        for c in cands:  # a name with its value right after it is a label
            if c.start in leads:
                i = mentions.index(more[leads[c.start]])
                mentions[i] = (*mentions[i][:2], True)
        for c in cands:
            owner = _owner(c, mentions, current, base)
            if owner:
                found.setdefault(owner, []).append(c)
                got.add(owner)
                if first and c.start == 0:
                    whys[owner] = clause[c.end:].lstrip(" -–—:,.;)]|") or body[len(clause):].lstrip(" -–—:,.;)]|")
        labelled = [m for m in mentions if m[2]]
        if labelled:
            current, holds = labelled[-1][1], colon or labelled[-1][0] == -1
        if sentence_ends and not holds:  # "its accuracy is high, 9/10." ends here
            current, holds = base, True
        pending = _ends_at_label(clause, labelled, cands)
    return got


def _ends_at_label(clause: str, labelled: list[tuple[int, str, bool]], cands: list[Cand]) -> bool:
    """True when the clause ends with a label and no value ("**Helpfulness** — 8")."""
    if not labelled or cands:
        return False
    if labelled[-1][0] == -1:
        return not clause.strip(" \"'*`([{")
    tail = clause[labelled[-1][0]:]
    return NOUN_RE.sub("", tail, count=1).strip(" \"'*`([{:=|") == ""


def _read_tables(lines: list[str], found: dict[str, list[Cand]], scale: float) -> set[int]:
    """Scores from markdown tables (aspect per row or per column); returns the lines used."""
    used: set[int] = set()
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith("|"):
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].lstrip().startswith("|"):
            j += 1
        used.update(range(i, j))
        rows = [[c.strip() for c in lines[k].strip().strip("|").split("|")] for k in range(i, j)
                if not _SEP_ROW.match(lines[k])]
        has_head = j - i > 1 and bool(_SEP_ROW.match(lines[i + 1]))
        _table(rows[0] if has_head else None, rows[1:] if has_head else rows, found, scale)
        i = j
    return used


def _table(head: list[str] | None, body: list[list[str]], found: dict[str, list[Cand]], scale: float) -> None:
    def add(aspect: str, cell: str) -> None:
        cands = value_candidates(cell, scale)
        if cands:
            found.setdefault(aspect, []).extend(cands)

    score_col = next((k for k, c in enumerate(head or []) if _SCORE_HEAD.search(c)), None)
    cols = {k: aspect_name(c) for k, c in enumerate(head or []) if aspect_name(c)}
    if cols and len(body) == 1:  # aspects across the head, one row of scores
        for k, a in cols.items():
            if k < len(body[0]):
                add(a, body[0][k])
        return
    for row in body:
        k = next((k for k, c in enumerate(row) if aspect_name(c)), None)
        if k is None:
            continue
        col = score_col if score_col is not None and score_col != k else k + 1
        if col < len(row):
            add(aspect_name(row[k]), row[col])


def collect_text(text: str) -> dict[str, tuple[float | None, str, str]]:
    """aspect → (score, what the text said, rationale) for every aspect the text scores; the
    score is None where its candidates are invalid or disagree."""
    text = normalise(text)
    scale, lines = declared_scale(text), text.splitlines()
    found: dict[str, list[Cand]] = {}
    whys: dict[str, str] = {}
    in_table = _read_tables(lines, found, scale)
    section, scored = None, False
    for i, line in enumerate(lines):
        if i in in_table or not line.strip():
            section = None if (i in in_table or scored) else section
            continue
        key = _line_key(line)
        if key is None and _ends_section(line):
            section = None
        got = _read_line(line, key[0] if key else section, key, found, whys, scale)
        if key:
            section, scored = (None, False) if key[0] in got else (key[0], False)
        elif section in got:
            scored = True
    return {a: (*choose(c), whys.get(a, "")) for a, c in found.items()}
