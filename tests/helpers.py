"""Small shared test helpers: run the real CLI in a subprocess and read what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: float = 300, env: dict | None = None, cwd: str | os.PathLike | None = None
            ) -> subprocess.CompletedProcess:
    """``datakit ARGS`` as a user runs it (a separate process, the real console entry point)."""
    e = dict(os.environ)
    e.update({"COLUMNS": "120", "PYTHONUNBUFFERED": "1"})
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "datakit", *args], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=cwd or REPO)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, one line on stderr, no traceback, mentioning every fragment."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, lines
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def jsonl(path: str | os.PathLike) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(l) for l in p.read_text(encoding="utf-8").splitlines() if l.strip()]
