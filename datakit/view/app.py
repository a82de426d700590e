"""The viewer's web app (Starlette): the page, its two static files, and a small JSON API.

    GET  /                     the page (static HTML; everything else comes from the API)
    GET  /static/view.js|.css  the only other files served, by name from a fixed list
    GET  /api/status           run name, index progress
    GET  /api/facets           reasons, teachers, languages, counts
    GET  /api/records?...      one page of the list (filters, search, sort, paging)
    GET  /api/record?id=ID     one record, machine and reviewed views, context, history
    POST /api/review           one verdict (JSON), appended to RUN/reviews.jsonl

Security (:func:`guard`): every request needs the token when there is one (a bearer header, or
the cookie the page gets from ``/?token=...``); the Host header must name this server (no DNS
rebinding of a local port); a path with a ``..`` segment, a backslash or a NUL is refused; a
POST needs a JSON body under 256 KiB and the ``X-Datakit-View`` header (a form on another site
cannot send it). Nothing a request sends becomes a file path: records are looked up by id in
the index, static files by name in a fixed list, and the only file written is reviews.jsonl.
"""

from __future__ import annotations

import hmac
import json
from importlib import resources
from typing import Any, Callable
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from datakit.errors import UserError
from datakit.reviews import append_review
from datakit.view.detail import Stale, record_detail
from datakit.view.store import ViewStore, parse_query

STATIC = {"view.js": "text/javascript; charset=utf-8", "view.css": "text/css; charset=utf-8"}
MAX_BODY = 256 * 1024
COOKIE = "datakit_view"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _asset(name: str) -> bytes:
    return resources.files("datakit.view").joinpath("static", name).read_bytes()


def _err(status: int, msg: str) -> JSONResponse:
    return JSONResponse({"error": msg}, status_code=status)


def make_app(store: ViewStore, token: str | None = None, allowed_hosts: set[str] | None = None,
             reviewer: str = "anonymous", min_margin: float = 1.0, tie_break: str | None = None) -> Callable:
    """The ASGI app for ``store``; ``allowed_hosts`` are the Host header values to accept
    (None: any, for a server exposed on purpose with a token)."""

    async def page(request: Request) -> Response:
        if token and request.query_params.get("token"):
            resp = RedirectResponse("/", status_code=303)   # keep the token out of the address bar
            resp.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return resp
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return _err(404, "not found")
        return Response(_asset(name), media_type=STATIC[name])

    def status(request: Request) -> Response:
        return JSONResponse(dict(store.status(), reviewer=reviewer))

    def facets(request: Request) -> Response:
        return JSONResponse(store.facets())

    def records(request: Request) -> Response:
        try:
            q = parse_query(dict(request.query_params))
        except ValueError as e:
            return _err(400, str(e))
        return JSONResponse(store.page(q))

    def record(request: Request) -> Response:
        rid = request.query_params.get("id", "")
        try:
            d = record_detail(store, rid, min_margin, tie_break) if rid else None
        except Stale as e:
            return _err(409, f"{e}: restart `datakit view` to index the run again")
        return _err(404, "no record with this id in the run") if d is None else JSONResponse(d)

    async def review(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _err(413, "the verdict is too large")
        try:
            row = json.loads(body)
        except ValueError:
            return _err(400, "the body must be a JSON object")
        if not isinstance(row, dict):
            return _err(400, "the body must be a JSON object")
        return await run_in_threadpool(_review, row)

    def _review(row: dict[str, Any]) -> Response:
        rid = row.get("record_id")
        if not isinstance(rid, str) or store.lookup(rid) is None:
            return _err(404, "no record with this id in the run")
        row["reviewer"] = row.get("reviewer") or reviewer
        row.pop("time", None)   # the server's clock stamps every verdict
        row.pop("old", None)    # and the old text is the one on disk, not what a client says
        try:
            _check_candidates(store, row, min_margin, tie_break)
            line = append_review(store.run, row)
        except ValueError as e:
            return _err(400, str(e))
        except UserError as e:
            return _err(409, str(e))
        except Stale as e:
            return _err(409, f"{e}: restart `datakit view` to index the run again")
        store.sync_reviews()
        return JSONResponse({"ok": True, "verdict": line, "review": store.states[rid].summary()})

    routes = [Route("/", page), Route("/static/{name}", static), Route("/api/status", status),
              Route("/api/facets", facets), Route("/api/records", records), Route("/api/record", record),
              Route("/api/review", review, methods=["POST"])]
    return guard(Starlette(routes=routes), token, allowed_hosts)


def _check_candidates(store: ViewStore, row: dict[str, Any], min_margin: float, tie_break: str | None) -> None:
    """A verdict naming candidates must name ones the record has; the old text is filled in."""
    d = record_detail(store, row["record_id"], min_margin, tie_break)
    rec = d["reviewed"] or d["machine"]
    ids = {str(c.get("id")) for c in rec.get("candidates") or []}
    if row.get("action") == "choose":
        for key in ("chosen", "rejected"):
            if row.get(key) not in ids:
                raise ValueError(f"'{key}' is not a candidate of this record")
    if row.get("action") == "edit":
        if row.get("field") == "candidate":
            if row.get("candidate") not in ids:
                raise ValueError("'candidate' is not a candidate of this record")
            row["old"] = next(c.get("output") for c in rec["candidates"] if str(c.get("id")) == row["candidate"])
        elif row.get("field") in ("instruction", "input", "output"):
            row["old"] = rec.get(row["field"])


# --------------------------------------------------------------------------- the guard

def _header(scope: dict, name: bytes) -> str | None:
    for k, v in scope.get("headers") or []:
        if k == name:
            return v.decode("latin-1")
    return None


def _cookie(scope: dict) -> str | None:
    for part in (_header(scope, b"cookie") or "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == COOKIE:
            return v
    return None


def _traversal(p: str) -> bool:
    parts = p.replace("\\", "/").split("/")
    return ".." in parts or "\x00" in p or "\\" in p


def _bad_path(scope: dict) -> bool:
    """A path, or a query parameter other than the free-text search ``q``, that names a parent
    folder (``..`` as a path segment, also percent-encoded once or twice), a backslash or a NUL."""
    raw = scope.get("raw_path") or scope.get("path", "").encode()
    paths = {scope.get("path", ""), unquote(raw.decode("latin-1")), unquote(unquote(raw.decode("latin-1")))}
    if any(_traversal(p) or "/./" in p for p in paths):
        return True
    from urllib.parse import parse_qsl

    params = parse_qsl((scope.get("query_string") or b"").decode("latin-1"), keep_blank_values=True)
    return any(_traversal(v) or _traversal(unquote(v)) for k, v in params if k != "q")


def _authorised(scope: dict, token: str) -> bool:
    offered = []
    auth = _header(scope, b"authorization") or ""
    if auth.startswith("Bearer "):
        offered.append(auth[7:])
    offered.append(_cookie(scope) or "")
    if scope.get("path") == "/":  # the address the server printed: /?token=...
        from urllib.parse import parse_qs

        offered += parse_qs((scope.get("query_string") or b"").decode("latin-1")).get("token", [])
    return any(hmac.compare_digest(o.encode(), token.encode()) for o in offered if o)


def guard(app: Callable, token: str | None, allowed_hosts: set[str] | None) -> Callable:
    """ASGI middleware: the checks in the module docstring, then security headers."""


    async def wrapped(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def send_plain(_: Callable, status: int, text: str) -> None:
            await PlainTextResponse(text, status_code=status)(scope, receive, send)

        if allowed_hosts is not None and (_header(scope, b"host") or "") not in allowed_hosts:
            return await send_plain(send, 403, "unknown Host header")
        if _bad_path(scope):
            return await send_plain(send, 400, "refused: a path that leaves the viewer's files")
        if token and not _authorised(scope, token):
            return await send_plain(send, 401, "a token is required (open the address `datakit view` printed)")
        if scope["method"] == "POST":
            if _header(scope, b"x-datakit-view") != "1" or "application/json" not in (
                    _header(scope, b"content-type") or ""):
                return await send_plain(send, 403, "a verdict is a JSON request from the viewer's page")
            length = _header(scope, b"content-length") or "0"
            if not length.isdigit() or int(length) > MAX_BODY:
                return await send_plain(send, 413, "the verdict is too large")

        async def send_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers") or []) + [
                    (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store"),
                    (b"x-frame-options", b"DENY")]
            await send(message)

        await app(scope, receive, send_headers)

    return wrapped
