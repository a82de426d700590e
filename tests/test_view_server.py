"""`datakit view` as a real server on 127.0.0.1 (a subprocess): the API, the index, security
(token, Host, path traversal, sizes), the writer lock, and kill -9 during a stream of verdicts."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from urllib.parse import quote, urlsplit

import pytest

from datakit.runs import RunLock
from helpers import assert_user_error, jsonl, run_cli
from test_view_fixture import make_big, make_run, start_view

POST_HEADERS = {"Content-Type": "application/json", "X-Datakit-View": "1"}


class Client:
    def __init__(self, base: str, headers: dict | None = None):
        u = urlsplit(base)
        self.host, self.port, self.headers = u.hostname, u.port, headers or {}

    def req(self, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, bytes, dict]:
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        c.request(method, path, body=data, headers={**self.headers, **(headers or {})})
        r = c.getresponse()
        out = r.status, r.read(), dict(r.getheaders())
        c.close()
        return out

    def get(self, path: str, **kw) -> tuple[int, dict | bytes]:
        status, body, _ = self.req("GET", path, **kw)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def post(self, row: dict, headers: dict | None = None) -> tuple[int, dict]:
        status, body, _ = self.req("POST", "/api/review", row, {**POST_HEADERS, **(headers or {})})
        return status, json.loads(body) if body.startswith(b"{") else {"text": body.decode()}


@pytest.fixture
def served(tmp_path):
    run = make_run(tmp_path / "run")
    proc, base, _ = start_view(run)
    yield run, Client(base)
    proc.kill()
    proc.wait(10)


def test_pages_search_filters_and_one_record(served):
    run, c = served
    status, page = c.get("/api/records?size=3")
    assert status == 200 and page["total"] == 8 and [i["id"] for i in page["items"]] == ["r-cats", "r-tea", "r-spring"]
    assert [i["id"] for i in c.get("/api/records?size=3&page=2")[1]["items"]] == ["x-cats2", "x-short"]
    assert [i["id"] for i in c.get("/api/records?q=" + quote("春天"))[1]["items"]] == ["r-spring"]       # 2 chars: scan
    assert [i["id"] for i in c.get("/api/records?q=" + quote("蓝色的"))[1]["items"]] == ["r-sky"]       # trigram index
    assert [i["id"] for i in c.get("/api/records?q=POEM+dogs")[1]["items"]] == ["r-dogs"]
    assert {i["id"] for i in c.get("/api/records?status=rejected")[1]["items"]} == {"x-cats2", "x-short"}
    assert [i["id"] for i in c.get("/api/records?reason=near_duplicate")[1]["items"]] == ["r-dogs"]
    assert {i["id"] for i in c.get("/api/records?teacher=deepseek&lang=zh")[1]["items"]} == {"r-sky"}
    assert {i["id"] for i in c.get("/api/records?min=7.5")[1]["items"]} == {"r-cats", "r-tea"}
    assert c.get("/api/records?min=x")[0] == 400
    status, rec = c.get("/api/record?id=r-cats")
    cands = {x["id"]: x for x in rec["machine"]["candidates"]}
    assert cands["local#0"]["judge"]["score"] == 8.0 and "rationale" in cands["local#0"]["judge"]["aspects"]["helpfulness"]
    pw = rec["machine"]["judge"]["pairwise"][0]
    assert (pw["xy"], pw["yx"], pw["result"]) == ("A", "B", "x")
    assert rec["machine"]["judge"]["pair"]["chosen"] == "local#0" and rec["machine"]["judge"]["pair"]["kept"]
    assert [m["id"] for m in rec["curation"]["cluster"]] == ["r-cats", "r-dogs"]
    assert rec["nearest"]["r-cats"]["instruction"] == "Write a short poem about cats."


def test_verdicts_show_in_the_list_and_in_the_record(served):
    run, c = served
    assert c.post({"record_id": "r-tea", "action": "edit", "field": "candidate", "candidate": "local#0",
                   "new": "Never boil green tea."})[0] == 200
    assert c.post({"record_id": "r-cats", "action": "reject", "reason": "dull"})[0] == 200
    assert [i["id"] for i in c.get("/api/records?reviewed=rejected")[1]["items"]] == ["r-cats"]
    assert len(c.get("/api/records?reviewed=no")[1]["items"]) == 6
    tea = c.get("/api/record?id=r-tea")[1]
    cand = next(x for x in tea["reviewed"]["candidates"] if x["id"] == "local#0")
    assert cand["output"] == "Never boil green tea." and tea["reviewed"]["lineage"]["human_edits"][0]["old"] == "Boil it a lot."
    line = jsonl(run / "reviews.jsonl")[0]
    assert line["old"] == "Boil it a lot." and line["reviewer"] and line["time"].endswith("Z")


@pytest.mark.parametrize("row, code, what", [
    ({"record_id": "r-cats", "action": "choose", "chosen": "local#0", "rejected": "nope"}, 400, "rejected"),
    ({"record_id": "r-cats", "action": "edit", "field": "output", "new": "x" * 40_000}, 400, "longer than"),
    ({"record_id": "r-cats", "action": "edit", "field": "../state.json", "new": "x"}, 400, "field"),
    ({"record_id": "../../etc/passwd", "action": "accept"}, 404, "no record"),
    ({"record_id": "r-cats", "action": "accept", "reviewer": "x" * 600}, 400, "reviewer"),
])
def test_bad_verdicts_are_refused(served, row, code, what):
    run, c = served
    status, body = c.post(row)
    assert status == code and what in body["error"]
    assert not (run / "reviews.jsonl").exists()


def test_requests_that_are_not_the_page_are_refused(served):
    run, c = served
    assert c.post({"record_id": "r-cats", "action": "accept"}, headers={"X-Datakit-View": "0"})[0] == 403
    assert c.req("POST", "/api/review", b"x" * 300_000, POST_HEADERS)[0] == 413
    assert c.req("GET", "/api/records", headers={"Host": "evil.example:80"})[0] == 403   # DNS rebinding
    assert not (run / "reviews.jsonl").exists()
    _, _, headers = c.req("GET", "/")
    assert "script-src 'self'" in headers["content-security-policy"]


SECRET_FILES = ("state.json", "config.json", "records.jsonl", "/etc/passwd")


@pytest.mark.parametrize("path", [
    "/static/../state.json", "/static/..%2fstate.json", "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%252f..%252fconfig.json", "/..%2f..%2f..%2fetc%2fpasswd", "/static/view.js%00.css",
    "/static/..\\records.jsonl", "/static/records.jsonl", "/static/index.html/../../state.json",
    "/api/record?id=../state.json", "/api/record?id=..%2F..%2Fetc%2Fpasswd", "/api/record?id=%2Fetc%2Fpasswd",
    "/api/records?reason=../../etc/passwd&teacher=..%2f..", "/api/records?sort=../../x", "/api/records?lang=..%5cx",
    "/api/records?page=0&size=5&status=%2e%2e%2f%2e%2e%2fstate.json", "/api/facets?x=..%252fconfig.json",
])
def test_path_traversal_is_refused(served, path):
    run, c = served
    status, body, _ = c.req("GET", path)
    assert status in (400, 404), (path, status)
    for name in SECRET_FILES:  # nothing of the run's files or the system's comes back
        secret = open(name if name.startswith("/") else run / name, "rb").read()[:40]
        assert secret not in body


def test_a_search_for_a_path_reads_no_file(served):
    run, c = served
    status, page = c.get("/api/records?q=" + quote("../../etc/passwd"))
    assert status == 200 and page["total"] == 0   # free text, searched in the records, never opened


def test_exposed_needs_a_token(tmp_path):
    run = make_run(tmp_path / "run")
    assert_user_error(run_cli("view", str(run), "--host", "0.0.0.0", "--port", "0"), "--host", "--token")
    assert_user_error(run_cli("view", str(run), "--token", "short"), "--token", "16")
    proc, base, line = start_view(run, "--host", "0.0.0.0", "--token", "auto")
    try:
        token = line.split("?token=")[1].split()[0]
        c = Client(base.replace("0.0.0.0", "127.0.0.1"))
        for path in ("/", "/api/records", "/api/record?id=r-cats", "/static/view.js", "/api/status"):
            assert c.req("GET", path)[0] == 401, path
        assert c.req("GET", "/api/records", headers={"Authorization": "Bearer " + token[:-1] + ("y" if token[-1] == "x" else "x")})[0] == 401
        assert c.post({"record_id": "r-cats", "action": "accept"})[0] == 401
        assert not (run / "reviews.jsonl").exists()
        status, _, headers = c.req("GET", "/?token=" + token)
        assert status == 303 and headers["location"] == "/" and "httponly" in headers["set-cookie"].lower()
        cookie = headers["set-cookie"].split(";")[0]
        assert c.get("/api/records", headers={"Cookie": cookie})[1]["total"] == 8
        assert c.post({"record_id": "r-cats", "action": "accept"}, headers={"Authorization": "Bearer " + token})[0] == 200
    finally:
        proc.kill()
        proc.wait(10)


def test_no_verdict_while_a_pipeline_stage_holds_the_run(served):
    run, c = served
    with RunLock(run, "judge"):
        status, body = c.post({"record_id": "r-cats", "action": "accept"})
    assert status == 409 and "in use by judge" in body["error"]
    assert c.post({"record_id": "r-cats", "action": "accept"})[0] == 200


def test_kill_9_during_a_stream_of_verdicts(tmp_path):
    run = make_run(tmp_path / "run")
    proc, base, _ = start_view(run)
    c, acked, stop = Client(base), [], threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set():
            try:
                status, _ = c.post({"record_id": ("r-cats", "r-tea", "r-sky")[i % 3], "action": "edit",
                                    "field": "output", "new": f"verdict {i} " + "words " * 400})
            except (OSError, http.client.HTTPException, ValueError):
                return
            if status == 200:
                acked.append(i)
            i += 1

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 25 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    stop.set()
    t.join(30)
    raw = (run / "reviews.jsonl").read_bytes()
    lines = raw.split(b"\n")
    complete = [json.loads(x) for x in lines[:-1]]           # every line but a torn tail parses
    assert len(acked) >= 25
    assert len(acked) <= len(complete) <= len(acked) + 1       # acknowledged ones all there; at most 1 in flight
    assert [int(r["new"].split()[1]) for r in complete[:len(acked)]] == acked
    proc2, base2, _ = start_view(run)                          # the next viewer cuts a torn tail and goes on
    try:
        assert Client(base2).post({"record_id": "r-cats", "action": "accept"})[0] == 200
        assert all(json.loads(x) for x in (run / "reviews.jsonl").read_bytes().splitlines())
    finally:
        proc2.kill()
        proc2.wait(10)


def test_two_viewers_share_one_log(tmp_path):
    run = make_run(tmp_path / "run")
    (p1, b1, _), (p2, b2, _) = start_view(run), start_view(run)
    try:
        c1, c2 = Client(b1), Client(b2)
        errors = []

        def many(c: Client, who: str) -> None:
            for i in range(25):
                if c.post({"record_id": "r-sum", "action": "reject", "reason": f"{who}{i}", "reviewer": who})[0] != 200:
                    errors.append((who, i))

        ts = [threading.Thread(target=many, args=(c, w)) for c, w in ((c1, "ana"), (c2, "bo"))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert errors == []
        assert len(jsonl(run / "reviews.jsonl")) == 50
        assert c1.get("/api/record?id=r-sum")[1]["review"]["verdicts"] == 50   # each sees the other's verdicts
    finally:
        for p in (p1, p2):
            p.kill()
            p.wait(10)


def test_index_is_reused_and_rebuilt_when_the_run_changes(tmp_path):
    run = make_big(tmp_path / "big", 3000)
    proc, base, _ = start_view(run)
    c = Client(base)
    try:
        deadline = time.monotonic() + 60
        while c.get("/api/status")[1]["index"]["phase"] != "ready" and time.monotonic() < deadline:
            time.sleep(0.1)
        page = c.get("/api/records?page=9&size=100&lang=zh")[1]
        assert page["total"] == 1000 and len(page["items"]) == 100
    finally:
        proc.kill()
        proc.wait(10)
    proc, base, line = start_view(run)
    try:
        index = Client(base).get("/api/status")[1]["index"]
        assert "indexing" not in line and index["phase"] == "ready" and index["done_bytes"] == 0   # read nothing
    finally:
        proc.kill()
        proc.wait(10)
    with open(run / "records.jsonl", "a") as f:
        f.write(json.dumps({"id": "late-1", "instruction": "A late task about zebras.", "output": "ok",
                            "lineage": {"round": 1}}) + "\n")
    proc, base, _ = start_view(run)
    try:
        c = Client(base)
        deadline = time.monotonic() + 60
        while c.get("/api/records?q=zebras")[1]["total"] != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.get("/api/records?q=zebras")[1]["items"][0]["id"] == "late-1"
    finally:
        proc.kill()
        proc.wait(10)
