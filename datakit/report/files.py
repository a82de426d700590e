"""Reading a run directory: a streaming JSONL reader and where each stage's files are."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from datakit.errors import UserError

# Files any datakit stage writes into a run directory; one of them makes a folder a run.
KNOWN_FILES = ("records.jsonl", "rejected.jsonl", "state.json", "config.json", "stages.jsonl",
               "candidates.jsonl", "judgements.jsonl", "judged.jsonl")
CARD_DIR = "card"
Progress = Callable[[str, int, int], None]  # (what, done, total) in bytes


def iter_jsonl(path: Path, what: str = "", progress: Progress | None = None,
               every: int = 4096) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSONL file one line at a time (constant memory).

    Like :func:`datakit.records.read_jsonl`: a torn last line (no newline, cut by kill -9) is
    skipped, any other bad line is a :class:`UserError` naming ``file:line``."""
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            done += len(line)
            if progress is not None and i % every == 0:
                progress(what or path.name, done, total)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                if not line.endswith(b"\n"):
                    return
                raise UserError(f"not valid JSON ({getattr(e, 'msg', 'not valid UTF-8')})",
                                path=str(path), line=i) from None
            if not isinstance(obj, dict):
                raise UserError(f"expected a JSON object, got {type(obj).__name__}", path=str(path), line=i)
            yield obj
    if progress is not None:
        progress(what or path.name, total, total)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is absent; a broken one is a one-line error."""
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError("not valid JSON", path=str(path)) from None
    return obj if isinstance(obj, dict) else None


def train_dirs(run: Path) -> list[Path]:
    """``train*`` folders of the run (validation runs), by name."""
    return sorted(p for p in run.iterdir() if p.is_dir() and p.name.startswith("train"))


def check_run_dir(run: Path) -> None:
    """Raise a one-line UserError unless ``run`` is a folder with a datakit artefact in it."""
    if not run.exists():
        raise UserError("run directory not found", path=str(run))
    if not run.is_dir():
        raise UserError("not a folder (give a run directory)", path=str(run))
    if any((run / f).is_file() for f in KNOWN_FILES):
        return
    if any((d / "metrics.jsonl").is_file() or (d / "summary.json").is_file() for d in train_dirs(run)):
        return
    raise UserError("not a run directory (no records.jsonl and no other datakit file)", path=str(run))


def removed_files(run: Path, max_depth: int = 2) -> list[Path]:
    """Curation outputs (``*.removed.jsonl`` / ``removed.jsonl``) under the run, not in the card."""
    out = []
    for root, dirs, files in os.walk(run):
        rel = Path(root).relative_to(run)
        dirs[:] = sorted(d for d in dirs if d != CARD_DIR and not d.startswith(".") and len(rel.parts) < max_depth)
        out += [Path(root) / f for f in sorted(files) if f.endswith("removed.jsonl")]
    return out


def kept_file_of(removed: Path) -> Path | None:
    """The file of kept rows written beside a ``*.removed.jsonl`` (None for a folder output)."""
    name = removed.name
    if name == "removed.jsonl" or not name.endswith(".removed.jsonl"):
        return None
    kept = removed.with_name(name[: -len(".removed.jsonl")])
    return kept if kept.is_file() else None


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for line in f:
            n += bool(line.strip())
    return n
