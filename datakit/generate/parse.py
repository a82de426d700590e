"""Parsing teacher output: numbered task lists and instance JSON, robustly.

Teachers (small local ones especially) wrap lists in chatter, number them in many styles
("1.", "1)", "(1)", "Task 1:", "1、", "第1条：", "**1.**", "一、"), bullet them, repeat the
template's labels, and run out of tokens mid-item. The parsers take what is usable and say
nothing was found rather than guess.
"""

from __future__ import annotations

import json
import re

_CN_NUM = "一二三四五六七八九十百零〇"
_ITEM = re.compile(
    r"^\s*(?:[-*•·]\s+)?(?:\*\*|__)?\s*"
    r"(?:(?:task|instruction|prompt|question|任务|指令|问题)\s*#?\s*)?"
    r"(?:第\s*)?[(（\[]?\s*(?P<num>\d{1,3}|[" + _CN_NUM + r"]{1,3})\s*[)）\]]?\s*(?:条|个|题)?\s*"
    r"(?P<sep>[.)）:：、．]|\s-\s)\s*(?:\*\*|__)?\s*(?P<text>.*)$",
    re.IGNORECASE)
_BULLET = re.compile(r"^\s*[-*•·]\s+(?P<text>\S.*)$")
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:task|instruction|指令|任务)\s*[:：]\s*(?:\*\*)?\s*", re.IGNORECASE)
_STOP_LABEL = re.compile(r"^\s*(?:\*\*)?(?:input|output|example|answer|response|solution|输入|输出|示例|例子|答案|回答)"
                         r"\s*[:：]", re.IGNORECASE)


def _clean(text: str) -> str:
    text = _LABEL.sub("", text.strip())
    text = text.strip().strip("*_`").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”「":
        text = text[1:-1].strip()
    if len(text) >= 2 and text[0] in "“「" and text[-1] in "”」":
        text = text[1:-1].strip()
    return re.sub(r"\s+", " ", text)


def parse_task_list(text: str | None, *, truncated: bool = False) -> list[str]:
    """Instructions from a numbered (or bulleted) list; chatter before, between and after is
    ignored. A line directly under an unfinished item (no blank line, the item not ending a
    sentence, the line not a label like ``Input:``) continues it. When ``truncated`` (the answer hit max_tokens) the last item is dropped: it may be cut."""
    if not text:
        return []
    items: list[list[str]] = []
    current: list[str] | None = None
    numbered_seen = any(_ITEM.match(line) for line in text.splitlines())
    for line in text.splitlines():
        if not line.strip():
            current = None
            continue
        m = _ITEM.match(line) if numbered_seen else _BULLET.match(line)
        if m:
            current = [m.group("text")]
            items.append(current)
        elif _STOP_LABEL.match(line):
            current = None
        elif current is not None and not current[-1].rstrip().rstrip("*_\"'”」").endswith(_TERMINAL):
            current.append(line.strip())
        else:
            current = None
    if truncated and items:
        items.pop()
    out = []
    for parts in items:
        t = _clean(" ".join(parts))
        if t:
            out.append(t)
    return out


_TERMINAL = tuple(".!?。！？…")
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def parse_json_object(text: str | None) -> dict | None:
    """The first JSON object in ``text``: the whole text, a fenced block, or the outermost
    ``{...}`` inside prose. None when there is none."""
    if not text:
        return None
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start = text.find("{")
    if start >= 0:
        candidates.append(text[start:text.rfind("}") + 1])
    dec = json.JSONDecoder()
    for c in candidates:
        try:
            obj = json.loads(c)
        except ValueError:
            i = c.find("{")
            if i < 0:
                continue
            try:
                obj, _ = dec.raw_decode(c[i:])
            except ValueError:
                continue
        if isinstance(obj, dict):
            return obj
    return None


def parse_instance(text: str | None) -> tuple[str, str] | None:
    """(input, output) from an instance answer, or None when it has no usable output."""
    obj = parse_json_object(text)
    if obj is None:
        return None
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    out = lowered.get("output", lowered.get("输出", lowered.get("answer")))
    inp = lowered.get("input", lowered.get("输入", ""))
    if isinstance(out, (int, float, bool)):
        out = str(out)
    if isinstance(out, (list, dict)):
        out = json.dumps(out, ensure_ascii=False)
    if isinstance(inp, (list, dict)):
        inp = json.dumps(inp, ensure_ascii=False)
    if inp is None:
        inp = ""
    if not isinstance(out, str) or not out.strip() or not isinstance(inp, str):
        return None
    return inp.strip(), out.strip()
