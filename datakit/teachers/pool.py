"""The teacher client: every request datakit makes to an LLM goes through :class:`TeacherPool`.

``openai.AsyncOpenAI`` clients per endpoint, over ``httpx2.AsyncClient`` connection pools
(the httpx fork the openai SDK itself is built on) sized to the concurrency, with the SDK's own
retries switched off so that datakit can count, pace and cache them itself:

* bounded concurrency (global ``concurrency`` and optional per-teacher caps), a slot held only
  while a request is on the wire, never through rate-limit waits, backoff or ``Retry-After``
  sleeps, so that one throttled teacher cannot starve the others;
* optional requests- and tokens-per-minute limits (:mod:`datakit.teachers.ratelimit`);
* retries on 429, 5xx, timeouts, dropped connections and malformed 200 answers, with
  exponential backoff and full jitter, honouring ``Retry-After`` / ``retry-after-ms``;
* a per-request timeout;
* the SQLite response cache (:mod:`datakit.teachers.cache`) consulted before and written
  after every request, so no answered request is paid for twice;
* token and cost accounting per teacher, and an optional spending cap
  (:mod:`datakit.teachers.budget`) that reserves each request's worst case before it is sent;
* a *collect* mode (``pool.collecting()``) in which requests missing from the cache are noted
  instead of sent: the batch API (:mod:`datakit.teachers.batch`) answers them into the cache,
  and ``--dry-run`` (:mod:`datakit.teachers.estimate`) prices them.

Problems that no retry can fix (unreachable endpoint at start, a rejected key, an unknown
model, a teacher failing every request) raise :class:`~datakit.errors.TeacherError`; one
request that still fails after its retries, or that the teacher refuses (a 400, 422, ...),
comes back as a ``ChatResult`` with ``ok=False`` so the caller can record it and move on.
``MAX_CONSECUTIVE_FAILURES`` such failures in a row take the teacher out: that request and
every later one to it raise ``TeacherError``. A request that cannot be encoded is a bug: its
exception propagates at once, neither retried nor counted as a failed answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import httpx2 as httpx
import openai

from datakit.config import DatakitConfig, TeacherConfig
from datakit.errors import TeacherError
from datakit.teachers.budget import Budget, budget_for, worst_case_cost
from datakit.teachers.cache import ResponseCache, request_key
from datakit.teachers.ratelimit import TokenBucket

MAX_CONSECUTIVE_FAILURES = 10
MAX_CUT_RETRIES = 2  # retries of an answer cut short (see cut_short)
CONNECTIONS_PER_CLIENT = 8
_NO_LIMIT = contextlib.nullcontext()


@dataclass
class ChatResult:
    ok: bool
    text: str | None
    error: str | None
    cached: bool
    teacher: str
    model: str
    params: dict[str, Any]
    usage: dict[str, int]
    key: str
    finish_reason: str | None = None


@dataclass
class Pending:
    """A request noted in collect mode: where it would go, its cache key and its body."""
    teacher: "Teacher"
    key: str
    request: dict[str, Any]
    cached: bool = False   # the cache answers it (nothing to pay)


COLLECTED = "not sent (collected for a batch or an estimate)"


@dataclass
class TeacherStats:
    requests: int = 0          # answered HTTP requests (billed by the provider)
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0          # requests that failed after all retries
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0       # busy time: wall seconds with at least one request in flight
    batch_requests: int = 0    # of ``requests``, those answered through the batch API
    errors: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["errors"] = dict(self.errors)
        return d

    def add(self, other: dict[str, Any]) -> None:
        for k, v in other.items():
            if k == "errors":
                self.errors.update(v)
            else:
                setattr(self, k, getattr(self, k) + v)


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


def _retry_after(headers: httpx.Headers | None) -> float | None:
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return float(ra)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(ra)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def backoff_delay(attempt: int, retry_after: float | None, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): the server's Retry-After when
    it gave one (plus a little jitter so that many clients do not return in lockstep), else
    exponential backoff with full jitter."""
    if retry_after is not None:
        return min(retry_after, 120.0) + random.uniform(0, 0.1 * min(retry_after, 120.0) + 0.01)
    return random.uniform(0, min(cap, base * 2 ** attempt))


class Teacher:
    """One endpoint: its client, limits and statistics."""

    def __init__(self, cfg: TeacherConfig, *, cache_identity: str | None = None, max_in_flight: int = 64):
        self.cfg = cfg
        self.name = cfg.name
        self.cache_identity = cache_identity or cfg.base_url.rstrip("/")
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        if cfg.api_key_env and not key:
            raise TeacherError(f"teacher '{cfg.name}': environment variable {cfg.api_key_env} is not set")
        limit = min(cfg.concurrency or max_in_flight, max_in_flight)
        # The HTTP connection pool scans its connections on every request, a cost that grows
        # with the pool: several small pools keep client CPU per request flat at high concurrency.
        shards = max(1, -(-limit // CONNECTIONS_PER_CLIENT))
        per = -(-limit // shards)
        ssl_context = httpx.create_ssl_context()  # building one costs ~60 ms: share it
        self._https = [httpx.AsyncClient(
            verify=ssl_context, limits=httpx.Limits(max_connections=per, max_keepalive_connections=per),
            timeout=httpx.Timeout(cfg.timeout, connect=min(10.0, cfg.timeout))) for _ in range(shards)]
        self.clients = [openai.AsyncOpenAI(base_url=cfg.base_url, api_key=key or "none", http_client=h,
                                           max_retries=0, timeout=cfg.timeout) for h in self._https]
        self.client = self.clients[0]
        self._shard_load = [0] * shards
        c = self.client
        self._url = str(c.base_url).rstrip("/") + "/chat/completions"
        self._headers = {k: v for k, v in {**c.default_headers, **c.auth_headers}.items() if isinstance(v, str)}
        self.sem = asyncio.Semaphore(cfg.concurrency) if cfg.concurrency else None
        self.rpm = TokenBucket(cfg.rpm) if cfg.rpm else None
        self.tpm = TokenBucket(cfg.tpm) if cfg.tpm else None
        self.stats = TeacherStats()
        self.consecutive_failures = 0
        self.out: str | None = None   # why the teacher was taken out, once it is
        self._inflight = 0
        self._busy_since = 0.0

    def where(self) -> str:
        return f"teacher '{self.name}' at {self.cfg.base_url}"

    def prices(self, batch: bool = False) -> tuple[float, float]:
        return prices(self.cfg, batch)

    def cost(self, usage: dict[str, int], batch: bool = False) -> float:
        pi, po = self.prices(batch)
        return (usage.get("prompt_tokens", 0) * pi + usage.get("completion_tokens", 0) * po) / 1e6

    async def preflight(self) -> None:
        """Fail fast, with one clear line, on an unreachable endpoint or a rejected key.

        A transient fault (a dropped connection, a timeout, a 429 or 5xx) is retried like any
        request, with a shorter backoff: one dropped connection at start must not end a run."""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                await asyncio.sleep(backoff_delay(attempt - 1, None, base=0.25, cap=2.0))
            try:
                await self.client.models.list()
                return
            except openai.AuthenticationError as e:
                raise TeacherError(f"{self.where()} rejected the API key"
                                   f"{' from $' + self.cfg.api_key_env if self.cfg.api_key_env else ''}"
                                   f" (HTTP {e.status_code})") from None
            except openai.PermissionDeniedError as e:
                raise TeacherError(f"{self.where()} refused access (HTTP {e.status_code})") from None
            except (openai.APIConnectionError, openai.APITimeoutError) as e:
                cause = e.__cause__ or e
                last = f"{type(cause).__name__}: {cause}"
            except openai.APIStatusError as e:
                if not (e.status_code >= 500 or e.status_code in (408, 409, 429)) or attempt == self.cfg.max_retries:
                    return  # some servers have no /models; the first real request will tell
            except (openai.APIResponseValidationError, ValueError, TypeError):
                return
        tries = self.cfg.max_retries + 1
        raise TeacherError(f"cannot reach {self.where()} ({last}; {tries} attempt{'s' * (tries > 1)})")

    async def complete(self, request: dict[str, Any], slot: asyncio.Semaphore | None = None) -> dict[str, Any]:
        """Send one chat request with retries; return ``{"text", "usage", "finish_reason"}``.

        ``slot`` (the pool's global limit) and the teacher's own cap are held per attempt, only
        while the request is on the wire."""
        self._check_in()
        body = json.dumps(request).encode()  # not under any except: a bug here is no failed answer
        est = sum(len(m.get("content") or "") for m in request["messages"]) / 3 + request.get("max_tokens", 256)
        last: _Retryable | None = None
        cuts = 0
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(backoff_delay(attempt - 1, last.retry_after if last else None))
                self._check_in()
            if self.rpm:
                await self.rpm.acquire(1)
            if self.tpm:
                await self.tpm.acquire(est)
            try:
                answer = self._parse(await self._send(body, slot), est)
                if cut_short(answer, request) and cuts < MAX_CUT_RETRIES and attempt < self.cfg.max_retries:
                    cuts += 1
                    raise _Retryable("truncated", "answer cut short of max_tokens (finish_reason length)")
            except _Retryable as e:
                self.stats.errors[e.kind] += 1
                last = e
                continue
            except _Failed as e:
                self.stats.errors["refused"] += 1
                self._count_failure(e)
                raise
            self.consecutive_failures = 0
            return answer
        self._count_failure(last)
        raise _Retryable(last.kind if last else "error", str(last))

    def _check_in(self) -> None:
        if self.out is not None:
            raise TeacherError(self.out)

    def _count_failure(self, error: Exception | None) -> None:
        """One request failed for good; enough of them in a row take the teacher out."""
        self.stats.failures += 1
        self.consecutive_failures += 1
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES and self.out is None:
            self.out = (f"{self.where()} failed {self.consecutive_failures} requests in a row; "
                        f"last error: {error}")
        self._check_in()

    async def _post(self, body: bytes) -> bytes:
        """POST the body through the least busy connection pool, with the SDK client's own
        headers, and turn error statuses into the SDK's exceptions.

        This is the chat-completions path of ``AsyncOpenAI`` minus its request-option models,
        parameter transformation and response models, which cost more CPU per request than
        the whole rest of datakit's path (see bench/bench_teacher_client.py)."""
        i = min(range(len(self.clients)), key=self._shard_load.__getitem__)
        self._shard_load[i] += 1
        try:
            try:
                resp = await self._https[i].post(self._url, content=body, headers=self._headers)
            except httpx.TimeoutException as e:
                raise openai.APITimeoutError(request=e.request) from e
            except httpx.TransportError as e:
                raise openai.APIConnectionError(message=str(e) or type(e).__name__, request=e.request) from e
            if resp.status_code >= 400:
                raise self.client._make_status_error_from_response(resp)
            return resp.content
        finally:
            self._shard_load[i] -= 1

    async def _send(self, body: bytes, slot: asyncio.Semaphore | None) -> bytes:
        """One attempt: the raw answer, or the failure sorted into retryable, refused or fatal."""
        try:
            # the teacher's own cap first: a request queued behind it must not hold a global slot
            async with self.sem or _NO_LIMIT, slot or _NO_LIMIT:
                self._check_in()
                return await self._timed_post(body)
        except openai.AuthenticationError as e:
            raise TeacherError(f"{self.where()} rejected the API key (HTTP {e.status_code})") from None
        except openai.PermissionDeniedError as e:
            raise TeacherError(f"{self.where()} refused access (HTTP {e.status_code})") from None
        except openai.NotFoundError as e:
            raise TeacherError(f"{self.where()} does not know model '{self.cfg.model}' "
                               f"(HTTP 404: {_short(e)})") from None
        except openai.RateLimitError as e:
            raise _Retryable("429", f"HTTP 429: {_short(e)}", _retry_after(e.response.headers)) from None
        except openai.APITimeoutError:
            raise _Retryable("timeout", f"no answer within {self.cfg.timeout:g} s") from None
        except openai.APIConnectionError as e:
            raise _Retryable("connection", f"connection error: {e.__cause__ or e}") from None
        except openai.APIStatusError as e:
            if e.status_code >= 500 or e.status_code in (408, 409):
                raise _Retryable(str(e.status_code), f"HTTP {e.status_code}: {_short(e)}",
                                 _retry_after(e.response.headers)) from None
            raise _Failed(f"HTTP {e.status_code}: {_short(e)}") from None
        except httpx.DecodingError as e:  # a body its own Content-Encoding cannot decode
            raise _Retryable("malformed", f"malformed answer: {_short(e)}") from None

    async def _timed_post(self, body: bytes) -> bytes:
        """``_post``, adding the wall time with at least one request in flight to the stats."""
        if self._inflight == 0:
            self._busy_since = time.perf_counter()
        self._inflight += 1
        try:
            return await self._post(body)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self.stats.seconds += time.perf_counter() - self._busy_since

    def _parse(self, raw: bytes, est: float) -> dict[str, Any]:
        """Read a 200 answer and account for it; anything wrong with it is retryable."""
        try:
            answer = read_completion(json.loads(raw))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise _Retryable("malformed", f"malformed answer: {type(e).__name__}: {str(e)[:100]}") from None
        if not answer["text"].strip():
            raise _Retryable("empty", "empty answer")
        self.account(answer["usage"])
        u = answer["usage"]
        if self.tpm and (u["prompt_tokens"] or u["completion_tokens"]):
            self.tpm.adjust(u["prompt_tokens"] + u["completion_tokens"] - est)
        return answer

    def account(self, usage: dict[str, int], batch: bool = False) -> float:
        """Count one answered (billed) request in the stats; returns its cost."""
        s = self.stats
        s.requests += 1
        s.batch_requests += batch
        s.prompt_tokens += usage["prompt_tokens"]
        s.completion_tokens += usage["completion_tokens"]
        cost = self.cost(usage, batch)
        s.cost += cost
        return cost

    async def aclose(self) -> None:
        for c in self.clients:
            await c.close()
        for h in self._https:
            await h.aclose()


def prices(cfg: TeacherConfig, batch: bool = False) -> tuple[float, float]:
    """USD per million prompt and completion tokens, online or through the batch API (whose
    prices default to the online ones)."""
    if batch:
        return (cfg.price_input if cfg.batch_price_input is None else cfg.batch_price_input,
                cfg.price_output if cfg.batch_price_output is None else cfg.batch_price_output)
    return cfg.price_input, cfg.price_output


def read_completion(resp: dict[str, Any]) -> dict[str, Any]:
    """A chat completion body as datakit keeps it: ``{"text", "usage", "finish_reason"}``
    (raises KeyError/TypeError/... on a malformed one). Online and batch answers alike."""
    choice = resp["choices"][0]
    text = choice["message"]["content"]
    if not isinstance(text, str):
        raise TypeError("no message content")
    usage = resp.get("usage") or {}
    return {"text": text, "usage": {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
                                    "completion_tokens": int(usage.get("completion_tokens") or 0)},
            "finish_reason": choice.get("finish_reason")}


def cut_short(answer: dict[str, Any], request: dict[str, Any]) -> bool:
    """A ``finish_reason: length`` answer that stopped before the ``max_tokens`` it was given: cut
    by the server or a proxy, not by the cap. Retried (at most ``MAX_CUT_RETRIES`` times, then
    kept as it is: a small context window cuts the same way every time)."""
    cap = request.get("max_tokens") or request.get("max_completion_tokens")
    return answer.get("finish_reason") == "length" and bool(cap) and answer["usage"]["completion_tokens"] < cap


class _Failed(Exception):
    """A request the server refused for good (a 4xx other than 401/403/404/408/409/429)."""


def _short(e: Exception) -> str:
    msg = getattr(e, "message", None) or str(e)
    return msg.splitlines()[0][:200] if msg else type(e).__name__


class TeacherPool:
    """Routes each request to a teacher with the right role, caching and accounting it."""

    def __init__(self, teachers: list[Teacher], cache: ResponseCache, concurrency: int):
        if not teachers:
            raise TeacherError("no teacher configured")
        self.teachers = teachers
        self.by_name = {t.name: t for t in teachers}
        self.cache = cache
        self.sem = asyncio.Semaphore(concurrency)  # requests on the wire, all teachers together
        self.budget: Budget | None = None
        self.batch: Any = None  # the config's BatchConfig (batch mode, see datakit.teachers.batch)
        self.collector: list[Pending] | None = None  # collect mode: note requests, send nothing
        self.prepaid: set[str] = set()  # keys a batch answered this session, not yet handed out

    @contextlib.contextmanager
    def collecting(self):
        """Collect mode: ``chat`` answers from the cache, and notes every other request (a
        :class:`Pending`) in the list this yields instead of sending it."""
        self.collector = []
        try:
            yield self.collector
        finally:
            self.collector = None

    def for_role(self, role: str) -> list[Teacher]:
        ts = [t for t in self.teachers if role in t.cfg.roles]
        if not ts:
            raise TeacherError(f"no teacher has the role '{role}' (configure roles = [\"{role}\", ...])")
        return ts

    def pick(self, role: str, route_key: str) -> Teacher:
        """Weighted choice among the role's teachers, a deterministic function of ``route_key``
        so that a resumed run sends each request to the same teacher (and hits the cache)."""
        ts = self.for_role(role)
        if len(ts) == 1:
            return ts[0]
        total = sum(t.cfg.weight for t in ts)
        x = (int(route_key[:12], 16) / float(16 ** 12)) * total
        for t in ts:
            x -= t.cfg.weight
            if x < 0:
                return t
        return ts[-1]

    def build_request(self, teacher: Teacher, messages: list[dict[str, str]], params: dict[str, Any],
                      json_mode: bool, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        req: dict[str, Any] = {"model": teacher.cfg.model, "messages": messages, **params}
        if json_mode and teacher.cfg.json_mode:
            mode = teacher.cfg.schema_mode
            if schema is not None and mode == "json_schema":
                req["response_format"] = {"type": "json_schema",
                                          "json_schema": {"name": "answer", "schema": schema, "strict": True}}
            elif schema is not None and mode == "llama_cpp":
                req["response_format"] = {"type": "json_object", "schema": schema}
            else:
                req["response_format"] = {"type": "json_object"}
        return req

    async def chat(self, role: str, messages: list[dict[str, str]], *, params: dict[str, Any] | None = None,
                   json_mode: bool = False, schema: dict[str, Any] | None = None, salt: str = "",
                   teacher: str | None = None) -> ChatResult:
        """One chat request: from the cache when it has the answer, else sent (with retries).
        ``json_mode`` asks for a JSON object; ``schema`` constrains it where the teacher's
        ``schema_mode`` allows."""
        params = dict(params or {})
        route = request_key({"messages": messages, "params": params, "salt": salt, "role": role})
        if teacher is not None:
            if teacher not in self.by_name:
                raise TeacherError(f"unknown teacher '{teacher}' (configured: {', '.join(self.by_name)})")
            t = self.by_name[teacher]
        else:
            t = self.pick(role, route)
        req = self.build_request(t, messages, params, json_mode, schema)
        key = request_key({"endpoint": t.cache_identity, "request": req, "salt": salt})
        hit = self.cache.get(key)
        if hit is not None:
            return self._from_cache(t, key, req, params, hit)
        if self.collector is not None:
            self.collector.append(Pending(t, key, req))
            return ChatResult(False, None, COLLECTED, False, t.name, t.cfg.model, params, {}, key)
        return await self._send(t, req, key, params)

    def _from_cache(self, t: Teacher, key: str, req: dict[str, Any], params: dict[str, Any],
                    hit: dict[str, Any]) -> ChatResult:
        cached = True
        if self.collector is not None:
            self.collector.append(Pending(t, key, req, cached=True))
        else:
            # an answer a batch bought this session is handed out as a fresh one, so that
            # records are the same as online; any other hit was paid for before
            cached = key not in self.prepaid
            self.prepaid.discard(key)
            t.stats.cache_hits += cached
        return ChatResult(True, hit["text"], None, cached, t.name, t.cfg.model, params,
                          hit.get("usage", {}), key, hit.get("finish_reason"))

    async def _send(self, t: Teacher, req: dict[str, Any], key: str, params: dict[str, Any]) -> ChatResult:
        """Send a request that is not in the cache, within the budget; cache its answer."""
        worst = worst_case_cost(req, *t.prices()) if self.budget else 0.0
        if self.budget and not await self.budget.reserve(t.name, worst):
            return ChatResult(False, None, self.budget.stop_message(), False, t.name, t.cfg.model, params, {}, key)
        cost = 0.0
        try:
            answer = await t.complete(req, slot=self.sem)
            cost = t.cost(answer["usage"])
        except (_Retryable, _Failed) as e:
            return ChatResult(False, None, str(e), False, t.name, t.cfg.model, params, {}, key)
        finally:
            if self.budget:
                self.budget.settle(t.name, worst, cost)
        self.cache.put(key, req, {**answer, "teacher": t.name, "cost": cost})
        return ChatResult(True, answer["text"], None, False, t.name, t.cfg.model, params,
                          answer["usage"], key, answer.get("finish_reason"))

    async def preflight(self) -> None:
        await asyncio.gather(*(t.preflight() for t in self.teachers))

    def stats(self) -> dict[str, dict[str, Any]]:
        return {t.name: t.stats.to_dict() for t in self.teachers}

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per teacher for a summary table."""
        rows = []
        for t in self.teachers:
            s = t.stats
            rows.append({"teacher": t.name, "model": t.cfg.model, "requests": s.requests,
                         "cached": s.cache_hits, "retries": s.retries, "failed": s.failures,
                         "tok in": s.prompt_tokens, "tok out": s.completion_tokens,
                         "USD": round(s.cost, 4),
                         "tok/s": round(s.completion_tokens / s.seconds, 1) if s.seconds else 0.0})
        if any(t.stats.errors for t in self.teachers):  # every fault a retry absorbed, by kind
            for row, t in zip(rows, self.teachers):
                row["faults"] = " ".join(f"{k}:{v}" for k, v in sorted(t.stats.errors.items())) or "-"
        if any(t.stats.batch_requests for t in self.teachers):
            for row, t in zip(rows, self.teachers):
                row["batched"] = t.stats.batch_requests
        return rows

    def budget_stop(self) -> str | None:
        """Why the budget stopped this session (None: it did not)."""
        return self.budget.stop_message() if self.budget else None

    async def aclose(self) -> None:
        for t in self.teachers:
            await t.aclose()
        self.cache.close()


@contextlib.asynccontextmanager
async def open_teachers(cfg: DatakitConfig, cache_path: str | Path, *, log_dir: str | Path | None = None,
                        preflight: bool = True, on_status=None) -> AsyncIterator[TeacherPool]:
    """Open the configured teachers, or start the bundled local teacher when none is configured,
    and close everything (the local server included) on the way out."""
    local = None
    try:
        if cfg.teachers:
            teachers = [Teacher(tc, max_in_flight=cfg.concurrency) for tc in cfg.teachers]
        else:
            from datakit.teachers.local import LocalTeacher

            local = LocalTeacher(cfg.local, log_path=Path(log_dir) / "local-teacher.log" if log_dir else None)
            if on_status:
                on_status(f"starting the bundled local teacher ({local.model_name})")
            await asyncio.to_thread(local.start)
            teachers = [Teacher(local.teacher_config(), cache_identity=local.cache_identity)]
        pool = TeacherPool(teachers, ResponseCache(cache_path), cfg.concurrency)
        pool.budget = budget_for(cfg, teachers, pool.cache.spent)
        pool.batch = cfg.batch
        try:
            if preflight:
                await pool.preflight()
            yield pool
        finally:
            await pool.aclose()
    finally:
        if local is not None:
            await asyncio.to_thread(local.stop)
