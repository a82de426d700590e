"""Seed tasks in the self-instruct schema, loaded and validated with file:line:field errors.

One JSON object per line::

    {"id": "seed_en_001", "name": "haiku_about_rain", "instruction": "...",
     "instances": [{"input": "", "output": "..."}], "is_classification": false}

``--seeds`` takes a file or a folder (every ``*.jsonl`` in it, sorted by name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datakit.errors import UserError
from datakit.records import read_jsonl


@dataclass(frozen=True)
class SeedTask:
    id: str
    name: str
    instruction: str
    instances: tuple[tuple[str, str], ...]
    is_classification: bool
    source: str


def _check(row: dict, path: Path, line: int) -> SeedTask:
    def err(field: str, msg: str) -> UserError:
        return UserError(msg, path=str(path), line=line, field=field)

    for key, kind in (("id", str), ("name", str), ("instruction", str), ("instances", list),
                      ("is_classification", bool)):
        if key not in row:
            raise err(key, "missing")
        if not isinstance(row[key], kind):
            raise err(key, f"expected {'true/false' if kind is bool else kind.__name__}, got {type(row[key]).__name__}")
    if not row["id"].strip():
        raise err("id", "must not be empty")
    if not row["instruction"].strip():
        raise err("instruction", "must not be empty")
    if not row["instances"]:
        raise err("instances", "needs at least one {input, output}")
    insts = []
    for i, inst in enumerate(row["instances"]):
        if not isinstance(inst, dict):
            raise err(f"instances[{i}]", "expected an object with input and output")
        for k in ("input", "output"):
            if not isinstance(inst.get(k), str):
                raise err(f"instances[{i}].{k}", "missing or not text")
        if not inst["output"].strip():
            raise err(f"instances[{i}].output", "must not be empty")
        insts.append((inst["input"], inst["output"]))
    return SeedTask(row["id"], row["name"], row["instruction"].strip(), tuple(insts),
                    row["is_classification"], f"{path}:{line}")


def seed_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise UserError("no *.jsonl seed files in this folder", path=str(path))
        return files
    if not path.exists():
        raise UserError("seed file not found", path=str(path))
    return [path]


def load_seeds(path: str | Path) -> list[SeedTask]:
    """Load and validate every seed task under ``path``; ids must be unique across files."""
    seeds: list[SeedTask] = []
    seen: dict[str, str] = {}
    for f in seed_files(path):
        n = 0
        for line_no, row in _numbered(f):
            task = _check(row, f, line_no)
            if task.id in seen:
                raise UserError(f"duplicate id {task.id!r} (first at {seen[task.id]})", path=str(f),
                                line=line_no, field="id")
            seen[task.id] = task.source
            seeds.append(task)
            n += 1
        if n == 0:
            raise UserError("no seed tasks in this file", path=str(f))
    return seeds


def _numbered(path: Path):
    """(line number, object) pairs; line numbers count blank lines too, as editors do."""
    text = None
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError("not UTF-8 text", path=str(path), line=raw[:e.start].count(b"\n") + 1) from None
    except OSError as e:
        raise UserError(f"cannot read ({e.strerror})", path=str(path)) from None
    numbers = [i + 1 for i, line in enumerate(text.split("\n")) if line.strip()]
    rows = list(read_jsonl(path, tolerate_torn_tail=False))
    return zip(numbers, rows)
