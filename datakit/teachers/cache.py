"""The response cache: SQLite in WAL mode, keyed by the full request.

A response is written before it is handed to the caller, so once a request has been answered
and used, a rerun or a resume after kill -9 finds it here and never pays for it again. WAL with
``synchronous=NORMAL`` survives a killed process (a power cut may lose the last transactions,
which only costs a repeated request).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from datakit.errors import UserError


def request_key(request: dict[str, Any]) -> str:
    """A stable hash of everything that shapes an answer (endpoint, model, messages, params, salt)."""
    blob = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, request TEXT NOT NULL, "
            "response TEXT NOT NULL, created REAL NOT NULL)")

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, request: dict[str, Any], response: dict[str, Any]) -> None:
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO responses (key, request, response, created) VALUES (?, ?, ?, ?)",
                    (key, json.dumps(request, ensure_ascii=False), json.dumps(response, ensure_ascii=False),
                     time.time()))
            except sqlite3.OperationalError as e:  # disk full, read-only: nothing a retry fixes
                raise UserError(f"cannot write the response cache ({e}); free some space and rerun "
                                f"the same command to resume", path=str(self.path)) from None

    def spent(self) -> dict[str, float]:
        """USD paid for the answers held here, per teacher (answers carry ``teacher`` and ``cost``
        since budgets exist; older ones count as free)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT json_extract(response, '$.teacher'), SUM(json_extract(response, '$.cost')) "
                "FROM responses WHERE json_extract(response, '$.cost') IS NOT NULL GROUP BY 1").fetchall()
        return {str(name): float(total or 0.0) for name, total in rows}

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
