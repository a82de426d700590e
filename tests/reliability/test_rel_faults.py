"""Teacher faults: generate, respond and judge against the scripted fault server at a combined
20% fault rate (every transient kind it knows, equally often) end with the same records as a
fault-free run, and every fault shows in the summary; a teacher that stays down stops the run
with one line after bounded retries, and the rerun completes; the start-up check retries."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter

import pytest

from conftest import make_run, rel_responder, teacher_toml, without_cached
from datakit.config import TeacherConfig, load_config
from datakit.errors import TeacherError, UserError
from datakit.judge.run import JudgeOptions, RespondOptions, judge, respond
from datakit.records import read_jsonl
from datakit.teachers.fake_server import FakeOpenAIServer, Faults
from datakit.teachers.pool import Teacher
from helpers import assert_user_error, jsonl, run_cli

RATE = 0.20
# the server's fault names -> the kind the client counts it under (TeacherStats.errors)
KIND = {"429": "429", "429_bare": "429", "500": "500", "503": "503", "hang": "timeout", "drop": "connection",
        "midbody": "connection", "garbage": "malformed", "truncated": "malformed", "empty": "empty",
        "length": "truncated"}


def injected(srv: FakeOpenAIServer) -> Counter:
    out = Counter()
    for name, n in srv.stats.statuses.items():
        if name != "200":
            out[KIND[name]] += n
    return out


def parse_faults(cell: str) -> Counter:
    return Counter({k: int(v) for k, v in (p.split(":") for p in cell.split())}) if cell != "-" else Counter()


def gen_args(srv, out, toml, num=60):
    return ["generate", "--num", str(num), "--out", str(out), "--config", str(toml), "--seed", "3",
            "--requests-per-round", "2"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The fault-free runs every faulty run is compared with: generate, respond, judge."""
    d = tmp_path_factory.mktemp("ref")
    with FakeOpenAIServer(responder=rel_responder) as srv:
        toml = teacher_toml(d / "t.toml", srv.base_url)
        proc = run_cli(*gen_args(srv, d / "gen", toml))
        assert proc.returncode == 0, proc.stderr
        run = make_run(d / "rj", 16)
        cfg = load_config(toml)
        respond(run, cfg, RespondOptions(n=2))
        judge(run, cfg, JudgeOptions())
    return {"gen": jsonl(d / "gen" / "records.jsonl"), "rejected": jsonl(d / "gen" / "rejected.jsonl"),
            "candidates": sorted(jsonl(run / "candidates.jsonl"), key=lambda r: (r["record_id"], r["id"])),
            "judged": jsonl(run / "judged.jsonl")}


def test_generate_at_20_percent_faults_same_records_every_fault_counted(tmp_path, reference):
    # the start-up check meets a dropped connection and a 503 first: it retries them
    with FakeOpenAIServer(responder=rel_responder, faults=Faults.spread(RATE, retry_after=0.01), seed=5,
                          models_script=["drop", "503"]) as srv:
        toml = teacher_toml(tmp_path / "t.toml", srv.base_url)
        proc = run_cli(*gen_args(srv, tmp_path / "run", toml))
        assert proc.returncode == 0, proc.stderr
        faults = injected(srv)
    assert without_cached(jsonl(tmp_path / "run" / "records.jsonl")) == without_cached(reference["gen"])
    assert without_cached(jsonl(tmp_path / "run" / "rejected.jsonl")) == without_cached(reference["rejected"])
    assert sum(faults.values()) >= 10 and len(faults) >= 4, faults  # the faults really happened
    st = json.loads((tmp_path / "run" / "state.json").read_text())["teachers"]["s"]
    assert Counter(st["errors"]) == faults and st["retries"] == sum(faults.values())
    assert "faults" in proc.stderr  # the teachers table shows them, by kind
    stage = jsonl(tmp_path / "run" / "stages.jsonl")[-1]
    assert parse_faults(stage["usage"]["s"]["faults"]) == faults


def test_respond_and_judge_at_20_percent_faults_same_records(tmp_path, reference):
    with FakeOpenAIServer(responder=rel_responder, faults=Faults.spread(RATE, retry_after=0.01), seed=9) as srv:
        cfg = load_config(teacher_toml(tmp_path / "t.toml", srv.base_url))
        run = make_run(tmp_path / "run", 16)
        r = respond(run, cfg, RespondOptions(n=2))
        after_respond = injected(srv)
        j = judge(run, cfg, JudgeOptions())
        total = injected(srv)
    assert r.failed == 0 and j.failed == 0
    assert parse_faults(r.teacher_rows[0]["faults"]) == after_respond
    assert parse_faults(j.teacher_rows[0]["faults"]) == total - after_respond
    assert sum(total.values()) >= 10, total
    cands = sorted(jsonl(run / "candidates.jsonl"), key=lambda r: (r["record_id"], r["id"]))
    assert without_cached(cands) == without_cached(reference["candidates"])
    assert without_cached(jsonl(run / "judged.jsonl")) == without_cached(reference["judged"])


def test_a_teacher_that_stays_down_stops_with_one_line_and_the_rerun_completes(tmp_path, reference):
    with FakeOpenAIServer(responder=rel_responder, faults=Faults(rate_503=1.0)) as srv:
        toml = teacher_toml(tmp_path / "t.toml", srv.base_url, max_retries=2)
        down = run_cli(*gen_args(srv, tmp_path / "run", toml))
        line = assert_user_error(down, "teacher 's'", "failed 10 requests in a row", "HTTP 503")
        sent = srv.stats.requests
        assert sent <= 3 * (10 + 4) + 4, sent  # bounded: retries per request, then the teacher is out
        srv.faults = Faults()  # the teacher is back
        again = run_cli(*gen_args(srv, tmp_path / "run", toml))
        assert again.returncode == 0, again.stderr

        run = make_run(tmp_path / "rj", 16)
        cfg = load_config(toml)
        srv.faults = Faults(rate_503=1.0)
        with pytest.raises(TeacherError, match="failed 10 requests in a row"):
            respond(run, cfg, RespondOptions(n=2))
        srv.faults = Faults()
        assert respond(run, cfg, RespondOptions(n=2)).failed == 0
    assert "Traceback" not in line
    assert without_cached(jsonl(tmp_path / "run" / "records.jsonl")) == without_cached(reference["gen"])
    cands = sorted(read_jsonl(run / "candidates.jsonl"), key=lambda r: (r["record_id"], r["id"]))
    assert without_cached(cands) == without_cached(reference["candidates"])


def test_start_up_check_retries_transient_faults_and_gives_up_on_a_dead_port():
    with FakeOpenAIServer(models_script=["drop", "503", "drop"]) as srv:
        t = Teacher(TeacherConfig(name="s", base_url=srv.base_url, model="m", timeout=2.0, max_retries=4))
        asyncio.run(t.preflight())   # on main: "cannot reach ... RemoteProtocolError" at the first drop
        assert srv.stats.http["GET /v1/models"] == 4
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = Teacher(TeacherConfig(name="s", base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=2))
    with pytest.raises(UserError, match=r"cannot reach teacher 's' .*3 attempts"):
        asyncio.run(t.preflight())
