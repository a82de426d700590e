"""Personas: one-line descriptions of who asks, to widen what a teacher writes.

``datakit generate --personas FILE`` conditions every task-generation request on one persona
(``prompts/generate_tasks_persona.txt``), picked by an RNG seeded with
``(seed, round, request)`` like the demos, so a replayed round sends the same requests.

File formats (a file, or a folder of ``*.jsonl`` and ``*.txt`` files read in name order):

* JSONL, one persona a line: ``{"id": "p-en-001", "persona": "a night-shift nurse ...",
  "lang": "en"}``; ``id`` unique across the files, ``persona`` non-empty text, ``lang``
  optional.
* Plain text, one persona a line; blank lines and lines starting with ``#`` are skipped. The
  id is ``<file stem>:<line number>``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from datakit.errors import UserError

MAX_CHARS = 300


@dataclass(frozen=True)
class Persona:
    id: str
    text: str
    lang: str = ""


def _from_jsonl(path: Path, lines: list[str]) -> list[Persona]:
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UserError("not valid JSON", path=str(path), line=n) from None
        if not isinstance(row, dict):
            raise UserError("expected a JSON object", path=str(path), line=n)
        for key in ("id", "persona"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise UserError("missing or empty text", path=str(path), line=n, field=key)
        out.append(_checked(Persona(row["id"], row["persona"].strip(), str(row.get("lang") or "")), path, n))
    return out


def _from_text(path: Path, lines: list[str]) -> list[Persona]:
    return [_checked(Persona(f"{path.stem}:{n}", line.strip()), path, n)
            for n, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]


def _checked(p: Persona, path: Path, line: int) -> Persona:
    if "\n" in p.text or len(p.text) > MAX_CHARS:
        raise UserError(f"a persona is one line of at most {MAX_CHARS} characters", path=str(path),
                        line=line, field="persona")
    return p


def load_personas(path: str | Path) -> list[Persona]:
    """Every persona in a file or folder; errors name the file, line and field."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".txt"))
        if not files:
            raise UserError("no *.jsonl or *.txt persona files in this folder", path=str(path))
    elif path.exists():
        files = [path]
    else:
        raise UserError("personas file not found", path=str(path))
    personas: list[Persona] = []
    seen: dict[str, str] = {}
    for f in files:
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise UserError("not UTF-8 text", path=str(f)) from None
        for p in (_from_jsonl if f.suffix == ".jsonl" else _from_text)(f, lines):
            if p.id in seen:
                raise UserError(f"duplicate persona id {p.id!r} (also in {seen[p.id]})", path=str(f), field="id")
            seen[p.id] = str(f)
            personas.append(p)
    if not personas:
        raise UserError("no personas in it", path=str(path))
    return personas


def pick_persona(personas: list[Persona], seed: int, round_no: int, request: int) -> Persona:
    """The persona of one task request: a pure function of (seed, round, request), drawn from
    an RNG of its own so that the demos shown are those of the same run without personas."""
    return random.Random(f"{seed}:{round_no}:{request}:persona").choice(personas)
