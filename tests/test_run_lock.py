"""One writer per run directory: a second writer is refused at once with the holder named, and a
writer killed with SIGKILL never blocks the next one (a kernel flock, not a pid file)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from datakit.errors import UserError
from datakit.runs import RunLock
from datakit.teachers.fake_server import FakeOpenAIServer
from helpers import REPO, assert_user_error, jsonl, run_cli


def _hold(run_dir):
    """A separate process that takes the lock and waits (so flock really is another holder)."""
    code = (f"import time; from datakit.runs import RunLock; l = RunLock({str(run_dir)!r}, 'datakit generate')"
            f".acquire(); print('locked', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_writer_is_refused_naming_the_holder_and_a_killed_holder_blocks_nothing(tmp_path):
    run = tmp_path / "run"
    p = _hold(run)
    try:
        with pytest.raises(UserError) as e:
            RunLock(run, "datakit respond").acquire()
        msg = str(e.value)
        assert f"is in use by datakit generate (pid {p.pid}, since " in msg and str(run) in msg
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with RunLock(run, "datakit judge"):  # the killed holder's lock went with it
        pass
    assert (run / ".lock").exists()  # the file stays; only the kernel lock matters


def test_two_generate_commands_on_one_folder(tmp_path):
    """The user's accident from the issue: a second `datakit generate --out X` while one runs."""
    run = tmp_path / "run"
    with FakeOpenAIServer(latency=1.0) as srv:  # slow enough that the first is still running
        args = ["generate", "--num", "60", "--out", str(run), "--base-url", srv.base_url, "--model", "fake"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        first = subprocess.Popen([sys.executable, "-m", "datakit", *args], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        deadline = time.time() + 60
        while time.time() < deadline and not (run / "config.json").exists():
            time.sleep(0.05)
        second = run_cli(*args, timeout=60)
        assert_user_error(second, "is in use by datakit generate", f"pid {first.pid}")
        first.send_signal(signal.SIGKILL)
        first.wait()
        third = run_cli(*args, timeout=300)  # resumes at once: the lock died with its holder
    assert third.returncode == 0, third.stderr
    assert len(jsonl(run / "records.jsonl")) == 60


def test_respond_and_judge_take_the_lock(tmp_path):
    from datakit.config import load_config
    from datakit.judge.run import JudgeOptions, RespondOptions, judge, respond
    from datakit.records import write_table

    run = tmp_path / "run"
    run.mkdir()
    write_table(run / "records.jsonl", [{"id": "r1", "instruction": "Explain tides.", "output": "x"}])
    p = _hold(run)
    try:
        cfg = load_config(None, {"teachers": [{"name": "s", "base_url": "http://127.0.0.1:9/v1", "model": "m"}]})
        for call in (lambda: respond(run, cfg, RespondOptions()), lambda: judge(run, cfg, JudgeOptions())):
            with pytest.raises(UserError, match="is in use by datakit generate"):
                call()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()


def test_train_into_a_folder_in_use_is_refused(tmp_path):
    out = tmp_path / "train-out"
    data = tmp_path / "sft.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n' * 8)
    p = _hold(out)
    try:
        proc = run_cli("train", "--data", str(data), "--model", "bundled", "--out", str(out), "--max-steps", "1",
                       "--no-validate", timeout=120)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert_user_error(proc, "is in use by datakit generate", str(out))
