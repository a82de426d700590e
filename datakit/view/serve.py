"""Start the viewer: check the options, bind the socket, print the address, run uvicorn."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from pathlib import Path
from typing import Callable

from datakit.errors import UserError
from datakit.runs import is_run_dir

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_options(run: Path, host: str, token: str | None) -> str | None:
    """The token to require (None: none), or a UserError for options that would expose the run."""
    if not run.is_dir() or not (run / "records.jsonl").is_file():
        raise UserError("not a run directory (no records.jsonl)", path=str(run))
    if token == "auto":
        token = secrets.token_urlsafe(24)
    if token is not None and len(token) < 16:
        raise UserError("use at least 16 characters (or --token auto)", field="--token")
    if not is_loopback(host) and not token:
        raise UserError(f"--host {host} makes the run readable and writable from the network: "
                        "add --token TOKEN (or --token auto to generate one)", field="--host")
    return token


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror})", field="--port") from None
    sock.listen(128)
    return sock


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """Host header values a loopback server answers (DNS rebinding protection); None when the
    server is exposed on purpose (the token protects it)."""
    if not is_loopback(host):
        return None
    return {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")}


def serve(run: Path, host: str, port: int, token: str | None, reviewer: str, min_margin: float,
          tie_break: str | None, echo: Callable[[str], None]) -> None:
    try:
        import uvicorn

        from datakit.view.app import make_app
    except ImportError as e:
        raise UserError(f"datakit view needs starlette and uvicorn ({e}): pip install 'datakit[view]'") from None
    from datakit.view.index import RunIndex
    from datakit.view.store import ViewStore

    token = check_options(run, host, token)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    index = RunIndex(run)
    index.ready.wait(0.5)  # a small run is indexed at once
    app = make_app(ViewStore(index), token, allowed_hosts(host, port), reviewer, min_margin, tie_break)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    note = "" if index.ready.is_set() else " (indexing in the background)"
    echo(f"datakit view: {url}  reviewing {run}{note}; Ctrl-C to stop")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
