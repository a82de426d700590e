"""The teacher client's failure contract against the real scripted server on 127.0.0.1: a
teacher that refuses everything stops the run, a bug in building a request is not retried, a
throttled teacher does not starve the others, and the private openai API it leans on is pinned."""

import asyncio
import inspect
import time

import httpx2 as httpx
import openai
import pytest

from datakit.config import TeacherConfig
from datakit.errors import TeacherError
from datakit.teachers.cache import ResponseCache
from datakit.teachers.fake_server import FakeOpenAIServer, Faults
from datakit.teachers.pool import MAX_CONSECUTIVE_FAILURES, Teacher, TeacherPool


def make_pool(tmp_path, *cfgs, concurrency=16):
    return TeacherPool([Teacher(c) for c in cfgs], ResponseCache(tmp_path / "cache.sqlite"), concurrency)


def cfg(url, **kw):
    return TeacherConfig(**{"name": "t", "base_url": url, "model": "m", "timeout": 5.0, **kw})


def msgs(i):
    return [{"role": "user", "content": f"question {i}"}]


def test_a_teacher_refusing_everything_is_taken_out(tmp_path):
    with FakeOpenAIServer(faults=Faults(rate_400=1.0)) as srv:
        async def go():
            pool = make_pool(tmp_path, cfg(srv.base_url))
            try:
                before = [await pool.chat("generate", msgs(i)) for i in range(MAX_CONSECUTIVE_FAILURES - 1)]
                with pytest.raises(TeacherError) as last:
                    await pool.chat("generate", msgs("last"))
                sent = srv.stats.requests
                with pytest.raises(TeacherError) as after:   # out: refused here, not sent
                    await pool.chat("generate", msgs("after"))
                return before, str(last.value), str(after.value), sent, pool.stats()["t"]
            finally:
                await pool.aclose()
        before, last, after, sent, stats = asyncio.run(go())
    assert all(not r.ok and r.error.startswith("HTTP 400") for r in before)
    assert f"failed {MAX_CONSECUTIVE_FAILURES} requests in a row" in last and "HTTP 400" in last
    assert last.startswith(f"teacher 't' at {srv.base_url}")
    assert after == last
    assert sent == srv.stats.requests == MAX_CONSECUTIVE_FAILURES
    assert stats["failures"] == stats["errors"]["refused"] == MAX_CONSECUTIVE_FAILURES
    assert stats["retries"] == 0   # a refusal is final: never retried


def test_a_concurrent_run_against_a_refusing_teacher_stops(tmp_path):
    with FakeOpenAIServer(faults=Faults(rate_400=1.0), latency=0.01) as srv:
        async def go():
            pool = make_pool(tmp_path, cfg(srv.base_url), concurrency=4)
            try:
                return await asyncio.gather(*(pool.chat("generate", msgs(i)) for i in range(60)),
                                            return_exceptions=True)
            finally:
                await pool.aclose()
        res = asyncio.run(go())
    errors = [r for r in res if isinstance(r, TeacherError)]
    assert len(errors) > 60 - MAX_CONSECUTIVE_FAILURES - 4
    assert srv.stats.requests < MAX_CONSECUTIVE_FAILURES + 2 * 4   # nothing sent once it is out


def test_a_few_refused_requests_do_not_take_a_healthy_teacher_out(tmp_path):
    n = MAX_CONSECUTIVE_FAILURES - 1
    script = ["400"] * n + [None] + ["400"] * n + [None] * 3
    with FakeOpenAIServer(script=script) as srv:
        async def go():
            pool = make_pool(tmp_path, cfg(srv.base_url))
            try:
                res = [await pool.chat("generate", msgs(i)) for i in range(len(script))]
                return res, pool.stats()["t"]
            finally:
                await pool.aclose()
        res, stats = asyncio.run(go())
    assert [r.ok for r in res] == [s is None for s in script]
    assert stats["failures"] == stats["errors"]["refused"] == 2 * n
    assert srv.stats.requests == len(script)


def test_a_request_that_cannot_be_encoded_fails_at_once(tmp_path):
    with FakeOpenAIServer() as srv:
        async def go():
            t = Teacher(cfg(srv.base_url, max_retries=3))
            try:
                # A set is not JSON: a bug in the caller, not something a retry could fix.
                with pytest.raises(TypeError, match="set"):
                    await t.complete({"model": "m", "messages": msgs(0), "metadata": {"a", "b"}})
                return t.stats.to_dict(), t.consecutive_failures
            finally:
                await t.aclose()
        stats, consecutive = asyncio.run(go())
    assert srv.stats.requests == 0
    assert stats["retries"] == 0 and stats["errors"] == {} and stats["failures"] == 0
    assert consecutive == 0


def test_a_rate_limited_teacher_does_not_starve_the_others(tmp_path):
    retry_after = 3.0
    with FakeOpenAIServer(faults=Faults(rate_429=1.0, retry_after=retry_after)) as slow, \
            FakeOpenAIServer(latency=0.02) as fast:
        async def go():
            pool = make_pool(tmp_path, cfg(slow.base_url, name="slow", max_retries=1),
                             cfg(fast.base_url, name="fast"), concurrency=2)
            done = []
            t0 = time.monotonic()

            async def one(name, i):
                r = await pool.chat("generate", msgs(i), teacher=name)
                done.append((name, time.monotonic() - t0, slow.stats.requests))
                return r

            try:
                # the throttled teacher's requests come first and take both global slots
                res = await asyncio.gather(*(one("slow", i) for i in range(2)),
                                           *(one("fast", i) for i in range(20)))
                return res, done
            finally:
                await pool.aclose()
        res, done = asyncio.run(go())
    assert [r.ok for r in res] == [False] * 2 + [True] * 20
    order = [name for name, _, _ in done]
    assert order == ["fast"] * 20 + ["slow"] * 2, order
    last_fast = done[19]
    # every fast request was answered while the slow teacher still waited out its Retry-After
    assert last_fast[2] == 2, done
    assert last_fast[1] < retry_after, done


def test_a_teacher_at_its_own_cap_holds_no_global_slot(tmp_path):
    with FakeOpenAIServer(latency=0.5) as capped, FakeOpenAIServer(latency=0.02) as free:
        async def go():
            pool = make_pool(tmp_path, cfg(capped.base_url, name="capped", concurrency=1),
                             cfg(free.base_url, name="free"), concurrency=2)
            done = []

            async def one(name, i):
                r = await pool.chat("generate", msgs(i), teacher=name)
                done.append(name)
                return r

            try:
                res = await asyncio.gather(*(one("capped", i) for i in range(4)),
                                           *(one("free", i) for i in range(10)))
                return res, done
            finally:
                await pool.aclose()
        res, done = asyncio.run(go())
    assert all(r.ok for r in res)
    # the capped teacher serves one request at a time; while its queue waits for its own cap,
    # the free teacher gets the other global slot and finishes before the capped one's second
    second_capped = [i for i, n in enumerate(done) if n == "capped"][1]
    assert done[:second_capped].count("free") == 10, done


def test_the_private_openai_api_datakit_uses_is_still_there():
    """``Teacher._post`` turns error statuses into the SDK's exceptions through the private
    ``AsyncOpenAI._make_status_error_from_response``; pyproject.toml pins openai for it."""
    where = ("datakit/teachers/pool.py (Teacher._post) calls the private "
             f"openai.AsyncOpenAI._make_status_error_from_response; openai {openai.__version__}")
    fn = getattr(openai.AsyncOpenAI, "_make_status_error_from_response", None)
    assert fn is not None, f"{where} no longer has it: keep the pin in pyproject.toml or port _post"
    params = list(inspect.signature(fn).parameters)
    assert params == ["self", "response"], f"{where} changed its signature to {params}: port _post"
    client = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="none", max_retries=0)
    expected = {400: openai.BadRequestError, 401: openai.AuthenticationError,
                403: openai.PermissionDeniedError, 404: openai.NotFoundError,
                409: openai.ConflictError, 422: openai.UnprocessableEntityError,
                429: openai.RateLimitError, 500: openai.InternalServerError,
                503: openai.InternalServerError}
    try:
        for status, cls in expected.items():
            req = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
            resp = httpx.Response(status, json={"error": {"message": "nope"}}, request=req)
            err = client._make_status_error_from_response(resp)
            assert type(err) is cls and err.status_code == status, \
                f"{where} maps HTTP {status} to {type(err).__name__}, not {cls.__name__}: port _post"
            assert err.response is resp, f"{where} no longer keeps the response (Retry-After): port _post"
    finally:
        asyncio.run(client.close())
