"""The teacher client against the real fault-injecting server on 127.0.0.1."""

import asyncio
import time

import pytest

from datakit.config import TeacherConfig
from datakit.errors import TeacherError
from datakit.teachers.cache import ResponseCache
from datakit.teachers.fake_server import FakeOpenAIServer, Faults
from datakit.teachers.pool import Teacher, TeacherPool, backoff_delay


def make_pool(tmp_path, *cfgs, concurrency=16):
    return TeacherPool([Teacher(c) for c in cfgs], ResponseCache(tmp_path / "cache.sqlite"), concurrency)


def cfg(url, **kw):
    return TeacherConfig(**{"name": "t", "base_url": url, "model": "m", "timeout": 2.0, **kw})


def msgs(i):
    return [{"role": "user", "content": f"question {i}"}]


def test_faults_are_retried_counted_and_nothing_is_lost(tmp_path):
    faults = Faults(rate_429=0.15, rate_500=0.1, rate_drop=0.05, rate_garbage=0.05, rate_hang=0.02,
                    hang_seconds=30, retry_after=0.05)
    with FakeOpenAIServer(faults=faults, seed=1) as srv:
        async def go():
            pool = make_pool(tmp_path, cfg(srv.base_url, timeout=1.0, max_retries=8))
            res = await asyncio.gather(*(pool.chat("generate", msgs(i)) for i in range(120)))
            stats = pool.stats()["t"]
            await pool.aclose()
            return res, stats
        res, stats = asyncio.run(go())
    assert all(r.ok for r in res), [r.error for r in res if not r.ok]
    assert len({r.text for r in res}) == 120
    injected = sum(v for k, v in srv.stats.statuses.items() if k != "200")
    assert injected > 10
    assert stats["retries"] == injected == sum(stats["errors"].values())
    assert stats["requests"] == srv.stats.statuses["200"] == 120
    assert {"429", "500", "connection", "malformed", "timeout"} <= set(stats["errors"])


def test_cache_means_a_rerun_pays_nothing(tmp_path):
    with FakeOpenAIServer() as srv:
        async def go():
            pool = make_pool(tmp_path, cfg(srv.base_url))
            first = await asyncio.gather(*(pool.chat("generate", msgs(i)) for i in range(10)))
            await pool.aclose()
            pool = make_pool(tmp_path, cfg(srv.base_url))
            second = await asyncio.gather(*(pool.chat("generate", msgs(i)) for i in range(10)))
            salted = await pool.chat("generate", msgs(0), salt="sample-2")
            await pool.aclose()
            return first, second, salted
        first, second, salted = asyncio.run(go())
    assert [r.text for r in first] == [r.text for r in second]
    assert not any(r.cached for r in first) and all(r.cached for r in second)
    assert not salted.cached
    assert srv.stats.statuses["200"] == 11


def test_retry_after_is_honoured(tmp_path):
    with FakeOpenAIServer(faults=Faults(rate_429=1.0, retry_after=0.4)) as srv:
        async def go():
            pool = make_pool(tmp_path, cfg(srv.base_url, max_retries=2))
            t0 = time.monotonic()
            r = await pool.chat("generate", msgs(0))
            took = time.monotonic() - t0
            await pool.aclose()
            return r, took
        r, took = asyncio.run(go())
    assert not r.ok and "429" in r.error
    assert srv.stats.statuses["429"] == 3
    assert took >= 0.8  # two waits of Retry-After: 0.4


def test_backoff_grows_and_is_jittered():
    assert all(0 <= backoff_delay(0, None) <= 0.5 for _ in range(100))
    assert max(backoff_delay(5, None) for _ in range(200)) > 4.0
    assert 2.0 <= backoff_delay(0, 2.0) <= 2.3


def test_wrong_key_and_unreachable_endpoint_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "wrong")
    with FakeOpenAIServer(api_key="right") as srv:
        async def go():
            pool = make_pool(tmp_path, cfg(srv.base_url, api_key_env="FAKE_KEY"))
            try:
                await pool.preflight()
            finally:
                await pool.aclose()
        with pytest.raises(TeacherError, match=r"rejected the API key from \$FAKE_KEY \(HTTP 401\)"):
            asyncio.run(go())

    async def unreachable():
        pool = make_pool(tmp_path, cfg("http://127.0.0.1:9/v1"))
        try:
            await pool.preflight()
        finally:
            await pool.aclose()
    with pytest.raises(TeacherError, match=r"cannot reach teacher 't' at http://127.0.0.1:9/v1"):
        asyncio.run(unreachable())


def test_missing_key_variable(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(TeacherError, match="NO_SUCH_KEY_VAR is not set"):
        Teacher(cfg("http://127.0.0.1:9/v1", api_key_env="NO_SUCH_KEY_VAR"))


def test_routing_by_role_and_weight_is_deterministic(tmp_path):
    with FakeOpenAIServer(model="a") as a, FakeOpenAIServer(model="b") as b:
        async def go():
            pool = make_pool(tmp_path, cfg(a.base_url, name="a", weight=3.0, roles=["generate"]),
                             cfg(b.base_url, name="b", weight=1.0, roles=["generate", "judge"]))
            gen = await asyncio.gather(*(pool.chat("generate", msgs(i)) for i in range(200)))
            judge = await asyncio.gather(*(pool.chat("judge", msgs(i)) for i in range(5)))
            await pool.aclose()
            return gen, judge
        gen, judge = asyncio.run(go())
    share_a = sum(r.teacher == "a" for r in gen) / len(gen)
    assert 0.65 < share_a < 0.85
    assert {r.teacher for r in judge} == {"b"}


def test_rpm_limit_paces_requests(tmp_path):
    with FakeOpenAIServer() as srv:
        async def go():
            # 600 rpm = 10/s with a 10-second burst of 100: 130 requests need about 3 s.
            pool = make_pool(tmp_path, cfg(srv.base_url, rpm=600))
            t0 = time.monotonic()
            await asyncio.gather(*(pool.chat("generate", msgs(i)) for i in range(130)))
            took = time.monotonic() - t0
            await pool.aclose()
            return took
        took = asyncio.run(go())
    assert 2.5 < took < 6


def test_schema_modes_shape_the_request(tmp_path):
    schema = {"type": "object", "properties": {"output": {"type": "string"}}}
    seen = []

    def responder(body):
        seen.append(body.get("response_format"))
        return '{"output": "x"}'

    with FakeOpenAIServer(responder=responder) as srv:
        async def go():
            pool = make_pool(tmp_path, cfg(srv.base_url, name="off"),
                             cfg(srv.base_url, name="oa", schema_mode="json_schema"),
                             cfg(srv.base_url, name="ll", schema_mode="llama_cpp"),
                             cfg(srv.base_url, name="nojson", json_mode=False))
            for name in ("off", "oa", "ll", "nojson"):
                await pool.chat("respond", msgs(name), json_mode=True, schema=schema, teacher=name)
            await pool.chat("respond", msgs("plain"), teacher="oa")
            await pool.aclose()
        asyncio.run(go())
    assert seen == [{"type": "json_object"},
                    {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}},
                    {"type": "json_object", "schema": schema},
                    None, None]
