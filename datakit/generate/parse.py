"""Parsing teacher output: numbered task lists and instance JSON, robustly.

Teachers wrap lists in chatter, number them in many styles ("1.", "1)", "(1)", "Task 1:", "1、",
"第1条：", "**1.**", "一、", "### 9.", "**Task 9:**"), bullet them, label them with bold
categories, put example inputs under them, repeat the template's labels, and run out of tokens
mid-item. The parsers take what is usable and say nothing was found rather than guess. Task
lists are read in :mod:`datakit.generate.task_list`.
"""

from __future__ import annotations

import json
import re

from datakit.generate.task_list import TaskItem, parse_task_items, parse_task_list

__all__ = ["TaskItem", "parse_instance", "parse_json_object", "parse_task_items", "parse_task_list"]

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
