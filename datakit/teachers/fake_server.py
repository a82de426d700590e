"""A scripted, fault-injecting OpenAI-compatible server for tests and benchmarks.

Plain asyncio HTTP/1.1 with keep-alive (no web framework, so that its own cost stays small in
the client benchmark). It answers ``GET /v1/models`` and ``POST /v1/chat/completions`` with
canned, deterministic answers (a function of the request body, so a rerun gets the same
answer), after an optional fixed latency, and can inject at configurable rates:

* ``429`` with a ``Retry-After`` header,
* ``500``,
* ``hang`` (never answers; the client's timeout must fire),
* ``drop`` (closes the connection without an answer),
* ``garbage`` (a 200 whose body is not JSON),
* ``400`` (a permanent refusal: ``rate_400=1.0`` makes a teacher that refuses everything),
* ``503``, and ``429_bare`` (a 429 without ``Retry-After``),
* ``empty`` (a 200 whose completion is the empty string),
* ``length`` (a 200 whose completion is cut in half, ``finish_reason: "length"``, well short of
  the request's ``max_tokens``),
* ``truncated`` (a 200 whose JSON body is cut in half: a proxy that lost the end),
* ``midbody`` (the headers and half the body of a good answer, then the connection drops).

Faulty answers count in ``statuses`` under the fault's name, never in ``answered``.

``script`` fixes the outcome of the first chat requests in order (a list of fault names, None
for a normal answer), before the random faults take over: for tests that need an exact sequence.
``models_script`` does the same for ``GET /v1/models`` (the start-up check of a client), with
``drop``, ``hang`` or an HTTP status such as ``"503"``.

``GET /_stats`` returns counters: requests, answers by status, and for each distinct request
body (sha256) how many times it was received and answered with a 200 — what the resume tests
use to prove that no answered request was paid for twice. ``http`` counts every HTTP request
by route (what ``--dry-run`` tests use to prove that nothing at all was sent).

The batch API (``/v1/files``, ``/v1/batches``, see :mod:`datakit.teachers.fake_batch`) answers
each line exactly as the chat endpoint would, over a scripted time (:class:`BatchScript`:
processing seconds, a rate of failed lines, expiry), and counts batches created and lines
received per request body.

Run it standalone with ``python -m datakit.teachers.fake_server --port 8099 --latency 0.2``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from datakit.teachers.fake_batch import BatchScript, FakeBatches

Responder = Callable[[dict[str, Any]], str]

_VERBS = ["Write", "Explain", "Summarize", "Describe", "Compare", "List", "Outline", "Suggest", "Draft",
          "Design", "Evaluate", "Propose", "Rewrite", "Classify", "Translate", "Critique", "Plan",
          "Estimate", "Compose", "Argue", "Sketch out", "Illustrate with words", "Rank", "Recommend"]
_THINGS = ["a short poem", "three tips", "a checklist", "a dialogue", "an email", "a limerick", "a recipe",
           "a lesson plan", "a product description", "a riddle", "a haiku", "a cover letter", "an analogy",
           "a one-paragraph story", "a study schedule", "a slogan", "a debate opening", "a job posting",
           "a weekly budget", "a packing list", "a quiz question", "a thank-you note", "a headline"]
_TOPICS = ["volcanoes", "compound interest", "sourdough baking", "black holes", "remote work", "bees",
           "the French revolution", "recycling plastics", "marathon training", "quantum computing",
           "tea ceremonies", "urban gardening", "chess openings", "sleep hygiene", "the water cycle",
           "electric cars", "medieval castles", "jazz improvisation", "coral reefs", "password safety",
           "mountain hiking", "fermentation", "solar panels", "ancient Rome", "origami", "vaccines",
           "time zones", "typography", "public speaking", "migratory birds", "the stock market"]
_AUDIENCES = ["a ten-year-old", "a busy manager", "new employees", "retirees", "a science class",
              "first-time voters", "a startup founder", "exchange students", "night-shift nurses",
              "amateur astronomers", "a book club", "skeptical teenagers"]


def canned_task(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.06:
        return f"Draw a picture of {rng.choice(_TOPICS)}."          # blacklisted
    if roll < 0.10:
        return "Do it."                                              # too short
    return (f"{rng.choice(_VERBS)} {rng.choice(_THINGS)} about {rng.choice(_TOPICS)} "
            f"for {rng.choice(_AUDIENCES)}.")


def canned_task_list(rng: random.Random, n: int = 8) -> str:
    lines = [f"Sure! Here are {n} new tasks:", ""]
    for i in range(1, n + 1):
        lines.append(f"{i}. {canned_task(rng)}")
    lines += ["", "I hope these tasks are useful!"]
    return "\n".join(lines)


_CATEGORIES = ["Creative Writing", "Explanation", "Planning", "Persuasion", "Education", "Analysis"]
# How strong hosted (GPT-4 class) teachers often lay out a list, each as the lines of item i.
HOSTED_STYLES: dict[str, Callable[[int, str, str, str], list[str]]] = {
    "heading": lambda i, task, cat, topic: [f"### {i}. {task}", ""],
    "heading_title": lambda i, task, cat, topic: [f"### Task {i}: {cat}", task, ""],
    "bold_label": lambda i, task, cat, topic: [f"{i}. **{cat}**: {task}"],
    "bold_task": lambda i, task, cat, topic: [f"**Task {i}:**", task, ""],
    "label_input": lambda i, task, cat, topic: [f"{i}. **{cat}** - {task}", f'   Input: "Notes on {topic}."'],
}


def hosted_task_list(rng: random.Random, style: str, n: int = 8, first: int = 9) -> str:
    """The tasks of :func:`canned_task_list` laid out in one of ``HOSTED_STYLES``."""
    lines = [f"Sure! Here are {n} new tasks, numbered from {first}:", ""]
    for i in range(first, first + n):
        lines += HOSTED_STYLES[style](i, canned_task(rng), rng.choice(_CATEGORIES), rng.choice(_TOPICS))
    lines += ["", "Let me know if you would like more tasks in any category!"]
    return "\n".join(lines)


def canned_instance(rng: random.Random) -> str:
    return json.dumps({"input": f"Context about {rng.choice(_TOPICS)} for {rng.choice(_AUDIENCES)}.",
                       "output": f"A helpful answer that mentions {rng.choice(_TOPICS)} "
                                 f"and {rng.choice(_THINGS)} (#{rng.randrange(10**6)})."})


def _body_rng(body: dict[str, Any]) -> random.Random:
    return random.Random(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest())


def _wants_json(body: dict[str, Any]) -> bool:
    return body.get("response_format", {}).get("type") in ("json_object", "json_schema")


def default_responder(body: dict[str, Any]) -> str:
    """Deterministic answers shaped like what datakit's prompts ask for: a JSON object when JSON
    mode is requested, else a numbered task list with some chatter and some bad tasks."""
    rng = _body_rng(body)
    return canned_instance(rng) if _wants_json(body) else canned_task_list(rng)


_VARIED: list = []


def varied_task(rng: random.Random) -> str:
    """A task made from the synthetic corpus' templates plus a tail of words drawn uniformly
    from 20,000 made-up ones: enough variety that 100k of them mostly pass the ROUGE-L filter
    (two tasks share their template words at most). One in ten draws its tail from 12 words
    only, so that some tasks are near repeats the filter must drop."""
    if not _VARIED:
        from datakit.curate._synth import Synth

        _VARIED.append(Synth(0))
    synth = _VARIED[0]
    synth.rng = rng
    words = synth.vocab[:12] if rng.random() < 0.1 else synth.vocab
    tail = " ".join(rng.choice(words) for _ in range(rng.randint(5, 9)))
    return f"{synth.instruction()[:-1]} about {tail}."


def varied_responder(body: dict[str, Any]) -> str:
    """Like :func:`default_responder`, with :func:`varied_task` tasks (``--lists varied``)."""
    rng = _body_rng(body)
    if _wants_json(body):
        return canned_instance(rng)
    lines = ["Sure! Here are 8 new tasks:", ""]
    lines += [f"{i}. {varied_task(rng)}" for i in range(1, 9)]
    return "\n".join(lines + ["", "I hope these tasks are useful!"])


def hosted_responder(styles: tuple[str, ...] = tuple(HOSTED_STYLES)) -> Responder:
    """Like :func:`default_responder`, but each task list is laid out in one of ``styles``
    (picked per request), as strong hosted teachers write them."""
    def respond(body: dict[str, Any]) -> str:
        rng = _body_rng(body)
        return canned_instance(rng) if _wants_json(body) else hosted_task_list(rng, rng.choice(styles))
    return respond


@dataclass
class Faults:
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_hang: float = 0.0
    rate_drop: float = 0.0
    rate_garbage: float = 0.0
    retry_after: float = 0.05
    hang_seconds: float = 3600.0
    rate_400: float = 0.0
    rate_503: float = 0.0
    rate_429_bare: float = 0.0
    rate_empty: float = 0.0
    rate_length: float = 0.0
    rate_truncated: float = 0.0
    rate_midbody: float = 0.0

    @classmethod
    def spread(cls, total: float, **kw: Any) -> "Faults":
        """Every transient fault kind at once, ``total`` shared equally among them (no ``400``)."""
        kinds = ("429", "429_bare", "500", "503", "hang", "drop", "garbage", "empty", "length",
                 "truncated", "midbody")
        return cls(**{f"rate_{k}": total / len(kinds) for k in kinds}, **kw)

    def pick(self, rng: random.Random) -> str | None:
        x = rng.random()
        for name, rate in (("429", self.rate_429), ("500", self.rate_500), ("hang", self.rate_hang),
                           ("drop", self.rate_drop), ("garbage", self.rate_garbage),
                           ("400", self.rate_400), ("503", self.rate_503), ("429_bare", self.rate_429_bare),
                           ("empty", self.rate_empty), ("length", self.rate_length),
                           ("truncated", self.rate_truncated), ("midbody", self.rate_midbody)):
            if x < rate:
                return name
            x -= rate
        return None


@dataclass
class Stats:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    received: Counter = field(default_factory=Counter)   # body sha256 -> times received
    answered: Counter = field(default_factory=Counter)   # body sha256 -> times answered with 200
    http: Counter = field(default_factory=Counter)       # "METHOD route" -> HTTP requests
    batches_created: int = 0
    batch_lines: Counter = field(default_factory=Counter)  # body sha256 -> times received in a batch

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "statuses": dict(self.statuses),
                "received": dict(self.received), "answered": dict(self.answered),
                "http": dict(self.http), "batches_created": self.batches_created,
                "batch_lines": dict(self.batch_lines)}


def body_key(raw: bytes) -> str:
    """The identity of a request for the stats: its JSON body, canonicalised."""
    try:
        return hashlib.sha256(json.dumps(json.loads(raw), sort_keys=True).encode()).hexdigest()
    except ValueError:
        return hashlib.sha256(raw).hexdigest()


class FakeOpenAIServer:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
                 faults: Faults | None = None, responder: Responder | None = None,
                 api_key: str | None = None, seed: int = 0, model: str = "fake-model",
                 script: list[str | None] | None = None, chat_overhead: tuple[int, int] = (0, 0),
                 batch: BatchScript | None = None, batch_script: list[BatchScript] | None = None,
                 models_script: list[str | None] | None = None):
        self.host, self.port, self.latency = host, port, latency
        self.faults = faults or Faults()
        self.responder = responder or default_responder
        self.api_key = api_key
        self.model = model
        self.rng = random.Random(seed)
        self.script = list(script or [])
        self.models_script = list(models_script or [])
        self.stats = Stats()
        # usage: prompt tokens are characters / 4, plus (per message, per request) tokens as a
        # chat template adds them (OpenAI documents 3 and 3)
        self.chat_overhead = chat_overhead
        self.batches = FakeBatches(self, batch or BatchScript(), list(batch_script or []))
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # ----------------------------------------------------------------- HTTP plumbing
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(n) if n else b""
                keep = await self._route(method, path.split("?")[0], headers, body, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError,
                asyncio.CancelledError):  # cancelled: a hung answer when the server stops
            pass
        finally:
            try:
                writer.close()
            except RuntimeError:
                pass

    @staticmethod
    def _write(writer: asyncio.StreamWriter, status: int, payload: bytes, *, ctype: str = "application/json",
               extra: dict[str, str] | None = None) -> None:
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                  429: "Too Many Requests",
                  500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Status")
        hdr = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {ctype}", f"Content-Length: {len(payload)}",
               "Connection: keep-alive"]
        hdr += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(hdr) + "\r\n\r\n").encode("latin-1") + payload)

    async def _route(self, method: str, path: str, headers: dict[str, str], body: bytes,
                     writer: asyncio.StreamWriter) -> bool:
        if path != "/_stats":
            self.stats.http[f"{method} {_route_name(path)}"] += 1
        if path == "/_stats":
            self._write(writer, 200, json.dumps(self.stats.to_dict()).encode())
            await writer.drain()
            return True
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            self._write(writer, 401, json.dumps({"error": {"message": "Incorrect API key provided",
                                                           "type": "invalid_request_error",
                                                           "code": "invalid_api_key"}}).encode())
            await writer.drain()
            return True
        if method == "GET" and path.endswith("/models") and self.models_script:
            fault = self.models_script.pop(0)
            if fault == "drop":
                writer.transport.abort()
                return False
            if fault == "hang":
                await asyncio.sleep(self.faults.hang_seconds)
                return False
            if fault is not None:
                self._write(writer, int(fault), b'{"error": {"message": "scripted fault"}}')
                await writer.drain()
                return True
        if method == "GET" and path.endswith("/models"):
            self._write(writer, 200, json.dumps({"object": "list", "data": [
                {"id": self.model, "object": "model", "created": 0, "owned_by": "datakit"}]}).encode())
            await writer.drain()
            return True
        if "/files" in path or "/batches" in path:
            status, payload, ctype = self.batches.handle(method, path, headers, body)
            self._write(writer, status, payload, ctype=ctype)
            await writer.drain()
            return True
        if not (method == "POST" and path.endswith("/chat/completions")):
            self._write(writer, 404, b'{"error": {"message": "not found"}}')
            await writer.drain()
            return True
        return await self._chat(body, writer)

    async def _chat(self, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        st = self.stats
        st.requests += 1
        key = body_key(raw)
        st.received[key] += 1
        fault = self.script.pop(0) if self.script else self.faults.pick(self.rng)
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault == "hang":
            st.statuses["hang"] += 1
            await asyncio.sleep(self.faults.hang_seconds)
            return False
        if fault == "drop":
            st.statuses["drop"] += 1
            writer.transport.abort()
            return False
        if fault == "429":
            st.statuses["429"] += 1
            self._write(writer, 429, b'{"error": {"message": "rate limited", "type": "rate_limit"}}',
                        extra={"Retry-After": f"{self.faults.retry_after:g}"})
            await writer.drain()
            return True
        if fault == "500":
            st.statuses["500"] += 1
            self._write(writer, 500, b'{"error": {"message": "internal error"}}')
            await writer.drain()
            return True
        if fault == "400":
            st.statuses["400"] += 1
            self._write(writer, 400, b'{"error": {"message": "this request is refused", '
                                     b'"type": "invalid_request_error"}}')
            await writer.drain()
            return True
        if fault == "garbage":
            st.statuses["garbage"] += 1
            self._write(writer, 200, b"<html>upstream proxy error</html>", ctype="application/json")
            await writer.drain()
            return True
        if fault in ("503", "429_bare"):
            st.statuses[fault] += 1
            self._write(writer, int(fault[:3]), b'{"error": {"message": "overloaded, try again later"}}')
            await writer.drain()
            return True
        try:
            body = json.loads(raw)
        except ValueError:
            self._write(writer, 400, b'{"error": {"message": "body is not JSON"}}')
            await writer.drain()
            return True
        payload = self.completion(body, key)
        if fault is not None:
            return await self._bad_answer(fault, payload, writer)
        st.statuses["200"] += 1
        st.answered[key] += 1
        self._write(writer, 200, json.dumps(payload).encode())
        await writer.drain()
        return True

    async def _bad_answer(self, fault: str, payload: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        """A 200 that is wrong in the way ``fault`` names (see the module docstring)."""
        self.stats.statuses[fault] += 1
        choice = payload["choices"][0]
        if fault == "empty":
            choice["message"]["content"] = ""
        elif fault == "length":
            text = choice["message"]["content"]
            choice["message"]["content"] = text[: len(text) // 2]
            choice["finish_reason"] = "length"
            payload["usage"]["completion_tokens"] = max(1, len(text) // 8)
        raw = json.dumps(payload).encode()
        if fault == "truncated":
            self._write(writer, 200, raw[: len(raw) // 2])
        elif fault == "midbody":
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
                    f"Connection: keep-alive\r\n\r\n").encode("latin-1")
            writer.write(head + raw[: len(raw) // 2])
            await writer.drain()
            writer.transport.abort()
            return False
        else:
            self._write(writer, 200, raw)
        await writer.drain()
        return True

    def completion(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        """The chat completion for a request body (the same online and in a batch)."""
        text = self.responder(body)
        per_message, per_request = self.chat_overhead
        msgs = body.get("messages", [])
        pt = sum(len(str(m.get("content", ""))) for m in msgs) // 4 + per_message * len(msgs) + per_request
        ct = max(1, len(text) // 4)
        return {"id": "chatcmpl-" + key[:12], "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", self.model),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}}

    # ----------------------------------------------------------------- lifecycle
    async def serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> "FakeOpenAIServer":
        """Serve from a background thread (for tests); returns once the port is bound."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop and self._server:
            async def close() -> None:
                self._server.close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _route_name(path: str) -> str:
    """A path with its ids taken out (``/v1/batches/batch_12`` -> ``/v1/batches/{id}``)."""
    parts = path.split("/")
    return "/".join("{id}" if p.startswith(("file-", "batch_")) else p for p in parts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--api-key")
    for name in ("429", "500", "hang", "drop", "garbage", "400", "503", "429_bare", "empty", "length",
                 "truncated", "midbody"):
        p.add_argument(f"--rate-{name.replace('_', '-')}", type=float, default=0.0)
    p.add_argument("--retry-after", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-seconds", type=float, default=2.0, help="time a batch takes to process")
    p.add_argument("--lists", choices=["plain", "hosted", "varied"], default="plain",
                   help="task lists numbered plainly, laid out as hosted teachers do (headings, bold "
                        "labels), or plain with varied tasks (many made-up words: 100k distinct tasks)")
    a = p.parse_args(argv)
    faults = Faults(a.rate_429, a.rate_500, a.rate_hang, a.rate_drop, a.rate_garbage, a.retry_after,
                    rate_400=a.rate_400, rate_503=a.rate_503, rate_429_bare=a.rate_429_bare,
                    rate_empty=a.rate_empty, rate_length=a.rate_length, rate_truncated=a.rate_truncated,
                    rate_midbody=a.rate_midbody)
    srv = FakeOpenAIServer(port=a.port, latency=a.latency, faults=faults, api_key=a.api_key, seed=a.seed,
                           responder={"hosted": hosted_responder(), "varied": varied_responder}.get(a.lists),
                           batch=BatchScript(seconds=a.batch_seconds))

    async def run() -> None:
        await srv.serve()
        print(f"fake OpenAI-compatible server on {srv.base_url}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
