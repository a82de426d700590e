"""Rule filters for instructions: cheap checks with a reason code each.

PLACEHOLDER (minimal); the curation work extends it (language share, repeated n-grams) and
keeps this API: ``RuleFilter(config).check(text) -> list[Verdict]``, one verdict per rule.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from datakit.records import Verdict

# Things a text-only model cannot do (self-instruct's idea; our own list, en and zh).
DEFAULT_BLACKLIST = (
    "image", "images", "picture", "pictures", "photo", "graph", "graphs", "draw", "plot",
    "video", "audio", "music", "sound", "flowchart", "diagram", "map", "file", "files",
    "go to", "record a", "图片", "图像", "照片", "画一", "绘制", "视频", "音频", "音乐", "流程图",
)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def count_words(text: str) -> int:
    """Words for length bounds: each CJK character counts as one word, other words as one."""
    cjk = len(_CJK.findall(text))
    rest = _CJK.sub(" ", text)
    return cjk + len(_WORD.findall(rest))


@dataclass(frozen=True)
class RulesConfig:
    min_words: int = 3
    max_words: int = 150
    blacklist: tuple[str, ...] = DEFAULT_BLACKLIST


class RuleFilter:
    def __init__(self, config: RulesConfig | None = None):
        self.config = config or RulesConfig()
        words = [re.escape(w) for w in self.config.blacklist]
        ascii_words = [w for w in words if w.isascii()]
        other = [w for w in words if not w.isascii()]
        parts = []
        if ascii_words:
            parts.append(r"\b(?:" + "|".join(ascii_words) + r")\b")
        if other:
            parts.append("(?:" + "|".join(other) + ")")
        self._blacklist = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def check(self, text: str) -> list[Verdict]:
        c = self.config
        out = []
        n = count_words(text)
        if n < c.min_words:
            out.append(Verdict("length", False, n, "too_short"))
        elif n > c.max_words:
            out.append(Verdict("length", False, n, "too_long"))
        else:
            out.append(Verdict("length", True, n))
        m = self._blacklist.search(text) if self._blacklist else None
        out.append(Verdict("blacklist", m is None, None, None if m is None else "blacklisted",
                           {"match": m.group(0)} if m else None))
        stripped = text.strip()
        first = stripped[:1]
        bad_start = bool(first) and (unicodedata.category(first).startswith("P") or
                                     unicodedata.category(first).startswith("S"))
        out.append(Verdict("punct_start", not bad_start, None, "starts_with_punctuation" if bad_start else None))
        nonprint = any(not ch.isprintable() and ch not in "\n\t" for ch in text)
        out.append(Verdict("non_printable", not nonprint, None, "non_printable" if nonprint else None))
        return out
