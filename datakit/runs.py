"""A run directory: what one pipeline run wrote, and what a resumed run needs.

Layout (see docs/FORMATS.md)::

    runs/<name>/
      config.json       the config used, snapshotted without secrets (atomic)
      state.json        the last committed step and the counters at that point (atomic)
      records.jsonl     accepted records (append-only, fsync'd per batch)
      rejected.jsonl    rejected candidates, each with its reason (append-only)
      cache.sqlite      the teacher response cache (SQLite, WAL)
      local-teacher.log the bundled local teacher's log, when it was used
      stages.jsonl      one line per finished command that read or wrote the run (append-only)

Work is committed in steps. Logs are appended first, then ``state.json`` is replaced
atomically; on resume every log is cut back to the rows of committed steps, so a step that
kill -9 interrupted is redone from the start — its answered requests come from the cache.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from datakit.errors import UserError
from datakit.records import JsonlAppender, Record, atomic_write_json, committed_run_records, truncate_jsonl

STAGES = "stages.jsonl"


def default_run_path() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.state_path = self.path / "state.json"
        self.records_path = self.path / "records.jsonl"
        self.rejected_path = self.path / "rejected.jsonl"
        self.cache_path = self.path / "cache.sqlite"

    def prepare(self, config_snapshot: dict[str, Any], command: str) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise UserError("exists and is not a folder", path=str(self.path))
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_path, {"command": command, "config": config_snapshot})

    def load_state(self) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except ValueError:
            raise UserError("run state is not valid JSON; it was not written by datakit",
                            path=str(self.state_path)) from None

    def commit(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.state_path, state)

    def cut_back(self, step_of: "callable[[dict], int]", committed: int) -> int:
        """Drop log rows of steps after ``committed`` (work of an interrupted step)."""
        return sum(truncate_jsonl(p, lambda r: step_of(r) <= committed)
                   for p in (self.records_path, self.rejected_path))

    def committed_records(self) -> list[Record]:
        """Accepted records of committed rounds (all of them when there is no state file, e.g.
        a folder made by hand)."""
        return committed_run_records(self.path)


# --------------------------------------------------------------------------- the stage log

def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / "records.jsonl").is_file() and ((p / "config.json").is_file() or (p / "state.json").is_file())


def find_run_dir(paths: "list[str | Path]", levels: int = 3) -> Path | None:
    """The run directory that the first of ``paths`` belongs to: the path itself, or a folder
    at most ``levels`` above it (``runs/demo/curated/clean.jsonl`` belongs to ``runs/demo``)."""
    for raw in paths:
        p = Path(raw).absolute()
        for cand in [p, *list(p.parents)[:levels]]:
            if is_run_dir(cand):
                return cand
    return None


def log_stage(run_dir: str | Path, entry: dict[str, Any]) -> None:
    """Append one finished command to ``stages.jsonl`` (what the data card reads for wall time,
    cost and counts per stage). The log is append-only and fsync'd like every other log."""
    with JsonlAppender(Path(run_dir) / STAGES) as app:
        app.write_batch([entry])


# --------------------------------------------------------------------------- one writer

LOCK = ".lock"


class RunLock:
    """The exclusive writer lock of a run directory.

    A kernel lock (``flock``) on ``RUN/.lock``: it dies with its process, so a writer killed
    with SIGKILL never blocks the next one, with no stale pid file to guess about. The file
    also names the holder (command, pid, start time) for the refusal message of a second
    writer. Readers (export, report, filter) take no lock: logs are append-only and a reader
    skips a torn last line, so it never sees a half-written record.
    """

    def __init__(self, run_dir: str | Path, command: str):
        self.run_dir, self.command = Path(run_dir), command
        self._fd: int | None = None
        self._made_dir = False

    def acquire(self) -> "RunLock":
        import fcntl
        import os

        self._made_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(f"{self.run_dir} is in use by {holder}") from None
        os.ftruncate(fd, 0)
        info = {"command": self.command, "pid": os.getpid(), "since": time.strftime("%H:%M:%S"),
                "date": time.strftime("%Y-%m-%d")}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        import os

        if self._fd is not None:
            if self._made_dir and [p.name for p in self.run_dir.iterdir()] == [LOCK]:
                # the command failed before writing anything: leave no folder behind
                try:
                    (self.run_dir / LOCK).unlink()
                    self.run_dir.rmdir()
                except OSError:
                    pass
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    import os

    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"{info['command']} (pid {info['pid']}, since {info['since']})"
    except (ValueError, KeyError, OSError):
        return "another datakit process"
