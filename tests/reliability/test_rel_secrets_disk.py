"""Secrets and full disks.

Secrets: with OPENAI_API_KEY and other keys set (fake values), a whole pipeline (generate,
respond, judge, filter, dedup, export, report) and its error paths write none of them to any
byte under the run directory, its cache, logs, exports and card, nor to the terminal.

Full disk: a run whose folder fills up (a small tmpfs where this machine lets root mount one,
else RLIMIT_FSIZE on the child) stops with one clear line, and the rerun once there is space
completes with exactly the records of an uninterrupted run. A read-only output is one line."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest

from conftest import SECRETS, rel_responder, teacher_toml
from datakit.records import write_table
from datakit.teachers.fake_server import FakeOpenAIServer
from helpers import assert_user_error, jsonl, run_cli


def scan(root: Path, *texts: str) -> list[str]:
    """Every (file, secret) pair where a file under ``root`` holds the secret's bytes."""
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{p}: {t[:6]}…" for t in texts if t.encode() in data]
    return hits


def test_no_secret_reaches_any_file_or_the_terminal(tmp_path):
    env = dict(SECRETS)
    key = SECRETS["OPENAI_API_KEY"]
    outputs = []
    with FakeOpenAIServer(responder=rel_responder, api_key=key) as srv:
        toml = teacher_toml(tmp_path / "t.toml", srv.base_url, key_env="OPENAI_API_KEY")
        run = tmp_path / "run"
        steps = [["generate", "--num", "8", "--out", run, "--config", toml],
                 ["respond", run, "--config", toml, "--n", "2"],
                 ["judge", run, "--config", toml],
                 ["filter", run / "records.jsonl", "-o", run / "curated" / "f.jsonl"],
                 ["dedup", run / "curated" / "f.jsonl", "-o", run / "curated" / "d.jsonl"],
                 ["export", run, "--style", "llamafactory", "--out", tmp_path / "export"],
                 ["export", run, "--out", tmp_path / "sft.parquet"],
                 ["report", run]]
        for argv in steps:
            proc = run_cli(*map(str, argv), env=env)
            assert proc.returncode == 0, (argv, proc.stderr)
            outputs.append(proc.stdout + proc.stderr)
        # error paths: a key the server rejects, a key variable that is not set
        bad = run_cli("generate", "--out", str(tmp_path / "run2"), "--config", str(toml),
                      env={**env, "OPENAI_API_KEY": key + "x"})
        assert_user_error(bad, "rejected the API key from $OPENAI_API_KEY")
        outputs.append(bad.stdout + bad.stderr)
        unset = run_cli("judge", str(run), "--config", str(toml), env={**env, "OPENAI_API_KEY": ""})
        assert unset.returncode == 2
        outputs.append(unset.stdout + unset.stderr)
    assert (run / "cache.sqlite").exists() and (tmp_path / "export").is_dir() and (run / "card").is_dir()
    assert scan(tmp_path, *SECRETS.values()) == []
    assert not [t for t in SECRETS.values() for o in outputs if t in o]


# --------------------------------------------------------------------------- full disk

def _can_mount() -> bool:
    return os.geteuid() == 0 and subprocess.run(["which", "mount"], capture_output=True).returncode == 0


@pytest.fixture()
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root), or None where mounting is not allowed (then RLIMIT_FSIZE is used)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if _can_mount() and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                       capture_output=True).returncode == 0:
        yield mnt
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    else:
        yield None


def _fill(folder: Path, leave: int) -> Path:
    """Fill the filesystem of ``folder`` until about ``leave`` bytes are free."""
    st = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def test_full_disk_stops_with_one_line_and_resumes_with_nothing_lost(tmp_path, small_disk):
    with FakeOpenAIServer(responder=rel_responder) as srv:
        toml = teacher_toml(tmp_path / "t.toml", srv.base_url)
        args = lambda out: ["generate", "--num", "40", "--out", str(out), "--config", str(toml),
                            "--requests-per-round", "2"]
        assert run_cli(*args(tmp_path / "ref")).returncode == 0
        if small_disk is not None:
            run = small_disk / "run"
            filler = _fill(small_disk, 160 << 10)   # room for the cache and a few rounds
            full = run_cli(*args(run))
            filler.unlink()
        else:  # no mount here: the child may write files of at most 60 KiB
            run = tmp_path / "run"
            full = _run_limited(args(run), 60 << 10)
        line = assert_user_error(full)
        assert "free some space" in line or "too large" in line, line
        assert str(run) in line or "cache" in line, line
        again = run_cli(*args(run))
        assert again.returncode == 0, again.stderr
    strip = lambda rows: [{k: v for k, v in r.items() if k != "lineage"} for r in rows]
    assert strip(jsonl(run / "records.jsonl")) == strip(jsonl(tmp_path / "ref" / "records.jsonl"))


def _run_limited(argv: list[str], max_bytes: int) -> subprocess.CompletedProcess:
    import sys

    from helpers import REPO

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return subprocess.run([sys.executable, "-m", "datakit", *argv], capture_output=True, text=True,
                          cwd=REPO, preexec_fn=limit, timeout=300)


@pytest.mark.parametrize("command", ["export", "dedup", "generate"])
def test_read_only_output_is_one_line(tmp_path, small_disk, command):
    if small_disk is None:
        pytest.skip("needs a mount to make a read-only place (root writes anywhere otherwise)")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    src = tmp_path / "in.jsonl"
    write_table(src, [{"id": f"a{i}", "instruction": f"Explain tides, case {i}.", "output": "x"} for i in range(3)])
    argv = {"export": ["export", src, "--out", small_disk / "o.jsonl"],
            "dedup": ["dedup", src, "-o", small_disk / "o.jsonl"],
            "generate": ["generate", "--out", small_disk / "run", "--base-url", "http://127.0.0.1:9/v1",
                         "--model", "m"]}[command]
    assert_user_error(run_cli(*map(str, argv)), str(small_disk))
