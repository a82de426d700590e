"""Batch mode (``--batch``, ``--batch-instances``) against the scripted server's batch API on
127.0.0.1: answers identical to online, partial failures and expiry retried, and a kill -9
mid-poll whose rerun picks the batch up without submitting anything twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datakit.config import load_config
from datakit.errors import TeacherError
from datakit.generate.loop import generate
from datakit.judge.run import JudgeOptions, RespondOptions, judge, respond
from datakit.records import read_jsonl
from datakit.runs import RunDir
from datakit.teachers.fake_batch import BatchScript
from datakit.teachers.fake_server import FakeOpenAIServer
from test_judge_run import judge_responder, make_run, stats

TASKS = [f"Explain topic {i} to a child." for i in range(8)]
PRICES = {"price_input": 100.0, "price_output": 200.0, "batch_price_input": 50.0, "batch_price_output": 100.0}


def cfg_for(srv: FakeOpenAIServer, batch: bool, **batch_opts) -> object:
    return load_config(None, {"concurrency": 4, "batch": {"enabled": batch, "poll_seconds": 0.02, **batch_opts},
                              "teachers": [{"name": "s", "base_url": srv.base_url, "model": "m", "timeout": 5.0,
                                            **PRICES}]})


def chat_posts(srv: FakeOpenAIServer) -> int:
    return stats(srv)["http"].get("POST /v1/chat/completions", 0)


def rows(path: Path) -> list[dict]:
    return sorted(read_jsonl(path), key=lambda r: json.dumps(r, sort_keys=True))


def test_batch_answers_are_identical_to_online(tmp_path):
    with FakeOpenAIServer(responder=judge_responder) as online, FakeOpenAIServer(responder=judge_responder) as batch:
        a = make_run(tmp_path / "online", TASKS)
        b = make_run(tmp_path / "batch", TASKS)
        ra = respond(a, cfg_for(online, False), RespondOptions(n=2))
        rb = respond(b, cfg_for(batch, True), RespondOptions(n=2))
        assert (rb.done, rb.failed, rb.cached) == (16, 0, 0)
        # the same bodies went out, online one by one and here as batch lines; no chat request
        assert set(stats(batch)["batch_lines"]) == set(stats(online)["answered"])
        assert chat_posts(batch) == 0 and stats(batch)["batches_created"] == 1
        assert rows(a / "candidates.jsonl") == rows(b / "candidates.jsonl")  # cached: false in both
        # accounting at the batch prices: half of what online paid for the same tokens
        ta, tb = ra.teacher_rows[0], rb.teacher_rows[0]
        assert (tb["tok in"], tb["tok out"], tb["batched"]) == (ta["tok in"], ta["tok out"], 16)
        assert tb["USD"] == pytest.approx(ta["USD"] / 2, rel=1e-3)

        ja = judge(a, cfg_for(online, False), JudgeOptions(max_pairs=1))
        jb = judge(b, cfg_for(batch, True), JudgeOptions(max_pairs=1))
        assert jb.failed == 0 and jb.done == ja.done == 8 * 2 + 8 * 2
        assert chat_posts(batch) == 0 and stats(batch)["batches_created"] == 3  # one per judge phase
        # the judge tag names the endpoint (another port here): map one server's tags to the other's
        tags = {rb["tag"]: ra["tag"] for ra, rb in zip(read_jsonl(a / "judgements.jsonl"),
                                                      read_jsonl(b / "judgements.jsonl"))}
        assert len(tags) == 2

        def same_tags(path: Path) -> str:
            text = path.read_text()
            for tb, ta in tags.items():
                text = text.replace(tb, ta)
            return text
        assert sorted(same_tags(b / "judgements.jsonl").splitlines()) == \
            sorted((a / "judgements.jsonl").read_text().splitlines())
        assert same_tags(b / "judged.jsonl") == (a / "judged.jsonl").read_text()

        # a rerun finds everything done: no new batch, nothing sent
        respond(b, cfg_for(batch, True), RespondOptions(n=2))
        assert stats(batch)["batches_created"] == 3 and chat_posts(batch) == 0


def test_failed_lines_go_into_a_new_batch(tmp_path):
    with FakeOpenAIServer(responder=judge_responder, batch_script=[BatchScript(fail_rate=0.4)]) as srv:
        run = make_run(tmp_path / "run", TASKS)
        r = respond(run, cfg_for(srv, True), RespondOptions(n=2))
        st = stats(srv)
        assert (r.done, r.failed) == (16, 0) and st["batches_created"] == 2 and chat_posts(srv) == 0
        entries = json.loads((run / "batches.json").read_text())["batches"]
        first, second = entries
        assert first["failed"] > 0 and first["completed"] + first["failed"] == 16
        assert second["n"] == first["failed"] and second["failed"] == 0
        # each body was in the first batch once, the failed ones in the second as well
        assert sorted(st["batch_lines"].values()).count(2) == first["failed"]


def test_with_no_retries_left_failed_lines_go_online(tmp_path):
    with FakeOpenAIServer(responder=judge_responder, batch_script=[BatchScript(fail_rate=0.4)]) as srv:
        run = make_run(tmp_path / "run", TASKS)
        r = respond(run, cfg_for(srv, True, retries=0), RespondOptions(n=2))
        first = json.loads((run / "batches.json").read_text())["batches"][0]
        assert (r.done, r.failed) == (16, 0) and stats(srv)["batches_created"] == 1
        assert chat_posts(srv) == first["failed"] > 0
        teacher = r.teacher_rows[0]
        assert (teacher["requests"], teacher["batched"]) == (16, 16 - first["failed"])


def test_expired_batch_keeps_what_it_finished_and_retries_the_rest(tmp_path):
    script = [BatchScript(seconds=1.0, expire_after=0.4)]
    with FakeOpenAIServer(responder=judge_responder, batch_script=script) as srv:
        run = make_run(tmp_path / "run", TASKS)
        r = respond(run, cfg_for(srv, True), RespondOptions(n=2))
        first, second = json.loads((run / "batches.json").read_text())["batches"]
        assert first["result"] == "expired" and 0 < first["completed"] < 16
        assert second["result"] == "completed" and second["n"] == 16 - first["completed"]
        assert r.done == 16 and chat_posts(srv) == 0


def test_a_batch_created_before_its_id_was_committed_is_found_again(tmp_path, monkeypatch):
    """kill -9 between 'batch created' and 'batch id written': simulated by failing the state
    write that would record the id (a kill cannot be aimed at one instruction); the rerun must
    find the batch by its input file id and create none."""
    from datakit.teachers import batch as batch_mod

    real_save = batch_mod.BatchState.save

    def save_then_die(self):
        if any(e.get("status") == "submitted" for e in self.entries):
            raise KeyboardInterrupt  # what kill -9 leaves: the file id committed, the batch id not
        real_save(self)

    with FakeOpenAIServer(responder=judge_responder, batch=BatchScript(seconds=0.3)) as srv:
        run = make_run(tmp_path / "run", TASKS)
        monkeypatch.setattr(batch_mod.BatchState, "save", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            respond(run, cfg_for(srv, True), RespondOptions(n=2))
        monkeypatch.setattr(batch_mod.BatchState, "save", real_save)
        entry = json.loads((run / "batches.json").read_text())["batches"][0]
        assert entry["status"] == "uploaded" and stats(srv)["batches_created"] == 1
        r = respond(run, cfg_for(srv, True), RespondOptions(n=2))
        assert r.done == 16 and stats(srv)["batches_created"] == 1 and chat_posts(srv) == 0


def test_kill_9_mid_poll_then_rerun_submits_nothing_twice(tmp_path):
    with FakeOpenAIServer(responder=judge_responder, batch=BatchScript(seconds=3.0)) as srv:
        run = make_run(tmp_path / "run", TASKS)
        toml = tmp_path / "t.toml"
        toml.write_text(f'[batch]\npoll_seconds = 0.05\n[[teachers]]\nname = "s"\nbase_url = "{srv.base_url}"\n'
                        f'model = "m"\n')
        args = [sys.executable, "-m", "datakit", "respond", str(run), "--config", str(toml), "--n", "2", "--batch"]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        state = run / "batches.json"
        deadline = time.time() + 60
        while time.time() < deadline and stats(srv)["http"].get("GET /v1/batches/{id}", 0) < 3:
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert json.loads(state.read_text())["batches"][0]["status"] == "submitted"
        assert not (run / "candidates.jsonl").exists() or not list(read_jsonl(run / "candidates.jsonl"))
        p = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        st = stats(srv)
        assert st["batches_created"] == 1 and chat_posts(srv) == 0
        assert sorted(set(st["batch_lines"].values())) == [1] and len(st["batch_lines"]) == 16
        keys = [(r["record_id"], r["id"]) for r in read_jsonl(run / "candidates.jsonl")]
        assert len(keys) == len(set(keys)) == 16


def test_generate_batch_instances_makes_the_same_records(tmp_path):
    with FakeOpenAIServer() as online, FakeOpenAIServer() as batch:
        def cfg(srv, on):
            return load_config(None, {"generate": {"num": 12, "requests_per_round": 1},
                                      "batch": {"enabled": on, "poll_seconds": 0.02},
                                      "teachers": [{"name": "s", "base_url": srv.base_url, "model": "m"}]})
        asyncio.run(generate(cfg(online, False), RunDir(tmp_path / "a")))
        s = asyncio.run(generate(cfg(batch, True), RunDir(tmp_path / "b")))
        assert s.accepted == 12
        assert (tmp_path / "a/records.jsonl").read_text() == (tmp_path / "b/records.jsonl").read_text()
        assert (tmp_path / "a/rejected.jsonl").read_text() == (tmp_path / "b/rejected.jsonl").read_text()
        st = stats(batch)
        # task lists online, every instance through a batch (one per round)
        assert st["batches_created"] == s.rounds > 1 and len(st["batch_lines"]) >= 12
        assert chat_posts(batch) == st["statuses"]["200"] == stats(online)["statuses"]["200"] - len(st["batch_lines"])


def test_a_teacher_without_a_batch_api_is_one_clear_error(tmp_path):
    with FakeOpenAIServer(responder=judge_responder) as srv:
        # a server without the batch routes (llama.cpp's, for one) answers 404 there
        srv.batches.handle = lambda *a: (404, b'{"error": {"message": "not found"}}', "application/json")
        run = make_run(tmp_path / "run", TASKS)
        with pytest.raises(TeacherError, match="has no batch API"):
            respond(run, cfg_for(srv, True), RespondOptions())


def test_a_batch_cancelled_at_the_provider_keeps_what_it_finished(tmp_path):
    import threading

    import httpx2 as httpx

    with FakeOpenAIServer(responder=judge_responder, batch_script=[BatchScript(seconds=2.0)]) as srv:
        run = make_run(tmp_path / "run", TASKS)
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", respond(run, cfg_for(srv, True, retries=0),
                                                                        RespondOptions(n=2))))
        t.start()
        deadline = time.time() + 30
        while time.time() < deadline and stats(srv)["http"].get("GET /v1/batches/{id}", 0) < 20:
            time.sleep(0.01)
        bid = next(iter(srv.batches.batches))
        assert httpx.post(f"{srv.base_url}/batches/{bid}/cancel").json()["id"] == bid
        t.join(60)
        entry = json.loads((run / "batches.json").read_text())["batches"][0]
        assert entry["result"] == "cancelled" and 0 < entry["completed"] < 16
        # what the batch finished came from it; the rest went online (no retries left)
        assert out["r"].done == 16 and chat_posts(srv) == 16 - entry["completed"]
