"""The one record type every stage reads and writes, and its file formats.

A record is a task (instruction, input, output) plus everything needed to explain it later:
its lineage (which demos were shown, which teacher, model, prompt template and sampling
parameters made it), every filter's verdict, judge scores and candidate responses. Stages add
to a record; they never drop fields they do not know, so a record read from someone else's
file keeps its extra keys through datakit.

Files:

* JSONL logs are append-only. :class:`JsonlAppender` writes a batch of lines and fsyncs once
  per batch, so a crash loses at most the batch in flight and never corrupts what was synced.
  :func:`read_jsonl` tolerates a torn last line (a write cut off by kill -9) and reports any
  other bad line as ``file:line``.
* Every other file is written atomically (:func:`atomic_write_bytes`): a temporary file in the
  same folder, fsync, rename. Readers see the old file or the new one, never half of one.
* Parquet is read and written through pyarrow, with the same atomic rename.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from datakit.errors import UserError

CORE_FIELDS = ("id", "instruction", "input", "output")


@dataclass
class Verdict:
    """One filter's decision about one record: kept or not, its score and its reason code."""

    filter: str
    passed: bool
    score: float | None = None
    reason: str | None = None
    detail: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"filter": self.filter, "passed": self.passed, "score": self.score, "reason": self.reason}
        if self.detail:
            d["detail"] = self.detail
        return d


@dataclass
class Record:
    """A task and its lineage. ``status`` is ``accepted`` or ``rejected`` (then ``reason`` says why)."""

    id: str
    instruction: str
    input: str = ""
    output: str = ""
    is_classification: bool = False
    status: str = "accepted"
    reason: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    filters: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    judge: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The record as one JSON object (a shallow view: nested values are shared, not copied,
        since this is on the hot path of writing every record)."""
        d = {"id": self.id, "instruction": self.instruction, "input": self.input, "output": self.output,
             "is_classification": self.is_classification, "status": self.status, "reason": self.reason,
             "lineage": self.lineage, "filters": self.filters}
        if self.candidates:
            d["candidates"] = self.candidates
        if self.judge is not None:
            d["judge"] = self.judge
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: d[k] for k in known if k in d}
        kwargs.setdefault("id", make_id(d.get("instruction", ""), d.get("input", "")))
        kwargs.setdefault("instruction", "")
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def add_verdict(self, verdict: Verdict) -> None:
        self.filters.append(verdict.to_dict())
        if not verdict.passed and self.status == "accepted":
            self.status, self.reason = "rejected", verdict.reason or verdict.filter


def make_id(*parts: str, prefix: str = "r") -> str:
    """A short stable id from content, for records that arrive without one."""
    h = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]
    return f"{prefix}-{h}"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- atomic files

_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def dumps_line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"


# --------------------------------------------------------------------------- JSONL logs

def cut_torn_tail(path: str | os.PathLike) -> int:
    """Cut a last line that has no newline (a write that kill -9 cut off) from a log datakit
    appends to. Returns the number of bytes cut. Every append-only log is opened through this
    (:class:`JsonlAppender`), so the next row never lands glued to a torn one."""
    path = Path(path)
    try:
        f = open(path, "r+b")
    except FileNotFoundError:
        return 0
    with f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep, block = 0, 1 << 16
        pos = size
        while pos > 0:  # find the last newline, reading backwards a block at a time
            start = max(0, pos - block)
            f.seek(start)
            nl = f.read(pos - start).rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return size - keep


class JsonlAppender:
    """An append-only JSONL log; :meth:`write_batch` fsyncs once per batch. Opening it first cuts
    a torn last line left by a killed writer (:func:`cut_torn_tail`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cut_torn_tail(self.path)
        self._f = open(self.path, "ab")

    def write_batch(self, rows: Iterable[dict[str, Any]]) -> int:
        data = "".join(dumps_line(r) for r in rows).encode("utf-8")
        if data:
            self._f.write(data)
            self._f.flush()
            os.fsync(self._f.fileno())
        return len(data)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike, *, tolerate_torn_tail: bool = True) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSONL file.

    A last line without its newline is a write that kill -9 cut off: it is skipped when
    ``tolerate_torn_tail`` (logs datakit wrote itself). Any other line that is not a JSON
    object raises :class:`UserError` naming ``file:line``. Blank lines are skipped.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError("file not found", path=str(path)) from None
    except IsADirectoryError:
        raise UserError("is a folder, expected a .jsonl file", path=str(path)) from None
    except OSError as e:
        raise UserError(f"cannot read ({e.strerror})", path=str(path)) from None
    lines = raw.split(b"\n")
    torn = bool(lines and lines[-1].strip())  # the final chunk has no newline after it
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if i == last and torn and tolerate_torn_tail:
                return
            msg = getattr(e, "msg", "not valid UTF-8")
            raise UserError(f"not valid JSON ({msg})", path=str(path), line=i + 1) from None
        if not isinstance(obj, dict):
            raise UserError(f"expected a JSON object, got {type(obj).__name__}", path=str(path), line=i + 1)
        yield obj


def truncate_jsonl(path: str | os.PathLike, keep: "callable[[dict], bool]") -> int:
    """Atomically rewrite a JSONL log keeping the rows for which ``keep`` is true (and dropping
    a torn tail). Returns how many rows were dropped. Used by resume to cut a log back to the
    last committed step."""
    path = Path(path)
    if not path.exists():
        return 0
    rows = list(read_jsonl(path))
    kept = [r for r in rows if keep(r)]
    if len(kept) != len(rows) or not path.read_bytes().endswith(b"\n") and path.stat().st_size:
        atomic_write_text(path, "".join(dumps_line(r) for r in kept))
    return len(rows) - len(kept)


# --------------------------------------------------------------------------- tables

def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def read_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSONL or Parquet file of rows (dicts). Errors name the file (and line for JSONL)."""
    path = Path(path)
    if _is_parquet(path):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except FileNotFoundError:
            raise UserError("file not found", path=str(path)) from None
        except Exception as e:  # pyarrow raises several types for bad files
            raise UserError(f"cannot read Parquet ({str(e).splitlines()[0]})", path=str(path)) from None
    return list(read_jsonl(path, tolerate_torn_tail=False))


def write_table(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Write rows atomically as JSONL, or Parquet when the name ends in ``.parquet``."""
    path = Path(path)
    if _is_parquet(path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buf)
        atomic_write_bytes(path, buf.getvalue())
    else:
        atomic_write_text(path, "".join(dumps_line(r) for r in rows))


def read_records(path: str | os.PathLike) -> list[Record]:
    """Read records from a JSONL/Parquet file or a run directory (the committed rows of its
    ``records.jsonl``: a run interrupted mid-round and not resumed yet has rows past its last
    commit, which a resume would redo)."""
    path = Path(path)
    if path.is_dir():
        return committed_run_records(path)
    return _records_from_rows(read_table(path), path)


def committed_run_records(run_dir: str | os.PathLike) -> list[Record]:
    """Accepted records of a run directory's committed rounds (all of them when there is no
    state file, e.g. a folder made by hand). Rows past the last commit belong to a round that
    kill -9 interrupted; a resume redoes it."""
    run_dir = Path(run_dir)
    records_path = run_dir / "records.jsonl"
    if not records_path.exists():
        raise UserError("not a run directory (no records.jsonl)", path=str(run_dir))
    rows = list(read_jsonl(records_path))
    state_path = run_dir / "state.json"
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except ValueError:
            raise UserError("run state is not valid JSON; it was not written by datakit",
                            path=str(state_path)) from None
        if isinstance(state, dict) and "round" in state:
            rows = [r for r in rows if (r.get("lineage") or {}).get("round", 0) <= state["round"]]
    return _records_from_rows(rows, records_path)


def _records_from_rows(rows: list[dict[str, Any]], path: Path) -> list[Record]:
    out = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row.get("instruction"), str):
            raise UserError("missing or non-text 'instruction'", path=str(path), line=i,
                            field="instruction")
        out.append(Record.from_dict(_typed_row(row, path, i)))
    return out


def _typed_row(row: dict[str, Any], path: Path, line: int) -> dict[str, Any]:
    """``row`` with its core fields of the types a record needs: a null input or output is empty
    text, a numeric id becomes text; anything else of the wrong type is refused naming the field."""
    fixed = {}
    for key, kind in (("id", str), ("input", str), ("output", str), ("status", str), ("candidates", list),
                      ("filters", list), ("lineage", dict)):
        v = row.get(key)
        if key not in row or isinstance(v, kind):
            continue
        if v is None and key in ("input", "output"):
            fixed[key] = ""
        elif key == "id" and isinstance(v, int) and not isinstance(v, bool):
            fixed[key] = str(v)
        else:
            raise UserError(f"expected {'text' if kind is str else kind.__name__}, got {type(v).__name__}",
                            path=str(path), line=line, field=key)
    for k, c in enumerate(row.get("candidates") or []):
        if not isinstance(c, dict):
            raise UserError(f"expected an object, got {type(c).__name__}", path=str(path), line=line,
                            field=f"candidates[{k}]")
        for key, kind in (("id", str), ("output", str), ("judge", dict)):
            if c.get(key) is not None and not isinstance(c[key], kind):
                raise UserError(f"expected {'text' if kind is str else 'an object'}, got {type(c[key]).__name__}",
                                path=str(path), line=line, field=f"candidates[{k}].{key}")
    return {**row, **fixed} if fixed else row
