"""Prompt templates: plain files in ``prompts/``, versioned by content hash.

Templates use ``string.Template`` placeholders (``$name`` / ``${name}``), so task text full of
braces or dollar signs passes through untouched. The template's name and sha256 go into every
record's lineage.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from datakit.config import PROMPTS_DIR
from datakit.errors import UserError
from datakit.records import sha256_text


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    sha256: str

    def render(self, **values: str) -> str:
        try:
            return string.Template(self.text).substitute(**values)
        except KeyError as e:
            raise UserError(f"template needs a value for {e}", path=f"prompts/{self.name}.txt") from None

    def lineage(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256}


@lru_cache(maxsize=None)
def load_prompt(name: str, folder: str | None = None) -> Prompt:
    path = Path(folder) if folder else PROMPTS_DIR
    path = path / f"{name}.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("prompt template not found", path=str(path)) from None
    return Prompt(name, text, sha256_text(text))
