"""Task lists as teachers write them: find the items, then the one instruction in each.

An answer is read as a list of items. An item starts at a number in any style (``1.``, ``1)``,
``(1)``, ``[1]``, ``1、``, ``一、``, ``第1条：``, ``Task 1:``, ``任务1：``, ``**1.**``), also inside a
markdown heading (``### 9. …``, ``## Task 9``) or in bold (``**Task 9:**``). Bullets (``-``,
``*``, ``•``) start items only when nothing in the answer is numbered; then a bullet that is only
a bold or colon-ended title over deeper bullets is a category, and the bullets under it are the
items. Lines outside items are chatter: intros, outros, unnumbered headings (category
headings too), the code fence around a whole list. Numbering may restart; it is not checked.

In an item, the instruction is the item's own text with its markers and labels taken off (a
bold category label before a colon or dash, ``**Creative Writing**: …``; a ``Task:``/``指令：``
field label; a short category in brackets after the last sentence, ``… (Science)``; leading
emoji; bold markers; quotes around the whole task; ``>`` quote marks), joined with the lines that continue
that paragraph (a sentence wrapped onto the next line, lines indented under the item, lines under
a heading). When the item's text is only a title (``### Task 9: Creative Writing``,
``9. **Data Extraction**``, ``## Task 9``, a short Title-Case or Chinese phrase) and a paragraph
follows, that paragraph is the instruction; an ``Instruction:``/``Task:``/``指令：`` field under
the item wins over both.

Everything else in an item is its example material, never a task of its own and never part of
the instruction: the lines from an example label on (``Input:``, ``Example:``, ``Output:``,
``例如：``, ``输入：`` …), sub-bullets and nested numbered lists (one number is one task), fenced
code, a quoted line, and whatever follows an instruction that ends with a colon. It is kept in
``TaskItem.example``. Category fields (``Category:``, ``类别：``) are dropped.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from dataclasses import dataclass, field

_CN = "一二三四五六七八九十"
_NUM = r"(?:\d{1,3}|[" + _CN + r"]{1,3})"
_MARKER = re.compile(
    r"^(?P<indent>[ \t]*)(?P<hash>#{1,6}[ \t]+)?(?:[-*•·+][ \t]+)?(?P<bo>\*\*)?[ \t]*(?:"
    r"(?:task|instruction|prompt|question|任务|指令|问题|题目)[ \t]*#?[ \t]*\d{1,3}"
    r"(?:[ \t]*[(（][^()（）\n]{1,40}[)）])?[ \t]*(?:[.:：、．)）](?!\d)|[ \t]+[-–—](?=[ \t])|(?=\*\*)|$)"
    r"|第[ \t]*" + _NUM + r"[ \t]*(?:[条个题项][ \t]*[.:：、．]?|[.:：、．])"
    r"|[(（\[][ \t]*" + _NUM + r"[ \t]*[)）\]]"
    r"|" + _NUM + r"[ \t]*(?:[.:](?!\d)|[)）：、．]|[ \t][-–—](?=[ \t]))"
    r")[ \t]*(?P<bc>\*\*)?[ \t]*(?P<text>.*)$", re.IGNORECASE)
_BULLET = re.compile(r"^(?P<indent>[ \t]*)(?:[-*•·+])[ \t]+(?P<bo>)(?P<bc>)(?P<hash>)(?P<text>\S.*)$")
_HEADING = re.compile(r"^[ \t]*#{1,6}(?:[ \t]|$)")
_BLANK_OR_RULE = re.compile(r"^[ \t]*(?:([-*_=])[ \t]*\1[ \t]*\1[ \t\-*_=]*)?$")
_FENCE = re.compile(r"^[ \t]*(?:```|~~~)[ \t]*(?P<lang>[\w+#.-]*)")
_BOLD_LABEL = re.compile(r"^\*\*[ \t]*(?P<label>[^*\n]{1,60}?)[ \t]*"
                         r"(?:[:：][ \t]*\*\*|\*\*[ \t]*(?:[:：]|[-–—]{1,2}(?=\s)))[ \t]*(?P<rest>.*)$")
_BOLD_ALL = re.compile(r"^\*\*(?P<inner>[^*]+)\*\*(?:[ \t]*[(（][^()（）]{1,40}[)）])?$")
_TAIL_LABEL = re.compile(r"(?<=[.!?。！？])[ \t]*[*_]?[(（][^()（）.!?。！？]{1,30}[)）][*_]?$")
_QUOTE_MARK = re.compile(r"^[ \t]*>[ \t]?")
_FIELD = re.compile(r"^[ \t]*(?:[-*•·+>][ \t]+)?(?:\*\*|__|\*|_)?[ \t]*(?P<label>[^:：*_\n]{1,24}?)[ \t]*"
                    r"(?:\*\*|__|\*|_)?[ \t]*[:：][ \t]*(?:\*\*|__|\*|_)?[ \t]*(?P<value>.*)$")
_EG = re.compile(r"^[ \t]*(?:[-*•·+>][ \t]+)?(?:e\.g\.|for example|for instance|例如|比如|举例)"
                 r"[ \t]*[,，:：]?", re.IGNORECASE)
_CHATTER = re.compile(r"^[ \t]*(?:i hope|hope (?:these|this|that)|let me know|feel free|these (?:tasks|\d+|new)|"
                      r"each (?:of these|task)|note:|希望|以上|这些任务|如需|如果(?:你|您)(?:需要|还)|祝你)",
                      re.IGNORECASE)
_QUOTED = re.compile(r"^[\"“「'].*[\"”」']$")
_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")

_INSTRUCTION_LABELS = {"task", "instruction", "instructions", "prompt", "question", "任务", "指令", "问题",
                       "题目", "任务描述", "指令内容"}
_EXAMPLE_LABELS = {"input", "inputs", "output", "outputs", "example", "examples", "example input",
                   "example output", "sample", "sample input", "sample output", "answer", "response",
                   "solution", "expected output", "context", "text", "passage", "sentence", "data",
                   "输入", "输出", "示例", "例子", "样例", "例如", "比如", "答案", "回答", "文本", "句子",
                   "示例输入", "示例输出", "输入示例", "输出示例", "参考答案"}
_META_LABELS = {"category", "type", "task type", "domain", "skill", "topic", "difficulty", "level", "theme",
                "genre", "format", "language", "tags", "tag", "类别", "类型", "任务类型", "领域", "难度",
                "主题", "语言", "分类", "标签"}
_TERMINAL = tuple(".!?。！？…")


@dataclass
class TaskItem:
    """One task of a list: its instruction, and the example material written under it."""
    instruction: str
    example: str = ""


@dataclass
class _Item:
    indent: int
    head: str               # the item's own text, markers and labels off
    strong_title: bool      # a heading, or all bold: may be a title over a paragraph
    lines: list[str] = field(default_factory=list)
    example: list[str] = field(default_factory=list)
    instruction_field: list[str] | None = None
    in_example: bool = False


def _label_kind(label: str) -> str | None:
    key = re.sub(r"[ \t]*\d+$", "", label.strip().lower())
    for kind, names in (("instruction", _INSTRUCTION_LABELS), ("example", _EXAMPLE_LABELS),
                        ("meta", _META_LABELS)):
        if key in names:
            return kind
    return None


def _field(line: str) -> tuple[str, str] | None:
    """(kind, value) for a field line such as ``**Input:** …``, ``- Category: …``, ``例如：…``."""
    if _EG.match(line):
        return "example", _EG.sub("", line, count=1).strip()
    m = _FIELD.match(line)
    if not m:
        return None
    kind = _label_kind(m.group("label"))
    return (kind, m.group("value").strip()) if kind else None


def _finished(text: str) -> bool:
    return text.rstrip().rstrip("*_\"'”」)）").endswith(_TERMINAL)


def _ends_colon(text: str) -> bool:
    return text.rstrip().rstrip("*_").endswith((":", "："))


def _join(parts: list[str]) -> str:
    out = ""
    for p in (p.strip() for p in parts):
        if out and p:
            out += "" if _CJK.match(out[-1]) and _CJK.match(p[0]) else " "
        out += p
    return out


def _drop_symbols(text: str) -> str:
    """The text without leading emoji and other pictographs (``📝 **Writing**: …``)."""
    i = 0
    while i < len(text) and (text[i].isspace() or text[i] == "\ufe0f"
                             or unicodedata.category(text[i]) in ("So", "Cf")):
        i += 1
    return text[i:]


def _new_item(m: re.Match) -> _Item:
    """An item from its marker line: the head text with labels off, and whether it is a title."""
    text = _drop_symbols(m.group("text")).strip()
    if bool(m.group("bo")) != bool(m.group("bc")):
        text = "**" + text    # ``**9. Creative Writing**`` or ``9. **Creative Writing**: …``
    strong = bool(m.group("hash"))
    indent = len(m.group("indent").expandtabs(4))
    lab = _BOLD_LABEL.match(text)
    if lab:
        kind = _label_kind(lab.group("label"))
        rest = lab.group("rest").strip()
        if kind == "meta" or kind == "example":
            return _Item(indent, "", True, in_example=kind == "example", example=[rest] if rest else [])
        if rest or kind == "instruction":
            return _Item(indent, rest, strong)
        return _Item(indent, lab.group("label"), True)      # ``**Creative Writing:**`` alone
    whole = _BOLD_ALL.match(text)
    if whole:
        text, strong = whole.group("inner").strip(), True
    f = _field(text)
    if f and f[0] == "instruction":
        text = f[1]
    elif f:
        return _Item(indent, "", True, in_example=f[0] == "example", example=[f[1]] if f[1] else [])
    return _Item(indent, text, strong)


def _is_title(item: _Item) -> bool:
    """Whether the head is only a title over the paragraph in ``item.lines``."""
    head, first = item.head.strip().strip("*").strip(), item.lines[0].strip()
    if not head:
        return True
    if _finished(head) or _ends_colon(head):
        return False
    if item.strong_title:
        return True
    words = head.split()
    if _CJK.search(head):
        return len(head) <= 8 and not re.search(r"[，。、；：,.;:]", head) and bool(_CJK.match(first))
    return (len(words) <= 5 and all(w[0].isupper() or w.lower() in ("and", "of", "&", "for", "the", "a")
                                    for w in words) and (first[:1].isupper() or bool(_CJK.match(first))))


def _instruction(item: _Item) -> str:
    if item.instruction_field:
        text = _join(item.instruction_field)
    elif item.lines and _is_title(item):
        text = _join(item.lines)
    else:
        text = _join([item.head] + item.lines)
    return _clean(text)


def _clean(text: str) -> str:
    text = _TAIL_LABEL.sub("", text.replace("**", "").strip())
    f = _field(text)
    if f and f[0] == "instruction":
        text = f[1]
    for a, b in (("*", "*"), ("_", "_"), ("`", "`"), ('"', '"'), ("'", "'"), ("“", "”"), ("「", "」")):
        if len(text) >= 2 and text[0] == a and text[-1] == b and b not in text[1:-1]:
            text = text[1:-1].strip()
    return re.sub(r"\s+", " ", text).strip()


def _wants_body(item: _Item) -> bool:
    """An item still waiting for its instruction: only a title so far, or nothing."""
    return (not item.lines and not item.instruction_field and not item.in_example
            and (not item.head or (item.strong_title and not _finished(item.head)
                                   and not _ends_colon(item.head))))


def _keeps_open(item: _Item) -> bool:
    """Whether the item goes on past a blank line."""
    last = (item.lines or [item.head])[-1]
    return _wants_body(item) or item.in_example or _ends_colon(last)


class _Reader:
    """Walks the lines once, keeping the item being read (``cur``) and the fence state."""

    def __init__(self, numbered: bool):
        self.numbered = numbered
        self.items: list[_Item] = []
        self.cur: _Item | None = None
        self.gap = False            # a blank line since the last line of ``cur``
        self.fence: str | None = None   # "wrap" (around the list), "example" (code of an item), "skip"

    def marker(self, line: str) -> re.Match | None:
        return _MARKER.match(line) if self.numbered else (_MARKER.match(line) or _BULLET.match(line))

    def feed(self, line: str) -> None:
        if self.fence in ("example", "skip"):
            if _FENCE.match(line):
                self.fence = None
            elif self.fence == "example":
                self.cur.example.append(line.rstrip())
            return
        f = _FENCE.match(line)
        if f:
            self.on_fence(f.group("lang").lower())
        elif _BLANK_OR_RULE.match(line):
            self.gap = True
            if self.cur and not _keeps_open(self.cur):
                self.cur = None
        else:
            self.on_text(line)
            self.gap = False

    def on_fence(self, lang: str) -> None:
        if self.fence == "wrap" and not lang:
            self.fence = None
        elif self.cur is not None:
            self.fence, self.cur.in_example = "example", True
        elif self.fence is None and lang in ("", "markdown", "md", "text", "txt", "plaintext"):
            self.fence = "wrap"
        else:
            self.fence = "skip" if self.fence is None else self.fence

    def on_text(self, line: str) -> None:
        cur, m = self.cur, self.marker(line)
        indent = len(line) - len(line.lstrip())
        if m and (cur is None or len(m.group("indent").expandtabs(4)) <= cur.indent):
            self.cur = _new_item(m)
            self.items.append(self.cur)
            return
        if _HEADING.match(line) or cur is None:
            self.cur = None       # an unnumbered (category) heading, or chatter
            return
        fld = _field(line)
        if fld:
            self.on_field(*fld)
        elif cur.in_example:
            cur.example.append(line.strip())
        elif m or _BULLET.match(line):
            self.on_nested(line, m or _BULLET.match(line))
        else:
            self.on_plain(line.strip(), indent > cur.indent)

    def on_field(self, kind: str, value: str) -> None:
        cur = self.cur
        if kind == "instruction" and cur.instruction_field is None and value:
            cur.instruction_field = [value]
        elif kind == "example":
            cur.in_example = True
            cur.example.append(value)

    def on_nested(self, line: str, m: re.Match) -> None:
        """A sub-bullet or nested number: the task under a bare title, else example material.
        In a bullet list, deeper bullets under a bare title are the category's tasks."""
        cur = self.cur
        if _wants_body(cur) and not self.numbered and cur.head:
            self.items.remove(cur)
            self.cur = _new_item(m)
            self.items.append(self.cur)
        elif _wants_body(cur):
            cur.lines.append(_new_item(m).head)
        else:
            cur.in_example = True
            cur.example.append(line.strip())

    def on_plain(self, s: str, indented: bool) -> None:
        cur = self.cur
        if _CHATTER.match(s):
            self.cur = None
        elif cur.instruction_field is not None:
            if not self.gap and not _finished(cur.instruction_field[-1]):
                cur.instruction_field.append(s)
            else:
                cur.in_example = True
                cur.example.append(s)
        elif _wants_body(cur) or (not self.gap and not cur.lines and _plain_title(cur, s)):
            cur.lines.append(s)
        elif _ends_colon((cur.lines or [cur.head])[-1]) or _QUOTED.match(s):
            cur.in_example = True
            cur.example.append(s)
        elif self.gap:
            self.cur = None
        elif indented or cur.strong_title or not _finished((cur.lines or [cur.head])[-1]):
            cur.lines.append(s)
        else:
            self.cur = None


def _plain_title(item: _Item, first: str) -> bool:
    probe = _Item(item.indent, item.head, item.strong_title, lines=[first])
    return _is_title(probe)


def parse_task_items(text: str | None, *, truncated: bool = False) -> list[TaskItem]:
    """The tasks of a list answer, each with its example material (see the module docstring).
    When ``truncated`` (the answer hit max_tokens) the last item is dropped: it may be cut."""
    if not text:
        return []
    lines = text.splitlines()
    reader = _Reader(numbered=any(_MARKER.match(line) for line in lines))
    for line in lines:
        reader.feed(_QUOTE_MARK.sub("", line.expandtabs(4)))
    items = reader.items[:-1] if truncated else reader.items
    out = []
    for it in items:
        instruction = _instruction(it)
        if instruction:
            example = textwrap.dedent("\n".join(e for e in it.example if e.strip())).strip()
            out.append(TaskItem(instruction, example))
    return out


def parse_task_list(text: str | None, *, truncated: bool = False) -> list[str]:
    """The instructions of a list answer, in order; chatter ignored; [] when there is no list."""
    return [t.instruction for t in parse_task_items(text, truncated=truncated)]
