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
COUNT_CAP = 1000  # matches counted exactly when searching; more show as 1,000+
SORTS = {"file": "s.n", "score_desc": "s.score is null, s.score desc, s.n", "score_asc": "s.score is null, s.score, s.n"}
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


def _search(q: str, fts: bool) -> tuple[str, list[str], list[Any]]:
    """(tables joined, conditions, arguments) so that every whitespace-separated term occurs
    (case-insensitive substring) in instruction, input or output. Terms of 3+ characters use the
    trigram index once it is built; the full-text table then drives the query in record order,
    so a page of a common term stops after the page, not after every match."""
    join, where, args = "", [], []
    terms = q.split()
    long = [t for t in terms if fts and len(t) >= 3]
    if long:
        join = " join fts on fts.rowid = s.n"
        where.append("fts match ?")
        args.append(" AND ".join('"' + t.replace('"', '""') + '"' for t in long))
    short = [t for t in terms if t not in long]
    if short:
        join += " join texts t on t.n = s.n"
    for t in short:
        if t.isascii() or t.lower() != t.upper():   # letters with case: LIKE (case-insensitive for ASCII)
            where.append("(t.instruction like ? escape '\\' or t.input like ? escape '\\' "
                         "or t.output like ? escape '\\')")
            args += [_like(t)] * 3
        else:                                        # CJK and other caseless text: a byte search
            where.append("(instr(t.instruction, ?) or instr(t.input, ?) or instr(t.output, ?))")
            args += [t] * 3
    return join, where, args


def where_clause(q: Query, fts: bool) -> tuple[str, str, list[Any]]:
    """(joins, where clause, arguments) of a list query over ``recs s``."""
    join, where, args = _search(q.q, fts)
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
    return join, (" where " + " and ".join(where)) if where else "", args


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
        """One page of the list and the number of matches (counted up to COUNT_CAP when searching:
        a common word would otherwise cost a pass over every match)."""
        self.sync_reviews()
        fts = self.index.progress.phase == "ready"
        join, where, args = where_clause(q, fts)
        frm = f" from recs s{join} left join mem.rev r on r.record_id = s.id"
        order = "fts.rowid" if "fts match ?" in where and q.sort == "file" else SORTS[q.sort]
        sql = ("select s.n, s.id, s.status, s.reason, s.curation, s.teacher, s.lang, s.score, s.ncand, "
               "substr(t.instruction, 1, 200), substr(t.output, 1, 160), r.status, r.reason, r.edited, r.chose"
               f" from (select s.n{frm}{where} order by {order} limit ? offset ?) page"
               " join recs s on s.n = page.n join texts t on t.n = s.n"
               f" left join mem.rev r on r.record_id = s.id order by {SORTS[q.sort]}")
        count = f"select count(*){frm}{where}"
        if q.q.strip():
            count = f"select count(*) from (select 1{frm}{where} limit {COUNT_CAP + 1})"
        with self.lock:
            rows = self.conn.execute(sql, [*args, q.size, q.page * q.size]).fetchall()
            if q.page == 0 and len(rows) < q.size:
                total = len(rows)   # the page holds every match: no second pass to count them
            else:
                total = self.conn.execute(count, args).fetchone()[0]
        return {"total": min(total, COUNT_CAP) if q.q.strip() else total, "more": total > COUNT_CAP and bool(q.q.strip()),
                "page": q.page, "size": q.size, "search": "index" if fts else "scan",
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
            rows = self.conn.execute("select s.id, t.instruction, t.output, s.status, s.score from recs s "
                                     f"join texts t on t.n = s.n where s.id in ({marks})", ids).fetchall()
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
                "stale": self.index.stale(), "bad_review_lines": self.bad_review_lines}
