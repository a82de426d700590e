"""What the viewer's pages ask for: a filtered, searched, sorted page of records; the facets
(reasons, teachers, languages); the human verdicts so far. SQL over the run index
(:mod:`datakit.view.index`) with the review state kept in an in-memory table that follows
``reviews.jsonl`` as it grows (other viewers' verdicts appear too)."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any

from datakit.reviews import REVIEWS, ReviewState, fold, validate
from datakit.view.index import RunIndex

PAGE_MAX = 200
SORTS = {"file": "n", "score_desc": "score is null, score desc, n", "score_asc": "score is null, score, n"}
REVIEWED = {"yes": "r.record_id is not null", "no": "r.record_id is null", "accepted": "r.status = 'accepted'",
            "rejected": "r.status = 'rejected'", "edited": "r.edited = 1", "chose": "r.chose = 1"}


@dataclass
class Query:
    q: str = ""
    status: str = ""
    reason: str = ""
    teacher: str = ""
    lang: str = ""
    min_score: float | None = None
    max_score: float | None = None
    reviewed: str = ""
    sort: str = "file"
    page: int = 0
    size: int = 50


def _num(v: str | None, name: str) -> float | None:
    if v in (None, ""):
        return None
    try:
        return float(v)
    except ValueError:
        raise ValueError(f"'{name}' must be a number") from None


def parse_query(p: dict[str, str]) -> Query:
    """A :class:`Query` from request parameters; ValueError names the bad one."""
    q = Query(q=p.get("q", "")[:200], status=p.get("status", ""), reason=p.get("reason", "")[:100],
              teacher=p.get("teacher", "")[:100], lang=p.get("lang", ""), reviewed=p.get("reviewed", ""),
              sort=p.get("sort") or "file", min_score=_num(p.get("min"), "min"), max_score=_num(p.get("max"), "max"))
    if q.status not in ("", "accepted", "rejected", "removed"):
        raise ValueError("'status' must be accepted, rejected or removed")
    if q.lang not in ("", "zh", "en", "other"):
        raise ValueError("'lang' must be zh, en or other")
    if q.reviewed not in ("", *REVIEWED):
        raise ValueError(f"'reviewed' must be one of {', '.join(REVIEWED)}")
    if q.sort not in SORTS:
        raise ValueError(f"'sort' must be one of {', '.join(SORTS)}")
    try:
        q.page, q.size = int(p.get("page") or 0), int(p.get("size") or 50)
    except ValueError:
        raise ValueError("'page' and 'size' must be whole numbers") from None
    if q.page < 0 or not 1 <= q.size <= PAGE_MAX:
        raise ValueError(f"'page' must be 0 or more and 'size' 1 to {PAGE_MAX}")
    return q


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _search(q: str, fts: bool) -> tuple[list[str], list[Any]]:
    """Every whitespace-separated term must occur (case-insensitive substring) in instruction,
    input or output. Terms of 3+ characters use the trigram index once it is built."""
    where, args = [], []
    terms = q.split()
    long = [t for t in terms if fts and len(t) >= 3]
    if long:
        where.append("s.n in (select rowid from fts where fts match ?)")
        args.append(" AND ".join('"' + t.replace('"', '""') + '"' for t in long))
    for t in terms:
        if t not in long:
            where.append("(s.instruction like ? escape '\\' or s.input like ? escape '\\' "
                         "or s.output like ? escape '\\')")
            args += [_like(t)] * 3
    return where, args


def where_clause(q: Query, fts: bool) -> tuple[str, list[Any]]:
    where, args = _search(q.q, fts)
    if q.status == "removed":
        where.append("s.curation is not null")
    elif q.status:
        where.append("s.status = ?")
        args.append(q.status)
    if q.reason:
        where.append("(s.reason = ? or s.curation = ?)")
        args += [q.reason, q.reason]
    for col in ("teacher", "lang"):
        if getattr(q, col):
            where.append(f"s.{col} = ?")
            args.append(getattr(q, col))
    if q.min_score is not None:
        where.append("s.score >= ?")
        args.append(q.min_score)
    if q.max_score is not None:
        where.append("s.score <= ?")
        args.append(q.max_score)
    if q.reviewed:
        where.append(REVIEWED[q.reviewed])
    return (" where " + " and ".join(where)) if where else "", args


LIST_COLS = ("n", "id", "status", "reason", "curation", "teacher", "lang", "score", "ncand", "instruction",
             "output", "review", "review_reason", "edited", "chose")


class ViewStore:
    """The index of one run plus the review state; thread-safe (one lock around SQLite)."""

    def __init__(self, index: RunIndex):
        self.index, self.run = index, index.run
        self.conn = index.connect()
        self.lock = threading.Lock()
        self.states: dict[str, ReviewState] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.bad_review_lines = 0
        self._offset = 0

    # ------------------------------------------------------------------ reviews

    def sync_reviews(self) -> None:
        """Read the verdict lines appended since the last call (by any viewer)."""
        path = self.run / REVIEWS
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        with self.lock:
            if size < self._offset:  # cut back (a torn tail removed): read it again
                self._offset, self.states, self.history = 0, {}, {}
                self.conn.execute("delete from mem.rev")
            if size == self._offset:
                return
            with open(path, "rb") as f:
                f.seek(self._offset)
                data = f.read(size - self._offset)
            data = data[:data.rfind(b"\n") + 1]   # complete lines only
            self._offset += len(data)
            rows = []
            for line in data.splitlines():
                try:
                    rows.append(validate(json.loads(line)))
                except ValueError:
                    self.bad_review_lines += 1
            fold(rows, self.states)
            for r in rows:
                self.history.setdefault(r["record_id"], []).append(r)
            touched = {r["record_id"] for r in rows}
            self.conn.executemany("insert or replace into mem.rev values (?,?,?,?,?,?,?)", [
                (rid, s.status, s.reason, int(bool(s.edits)), int(s.choice is not None), s.time, s.reviewer)
                for rid in touched for s in [self.states[rid]]])

    # ------------------------------------------------------------------ queries

    def page(self, q: Query) -> dict[str, Any]:
        self.sync_reviews()
        fts = self.index.progress.phase == "ready"
        where, args = where_clause(q, fts)
        frm = " from recs s left join mem.rev r on r.record_id = s.id"
        sql = ("select s.n, s.id, s.status, s.reason, s.curation, s.teacher, s.lang, s.score, s.ncand, "
               "substr(s.instruction, 1, 200), substr(s.output, 1, 160), r.status, r.reason, r.edited, r.chose"
               f"{frm}{where} order by {SORTS[q.sort]} limit ? offset ?")
        with self.lock:
            total = self.conn.execute(f"select count(*){frm}{where}", args).fetchone()[0]
            rows = self.conn.execute(sql, [*args, q.size, q.page * q.size]).fetchall()
        return {"total": total, "page": q.page, "size": q.size, "search": "index" if fts else "scan",
                "items": [dict(zip(LIST_COLS, r)) for r in rows]}

    def facets(self) -> dict[str, Any]:
        self.sync_reviews()
        out: dict[str, Any] = {}
        with self.lock:
            for col in ("status", "reason", "curation", "teacher", "lang"):
                out[col] = self.conn.execute(f"select {col}, count(*) from recs where {col} is not null "
                                             f"group by {col} order by count(*) desc limit 100").fetchall()
            out["records"] = self.conn.execute("select count(*) from recs").fetchone()[0]
            out["scored"] = self.conn.execute("select count(*) from recs where score is not null").fetchone()[0]
            out["reviewed"] = dict(self.conn.execute("select status, count(*) from mem.rev group by status").fetchall())
        return out

    def lookup(self, rid: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.conn.execute("select n, src, off, len from recs where id = ? order by n limit 1",
                                    (rid,)).fetchone()
        return None if row is None else dict(zip(("n", "src", "off", "len"), row))

    def subs(self, rid: str) -> list[tuple[int, int, int]]:
        with self.lock:
            return self.conn.execute("select src, off, len from sub where record_id = ? order by src, off",
                                     (rid,)).fetchall()

    def texts(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self.lock:
            rows = self.conn.execute(f"select id, instruction, output, status, score from recs where id in ({marks})",
                                     ids).fetchall()
        return {r[0]: {"instruction": r[1], "output": r[2], "status": r[3], "score": r[4]} for r in rows}

    def curation(self, rid: str) -> dict[str, Any]:
        """How curation treated ``rid``: its own removal and the duplicate cluster it is in."""
        with self.lock:
            own = self.conn.execute("select reason, duplicate_of, similarity, file from cur where record_id = ?",
                                    (rid,)).fetchall()
            rep = next((o[1] for o in own if o[0] == "near_duplicate" and o[1]), rid)
            members = self.conn.execute("select record_id, reason, similarity, file from cur where duplicate_of = ?",
                                        (rep,)).fetchall()
        removals = [dict(zip(("reason", "duplicate_of", "similarity", "file"), o)) for o in own]
        cluster = []
        if members:
            cluster = [{"id": rep, "kept": True}] + [
                dict(zip(("id", "reason", "similarity", "file"), m), kept=False) for m in members]
        return {"removals": removals, "cluster": cluster}

    def status(self) -> dict[str, Any]:
        return {"run": os.path.basename(os.path.abspath(self.run)), "index": self.index.progress.as_dict(),
                "bad_review_lines": self.bad_review_lines}
