"""The viewer's index of a run: ``RUN/.view-index.sqlite``, built once and reused.

One row per record (``records.jsonl`` then ``rejected.jsonl``, committed rounds only) with what
the list filters on (status, reason, teacher, language, best judge score, curation removal) and
where the full line lives (file and byte offset), so a page is a SQL query and a record is one
read; the candidate and judgement lines of each record are indexed the same way; a trigram
full-text index (SQLite FTS5, which matches CJK text too) covers instruction, input and output.

The index is a cache keyed on the size and modification time of every file it reads; when one
changes it is rebuilt. Building runs in a background thread and commits every few thousand
records, so the first page is served while the rest is still being read; until the full-text
index is done, search falls back to a plain scan. A second viewer on the same run waits for the
first one's build (a flock on ``.view-index.lock``) instead of building it again.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from datakit.curate.rules import language_share
from datakit.errors import UserError

INDEX = ".view-index.sqlite"
LOCKFILE = ".view-index.lock"
VERSION = "2"
SOURCES = ("records.jsonl", "rejected.jsonl", "candidates.jsonl", "judgements.jsonl")
SRC = {name: k for k, name in enumerate(SOURCES)}
CHUNK = 2000

SCHEMA = """
create table meta(k text primary key, v text);
create table recs(n integer primary key, id text, src int, off int, len int, status text, reason text,
                  curation text, teacher text, lang text, score real, ncand int);
create table texts(n integer primary key, instruction text, input text, output text);
create index recs_id on recs(id);
create table sub(record_id text, src int, off int, len int);
create table cur(record_id text, reason text, duplicate_of text, similarity real, file text);
create virtual table fts using fts5(instruction, input, output, content='texts', content_rowid='n',
                                    tokenize='trigram');
"""


def removed_files(run: Path) -> list[Path]:
    """Curation outputs of removed records (``*removed.jsonl``) up to three folders down."""
    out = []
    for pattern in ("*removed.jsonl", "*/*removed.jsonl", "*/*/*removed.jsonl"):
        out += sorted(p for p in run.glob(pattern) if p.is_file())
    return out


def signature(run: Path) -> str:
    """What the index depends on: every source file's size and modification time."""
    parts = []
    for p in [run / n for n in (*SOURCES, "state.json")] + removed_files(run):
        try:
            st = p.stat()
            parts.append([str(p.relative_to(run)), st.st_size, st.st_mtime_ns])
        except FileNotFoundError:
            parts.append([str(p.relative_to(run)), None, None])
    return json.dumps([VERSION, parts])


def language(text: str) -> str:
    if language_share(text, "zh") >= 0.5:
        return "zh"
    return "en" if language_share(text, "en") >= 0.5 else "other"


def lines(path: Path, progress: "Progress | None" = None) -> Iterator[tuple[int, int, bytes]]:
    """(offset, length, line) of every complete line of a JSONL file (a torn tail is skipped)."""
    if not path.is_file():
        return
    with open(path, "rb") as f:
        off = 0
        for line in f:
            if not line.endswith(b"\n"):
                break
            if line.strip():
                yield off, len(line), line
            off += len(line)
            if progress is not None:
                progress.done_bytes += len(line)


class Progress:
    def __init__(self) -> None:
        self.phase, self.done_bytes, self.total_bytes, self.error = "starting", 0, 0, None
        self.started, self.finished = time.monotonic(), None

    def as_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "done_bytes": self.done_bytes, "total_bytes": self.total_bytes,
                "error": self.error, "seconds": round((self.finished or time.monotonic()) - self.started, 2)}


def _parse(line: bytes, path: Path, off: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError:
        raise ValueError(f"{path}: not valid JSON at byte {off}") from None
    if not isinstance(row, dict):
        raise ValueError(f"{path}: not a JSON object at byte {off}")
    return row


def _committed_round(run: Path) -> int | None:
    try:
        state = json.loads((run / "state.json").read_text(encoding="utf-8"))
        return state["round"] if isinstance(state, dict) and isinstance(state.get("round"), int) else None
    except (OSError, ValueError):
        return None


def _record_row(row: dict[str, Any], src: int, off: int, length: int) -> tuple:
    lin = row.get("lineage") if isinstance(row.get("lineage"), dict) else {}
    text = lambda k: row.get(k) if isinstance(row.get(k), str) else ""
    status = row.get("status") if row.get("status") in ("accepted", "rejected") else (
        "accepted" if src == 0 else "rejected")
    return (str(row.get("id")), src, off, length, status, row.get("reason"), lin.get("teacher"),
            language(text("instruction")), text("instruction"), text("input"), text("output"))


def _index_records(conn: sqlite3.Connection, run: Path, progress: Progress) -> None:
    last = _committed_round(run)
    for name in ("records.jsonl", "rejected.jsonl"):
        batch: list[tuple] = []
        for off, length, line in lines(run / name, progress):
            row = _parse(line, run / name, off)
            rnd = (row.get("lineage") or {}).get("round", 0) if isinstance(row.get("lineage"), dict) else 0
            if last is not None and isinstance(rnd, int) and rnd > last:
                continue  # a round that kill -9 cut off: every stage leaves it out
            batch.append(_record_row(row, SRC[name], off, length))
            if len(batch) >= CHUNK:
                _insert(conn, batch)
                batch = []
        _insert(conn, batch)


def _insert(conn: sqlite3.Connection, batch: list[tuple]) -> None:
    """Filter columns and texts in two tables: a list query scans a few MB, not every text."""
    if not batch:
        return
    first = conn.execute("select coalesce(max(n), 0) + 1 from recs").fetchone()[0]
    conn.executemany("insert into recs(n, id, src, off, len, status, reason, teacher, lang) values (?,?,?,?,?,?,?,?,?)",
                     [(first + k, *row[:8]) for k, row in enumerate(batch)])
    conn.executemany("insert into texts values (?,?,?,?)", [(first + k, *row[8:]) for k, row in enumerate(batch)])
    conn.commit()


def _index_judge(conn: sqlite3.Connection, run: Path, progress: Progress) -> None:
    """Where each record's candidate and judgement lines are, its number of candidates and its
    best pointwise score (the detail view merges them exactly, as ``judge`` does)."""
    subs: list[tuple] = []
    cands: dict[str, set[str]] = {}
    scores: dict[tuple[str, str], float | None] = {}
    for name in ("candidates.jsonl", "judgements.jsonl"):
        for off, length, line in lines(run / name, progress):
            row = _parse(line, run / name, off)
            rid = str(row.get("record_id"))
            subs.append((rid, SRC[name], off, length))
            if name == "candidates.jsonl":
                cands.setdefault(rid, set()).add(str(row.get("id")))
            elif row.get("kind") == "pointwise":
                v = row.get("verdict") or {}
                ok = v.get("status") in ("ok", "partial") and isinstance(v.get("score"), (int, float))
                scores[(rid, str(row.get("cand")))] = float(v["score"]) if ok else None
    conn.executemany("insert into sub values (?,?,?,?)", subs)
    best: dict[str, float] = {}
    for (rid, _), s in scores.items():
        if s is not None and s > best.get(rid, float("-inf")):
            best[rid] = s
    conn.executemany("update recs set score = ?, ncand = ? where id = ?",
                     [(best.get(rid), len(cands.get(rid, ())), rid) for rid in set(best) | set(cands)])
    conn.execute("create index sub_rid on sub(record_id)")
    conn.commit()


def _index_curation(conn: sqlite3.Connection, run: Path) -> None:
    rows = []
    for path in removed_files(run):
        for off, _, line in lines(path):
            row = _parse(line, path, off)
            sim = row.get("similarity")
            rows.append((str(row.get("id")), row.get("reason"), row.get("duplicate_of"),
                         sim if isinstance(sim, (int, float)) else None, str(path.relative_to(run))))
    conn.executemany("insert into cur values (?,?,?,?,?)", rows)
    conn.executemany("update recs set curation = ? where id = ?", [(r[1], r[0]) for r in rows])
    conn.execute("create index cur_rid on cur(record_id)")
    conn.execute("create index cur_dup on cur(duplicate_of)")
    conn.commit()


def _build(conn: sqlite3.Connection, run: Path, sig: str, progress: Progress) -> None:
    progress.total_bytes = sum((run / n).stat().st_size for n in SOURCES if (run / n).is_file())
    progress.phase = "records"
    _index_records(conn, run, progress)
    progress.phase = "judge"
    _index_judge(conn, run, progress)
    _index_curation(conn, run)
    for col in ("score", "lang", "teacher", "status, reason", "curation"):
        conn.execute(f"create index recs_{col.split(',')[0]} on recs({col})")
    progress.phase = "search"
    conn.execute("insert into fts(fts) values ('rebuild')")
    conn.execute("insert into meta values ('signature', ?)", (sig,))
    conn.commit()


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
    conn.execute("pragma journal_mode=wal")
    conn.execute("pragma synchronous=off")  # a cache: a crash mid-build means a rebuild, nothing lost
    return conn


def _stored_signature(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        c = sqlite3.connect(path)
        try:
            row = c.execute("select v from meta where k = 'signature'").fetchone()
        finally:
            c.close()
        return row[0] if row else None
    except sqlite3.Error:
        return None


class RunIndex:
    """Open (or build) the index of ``run``; :attr:`ready` once the full-text index is done."""

    def __init__(self, run: str | Path):
        self.run = Path(run)
        self.path = self.run / INDEX
        self.progress = Progress()
        self.ready = threading.Event()
        self.sig = ""
        try:
            self._lock_fd = os.open(self.run / LOCKFILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot write the viewer's index here ({e.strerror}); the viewer needs a "
                            "writable run directory", path=str(self.run)) from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            mine = True
        except BlockingIOError:
            mine = False  # another viewer is building it: read along, then check again
        if mine and self._start():
            return
        self.thread = threading.Thread(target=self._wait_then_build if not mine else self._run_build,
                                       name="view-index", daemon=True)
        self.thread.start()

    def _start(self) -> bool:
        """True when the stored index is current; otherwise a fresh, empty one is created."""
        self.sig = signature(self.run)
        if _stored_signature(self.path) == self.sig:
            self.progress.phase, self.progress.finished = "ready", time.monotonic()
            self._unlock()
            self.ready.set()
            return True
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)
        self._conn = _connect(self.path)
        self._conn.executescript(SCHEMA)
        self._conn.commit()
        return False

    def _run_build(self) -> None:
        try:
            _build(self._conn, self.run, self.sig, self.progress)
            self.progress.phase = "ready"
        except (ValueError, OSError, sqlite3.Error) as e:
            self.progress.phase, self.progress.error = "failed", str(e)
        finally:
            self.progress.finished = time.monotonic()
            self._conn.close()
            self._unlock()
            self.ready.set()

    def _wait_then_build(self) -> None:
        self.progress.phase = "another viewer is indexing"
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        if not self._start():
            self._run_build()

    def stale(self) -> bool:
        """The run's files changed since the index was built (a stage ran meanwhile)."""
        return bool(self.sig) and self.progress.phase == "ready" and signature(self.run) != self.sig

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def connect(self) -> sqlite3.Connection:
        """A read connection (with an in-memory ``mem`` database for the review state)."""
        for _ in range(200):  # the schema is created before the build thread starts
            if self.path.is_file():
                break
            time.sleep(0.01)
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        conn.execute("attach database ':memory:' as mem")
        conn.execute("create table mem.rev(record_id text primary key, status text, reason text, edited int, "
                     "chose int, time text, reviewer text)")
        return conn
