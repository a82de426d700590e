"""The OpenAI Batch API on the scripted test server (:mod:`datakit.teachers.fake_server`).

Routes: ``POST /v1/files`` (multipart upload, purpose ``batch``), ``GET /v1/files/{id}`` and
``/v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches`` (list, newest first),
``GET /v1/batches/{id}`` and ``POST /v1/batches/{id}/cancel``, with the provider's JSON shapes.

A batch works through its lines over ``BatchScript.seconds`` (in order, as time passes; lines
are answered when a client looks), each line exactly as the chat endpoint answers its body.
``fail_rate`` makes that share of lines fail (HTTP 500 in the error file); ``expire_after``
ends the batch as ``expired`` at that time, the unfinished lines in the error file with
``batch_expired``. Each created batch takes the next :class:`BatchScript` of the server's
``batch_script`` list, then the server's default one.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class BatchScript:
    seconds: float = 0.2                 # time from creation until every line is processed
    fail_rate: float = 0.0               # share of lines answered with an error
    expire_after: float | None = None    # seconds after creation at which the batch expires
    seed: int = 0


@dataclass
class _Batch:
    id: str
    input_file_id: str
    lines: list[dict[str, Any]]
    script: BatchScript
    created: float
    created_at: int
    metadata: dict[str, Any] | None
    status: str = "validating"
    results: list[dict[str, Any]] = field(default_factory=list)   # one per processed line
    cancel: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: dict[str, Any] | None = None

    def counts(self) -> dict[str, int]:
        failed = sum(1 for r in self.results if r["error"] is not None or r["response"]["status_code"] != 200)
        return {"total": len(self.lines), "completed": len(self.results) - failed, "failed": failed}


def _json(obj: Any, status: int = 200) -> tuple[int, bytes, str]:
    return status, json.dumps(obj).encode(), "application/json"


def _error(status: int, message: str) -> tuple[int, bytes, str]:
    return _json({"error": {"message": message, "type": "invalid_request_error"}}, status)


def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """Form fields of a multipart/form-data body: name -> (filename, content)."""
    boundary = content_type.split("boundary=", 1)[1].split(";")[0].strip().strip('"').encode()
    out = {}
    for part in body.split(b"--" + boundary):
        if b"\r\n\r\n" not in part:
            continue
        head, content = part.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        disp = next((l for l in lines if l.lower().startswith("content-disposition")), "")
        attrs = dict(a.strip().split("=", 1) for a in disp.split(";")[1:] if "=" in a)
        name = attrs.get("name", "").strip('"')
        filename = attrs["filename"].strip('"') if "filename" in attrs else None
        out[name] = (filename, content[:-2] if content.endswith(b"\r\n") else content)
    return out


class FakeBatches:
    def __init__(self, server: Any, default: BatchScript, script: list[BatchScript]):
        self.server, self.default, self.script = server, default, script
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, _Batch] = {}
        self._n = 0

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n:06d}"

    # ------------------------------------------------------------------ routing
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        parts = [p for p in path.split("/") if p][1:]   # drop the "v1"
        if parts[:1] == ["files"]:
            if method == "POST" and len(parts) == 1:
                return self._upload(headers, body)
            f = self.files.get(parts[1]) if len(parts) > 1 else None
            if f is None:
                return _error(404, "no such file")
            if len(parts) == 3 and parts[2] == "content":
                return 200, f["content"], "application/octet-stream"
            return _json(f["meta"])
        if method == "POST" and parts == ["batches"]:
            return self._create(body)
        if method == "GET" and parts == ["batches"]:
            data = [self._view(b) for b in reversed(list(self.batches.values()))]
            return _json({"object": "list", "data": data, "has_more": False,
                          "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})
        b = self.batches.get(parts[1]) if len(parts) > 1 else None
        if b is None:
            return _error(404, "no such batch")
        if method == "POST" and parts[2:] == ["cancel"]:
            b.cancel = True
        return _json(self._view(b))

    def _upload(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        form = parse_multipart(body, headers.get("content-type", ""))
        if "file" not in form:
            return _error(400, "no file in the upload")
        return _json(self._store(form["file"][0] or "upload.jsonl", form["file"][1],
                                 form.get("purpose", (None, b"batch"))[1].decode()))

    def _store(self, filename: str, content: bytes, purpose: str) -> dict[str, Any]:
        fid = self._id("file-")
        meta = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[fid] = {"meta": meta, "content": content}
        return meta

    def _create(self, body: bytes) -> tuple[int, bytes, str]:
        req = json.loads(body)
        f = self.files.get(req.get("input_file_id", ""))
        if f is None:
            return _error(400, "input_file_id does not name an uploaded file")
        st = self.server.stats
        st.batches_created += 1
        script = self.script.pop(0) if self.script else self.default
        b = _Batch(self._id("batch_"), req["input_file_id"], [], script, time.monotonic(), int(time.time()),
                   req.get("metadata"))
        try:
            b.lines = [json.loads(l) for l in f["content"].decode().splitlines() if l.strip()]
            ids = [l["custom_id"] for l in b.lines]
            if len(set(ids)) != len(ids):
                raise ValueError("duplicate custom_id")
        except (ValueError, KeyError, TypeError) as e:
            b.status, b.errors = "failed", {"object": "list", "data": [{"code": "invalid_file", "message": str(e)}]}
        for line in b.lines:
            st.batch_lines[_key(line.get("body"))] += 1
        self.batches[b.id] = b
        return _json(self._view(b))

    # ------------------------------------------------------------------ progress
    def _advance(self, b: _Batch) -> None:
        if b.status in TERMINAL:
            return
        s, elapsed = b.script, time.monotonic() - b.created
        if b.cancel:
            return self._finish(b, "cancelled", "batch_cancelled")
        n = len(b.lines)
        expired = s.expire_after is not None and elapsed >= s.expire_after
        at = min(elapsed, s.expire_after) if expired else elapsed
        upto = n if s.seconds <= 0 else min(n, int(n * at / s.seconds))
        rng = random.Random(f"{s.seed}:{b.id}")
        fails = [rng.random() < s.fail_rate for _ in range(n)]
        while len(b.results) < upto:
            i = len(b.results)
            b.results.append(self._answer(b.lines[i], fails[i]))
        if len(b.results) == n:
            self._finish(b, "completed", None)
        elif expired:
            self._finish(b, "expired", "batch_expired")
        else:
            b.status = "in_progress"

    def _answer(self, line: dict[str, Any], fail: bool) -> dict[str, Any]:
        rid = "batch_req_" + hashlib.sha256(line["custom_id"].encode()).hexdigest()[:12]
        if fail:
            return {"id": rid, "custom_id": line["custom_id"], "error": None,
                    "response": {"status_code": 500, "request_id": rid,
                                 "body": {"error": {"message": "internal error", "type": "server_error"}}}}
        body = self.server.completion(line["body"], _key(line["body"]))
        return {"id": rid, "custom_id": line["custom_id"], "error": None,
                "response": {"status_code": 200, "request_id": rid, "body": body}}

    def _finish(self, b: _Batch, status: str, code: str | None) -> None:
        ok = [r for r in b.results if r["response"] and r["response"]["status_code"] == 200]
        bad = [r for r in b.results if r not in ok]
        for line in b.lines[len(b.results):]:
            r = {"id": None, "custom_id": line["custom_id"], "response": None,
                 "error": {"code": code, "message": f"this request was not run ({status})"}}
            b.results.append(r)
            bad.append(r)
        dump = lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()  # noqa: E731
        if ok:
            b.output_file_id = self._store(f"{b.id}_output.jsonl", dump(ok), "batch_output")["id"]
        if bad:
            b.error_file_id = self._store(f"{b.id}_error.jsonl", dump(bad), "batch_output")["id"]
        b.status = status

    def _view(self, b: _Batch) -> dict[str, Any]:
        self._advance(b)
        return {"id": b.id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": b.errors,
                "input_file_id": b.input_file_id, "completion_window": "24h", "status": b.status,
                "output_file_id": b.output_file_id, "error_file_id": b.error_file_id,
                "created_at": b.created_at, "request_counts": b.counts(), "metadata": b.metadata}


def _key(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
