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


def assert_train_refused_before_loading(tmp_path: Path, flags: list[str], *fragments: str) -> None:
    """``datakit train`` on a tiny SFT file with FLAGS: one line naming FRAGMENTS, exit 2, refused
    before the model loads, nothing written under --out."""
    data = tmp_path / "sft.jsonl"
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    data.write_text((json.dumps(row) + "\n") * 6)
    proc = run_cli("train", "--data", str(data), "--model", "bundled", "--out", str(tmp_path / "out"),
                   *flags, "--max-steps", "1", "--no-validate")
    assert_user_error(proc, *fragments)
    assert "loading" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()


def jsonl(path: str | os.PathLike) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(l) for l in p.read_text(encoding="utf-8").splitlines() if l.strip()]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(script: Path, spec: Path, world: int, hard_timeout: float, what: str = "ranks"
              ) -> list[subprocess.CompletedProcess]:
    """Start ``python SCRIPT SPEC`` ``world`` times as torchrun would (RANK, LOCAL_RANK,
    WORLD_SIZE, MASTER_* in the environment), wait for all under one hard deadline, and kill them
    all and fail the test if it passes (a rank hung in a collective)."""
    import time

    import pytest

    port, procs = free_port(), []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", TQDM_DISABLE="1",
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        procs.append(subprocess.Popen([sys.executable, str(script), str(spec)], env=env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline, done = time.monotonic() + hard_timeout, []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        for p in procs:
            p.communicate()
        pytest.fail(f"the {world} {what} did not finish within {hard_timeout} s (a rank hung in a collective)")
    return done
