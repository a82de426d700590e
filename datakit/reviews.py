"""Human verdicts on a run's records: ``RUN/reviews.jsonl``, and how every stage honours them.

A person reviewing a run (``datakit view``) appends one line per verdict::

    {"record_id": "g00003-01-04", "action": "reject", "reason": "wrong answer",
     "field": null, "candidate": null, "old": null, "new": null,
     "chosen": null, "rejected": null, "time": "2026-11-23T19:40:02Z", "reviewer": "ana"}

Actions:

* ``accept`` / ``reject`` (with an optional ``reason``): the record's human status.
* ``edit``: ``field`` (``instruction``, ``input``, ``output``, or ``candidate`` with
  ``candidate`` naming the candidate id) gets the text ``new``; ``old`` is the text the
  reviewer saw. An edit keeps the record (it counts as an accept).
* ``choose``: ``chosen`` and ``rejected`` candidate ids: the preference pair a person picked.
  It also counts as an accept.

Folding the log (:func:`fold`): the last accept/reject/edit/choose line of a record sets its
status; edits are kept per field (the last edit of a field wins); the last choice wins.

:func:`apply_reviews` is what ``filter``, ``dedup``, ``export`` and ``report`` call: a human
rejection removes the record, an edit replaces the text (``lineage.human_edits`` keeps the
machine's text and the person's), a choice replaces the judge's pair (``judge.pair`` with
``basis: "human"``; the judge's own decision stays in ``judge.pair.judge_pair``).

The log is append-only and fsync'd per verdict through :class:`datakit.records.JsonlAppender`
(which first cuts a torn last line), so kill -9 loses at most the verdict being written. Each
append holds the run's writer lock (:class:`datakit.runs.RunLock`) for the moment it takes:
two viewers interleave their verdicts, and none is written while ``generate``, ``respond`` or
``judge`` owns the run.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from datakit.errors import UserError
from datakit.records import JsonlAppender, Record, read_jsonl

REVIEWS = "reviews.jsonl"
ACTIONS = ("accept", "reject", "edit", "choose")
TEXT_FIELDS = ("instruction", "input", "output")
EDIT_FIELDS = TEXT_FIELDS + ("candidate",)
MAX_TEXT = 32_000       # characters of one edited text
MAX_SHORT = 500         # characters of a reason, a reviewer name, an id
LOCK_WAIT_S = 2.0       # how long an append waits for another viewer's lock


@dataclass
class ReviewState:
    """A record's folded human verdicts."""

    status: str | None = None                      # "accepted" | "rejected"
    reason: str | None = None
    edits: dict[str, dict[str, Any]] = field(default_factory=dict)   # "output" or "candidate:ID" -> line
    choice: dict[str, Any] | None = None           # the last "choose" line
    time: str | None = None
    reviewer: str | None = None
    n: int = 0                                     # verdict lines for this record

    def summary(self) -> dict[str, Any]:
        d = {"status": self.status, "reason": self.reason, "time": self.time, "reviewer": self.reviewer,
             "edited": sorted(self.edits), "verdicts": self.n}
        if self.choice:
            d["chosen"], d["rejected"] = self.choice["chosen"], self.choice["rejected"]
        return d


# --------------------------------------------------------------------------- validating

def _short(row: dict[str, Any], key: str, required: bool = False) -> str | None:
    v = row.get(key)
    if v is None or v == "":
        if required:
            raise ValueError(f"'{key}' is required")
        return None
    if not isinstance(v, str):
        raise ValueError(f"'{key}' must be text")
    if len(v) > MAX_SHORT:
        raise ValueError(f"'{key}' is longer than {MAX_SHORT} characters")
    if any(ord(c) < 32 and c not in "\t" for c in v):
        raise ValueError(f"'{key}' has control characters")
    return v


def validate(row: dict[str, Any]) -> dict[str, Any]:
    """The canonical verdict line for ``row``, or ValueError saying what is wrong."""
    if not isinstance(row, dict):
        raise ValueError("a verdict is a JSON object")
    action = row.get("action")
    if action not in ACTIONS:
        raise ValueError(f"'action' must be one of {', '.join(ACTIONS)}")
    out: dict[str, Any] = {"record_id": _short(row, "record_id", True), "action": action,
                           "reason": _short(row, "reason"), "field": None, "candidate": None,
                           "old": None, "new": None, "chosen": None, "rejected": None,
                           "time": _short(row, "time"), "reviewer": _short(row, "reviewer")}
    if action == "edit":
        fld = row.get("field")
        if fld not in EDIT_FIELDS:
            raise ValueError(f"'field' must be one of {', '.join(EDIT_FIELDS)}")
        out["field"] = fld
        out["candidate"] = _short(row, "candidate", fld == "candidate")
        for key in ("old", "new"):
            v = row.get(key)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"'{key}' must be text")
            if v is not None and len(v) > MAX_TEXT:
                raise ValueError(f"'{key}' is longer than {MAX_TEXT} characters")
            out[key] = v
        if out["new"] is None or (fld != "input" and not out["new"].strip()):
            raise ValueError("'new' must be a non-empty text (reject the record instead of emptying it)")
        if "\x00" in out["new"]:
            raise ValueError("'new' has a NUL character")
    if action == "choose":
        out["chosen"], out["rejected"] = _short(row, "chosen", True), _short(row, "rejected", True)
        if out["chosen"] == out["rejected"]:
            raise ValueError("'chosen' and 'rejected' must be different candidates")
    return out


# --------------------------------------------------------------------------- reading

def fold(rows: Iterable[dict[str, Any]], states: dict[str, ReviewState] | None = None
         ) -> dict[str, ReviewState]:
    """Fold verdict lines (validated) into one state per record, in log order."""
    states = {} if states is None else states
    for row in rows:
        st = states.setdefault(row["record_id"], ReviewState())
        st.n += 1
        st.time, st.reviewer = row.get("time"), row.get("reviewer")
        action = row["action"]
        st.status = "rejected" if action == "reject" else "accepted"
        st.reason = row.get("reason")
        if action == "edit":
            key = row["field"] if row["field"] != "candidate" else f"candidate:{row['candidate']}"
            st.edits[key] = row
        elif action == "choose":
            st.choice = row
    return states


def read_reviews(path: str | Path) -> list[dict[str, Any]]:
    """The valid verdict lines of a reviews log; a bad line is a UserError naming file:line."""
    out = []
    for i, row in enumerate(read_jsonl(path), 1):
        try:
            out.append(validate(row))
        except ValueError as e:
            raise UserError(str(e), path=str(path), line=i) from None
    return out


def load_reviews(run_dir: str | Path | None) -> dict[str, ReviewState]:
    """record id -> folded state, from ``RUN/reviews.jsonl`` (empty when there is none)."""
    if run_dir is None:
        return {}
    path = Path(run_dir) / REVIEWS
    if not path.is_file():
        return {}
    return fold(read_reviews(path))


# --------------------------------------------------------------------------- writing

def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def append_review(run_dir: str | Path, row: dict[str, Any], wait_s: float = LOCK_WAIT_S) -> dict[str, Any]:
    """Validate ``row``, stamp its time, and append it to ``RUN/reviews.jsonl`` (fsync'd) while
    holding the run's writer lock. Raises UserError when a writer (generate, respond, judge)
    holds the run, ValueError when the verdict is invalid. Returns the line written."""
    from datakit.runs import RunLock

    line = validate(dict(row, time=row.get("time") or now()))
    lock = RunLock(run_dir, "view")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock.acquire()
            break
        except UserError as e:
            # another viewer holds it for a few milliseconds; a pipeline stage holds it for long
            if "view (pid" not in str(e) and "another datakit" not in str(e) or time.monotonic() > deadline:
                raise UserError(f"{e}: verdicts can be written when it has finished") from None
            time.sleep(0.01)
    try:
        with JsonlAppender(Path(run_dir) / REVIEWS) as app:
            app.write_batch([line])
    finally:
        lock.release()
    return line


# --------------------------------------------------------------------------- applying

def _candidate(row: dict[str, Any], cid: str) -> dict[str, Any] | None:
    for c in row.get("candidates") or []:
        if isinstance(c, dict) and str(c.get("id")) == cid:
            return c
    return None


def _apply_edits(row: dict[str, Any], st: ReviewState) -> None:
    lineage = dict(row.get("lineage") or {})
    history = list(lineage.get("human_edits") or [])
    cands = [dict(c) for c in row.get("candidates") or []]
    row["candidates"] = cands
    for key, e in st.edits.items():
        entry = {"field": e["field"], "old": None, "new": e["new"], "time": e.get("time"),
                 "reviewer": e.get("reviewer")}
        if e["field"] == "candidate":
            entry["candidate"] = e["candidate"]
        again = any(all(h.get(k) == entry.get(k) for k in ("field", "candidate", "new", "time")) for h in history)
        if e["field"] == "candidate":
            c = _candidate(row, e["candidate"])
            if c is None:
                continue   # the candidate is not in this copy of the record
            entry["old"] = c.get("output")
            c["output"], c["human_edited"] = e["new"], True
        else:
            entry["old"] = row.get(e["field"])
            row[e["field"]] = e["new"]
        if not again:  # a file that already carries this edit (a curated copy) keeps one entry
            history.append(entry)
    if not cands:
        row.pop("candidates")
    lineage["human_edits"] = history
    row["lineage"] = lineage


def _apply_choice(row: dict[str, Any], st: ReviewState) -> None:
    ch, rj = st.choice["chosen"], st.choice["rejected"]
    if _candidate(row, ch) is None or _candidate(row, rj) is None:
        return
    judge = dict(row.get("judge") or {})
    machine = judge.get("pair")
    if isinstance(machine, dict) and machine.get("basis") == "human":  # applied before
        machine = machine.get("judge_pair")
    ranking = [c for c in judge.get("ranking") or [] if c not in (ch, rj)]
    judge["ranking"] = [ch, *ranking, rj]
    judge["best"] = ch
    judge["pair"] = {"chosen": ch, "rejected": rj, "kept": True, "reason": None, "basis": "human",
                     "reviewer": st.choice.get("reviewer"), "time": st.choice.get("time"),
                     "judge_pair": machine}
    row["judge"] = judge


def review_row(row: dict[str, Any], st: ReviewState | None, reviewed_only: bool = False
               ) -> dict[str, Any] | None:
    """``row`` (a record as a dict) with its human verdicts applied: None when a person rejected
    it (or, with ``reviewed_only``, did not accept it). The input is not modified."""
    if st is None:
        return None if reviewed_only else row
    if st.status == "rejected" or (reviewed_only and st.status != "accepted"):
        return None
    row = dict(row)
    if st.edits:
        _apply_edits(row, st)
    if st.choice:
        _apply_choice(row, st)
    row["review"] = st.summary()
    return row


def apply_reviews(records: list[Record], reviews: dict[str, ReviewState], reviewed_only: bool = False
                  ) -> list[Record]:
    """Records with human verdicts applied (see :func:`review_row`); the others unchanged."""
    if not reviews and not reviewed_only:
        return records
    out = []
    for rec in records:
        st = reviews.get(rec.id)
        if st is None and not reviewed_only:
            out.append(rec)
            continue
        row = review_row(copy.copy(rec.to_dict()), st, reviewed_only)
        if row is not None:
            out.append(Record.from_dict(row))
    return out


def apply_to_rows(rows: list[dict[str, Any]], reviews: dict[str, ReviewState]
                  ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows (dicts, as filter/dedup read them) with human verdicts applied, and the counts
    ``{"human_rejected", "human_edited"}``."""
    counts = {"human_rejected": 0, "human_edited": 0}
    if not reviews:
        return rows, counts
    out = []
    for row in rows:
        st = reviews.get(str(row.get("id")))
        new = review_row(row, st)
        if new is None:
            counts["human_rejected"] += 1
            continue
        if st is not None and st.edits:
            counts["human_edited"] += 1
        out.append(new)
    return out, counts


def reviews_for(paths: Iterable[str | Path]) -> dict[str, ReviewState]:
    """The reviews of the run directory that the first of ``paths`` belongs to (the folder
    itself or a file up to three folders below it); empty when none."""
    from datakit.runs import find_run_dir

    return load_reviews(find_run_dir(list(paths)))


def human_pair(rec: Record) -> dict[str, Any] | None:
    """The pair a person chose for ``rec`` (after :func:`apply_reviews`), or None."""
    pair = (rec.judge or {}).get("pair") or {}
    return pair if pair.get("basis") == "human" else None


# --------------------------------------------------------------------------- the data card

def review_summary(run_dir: str | Path) -> dict[str, Any]:
    """Counts for the data card: records reviewed, accepted, rejected, edited, pairs chosen,
    and how often people overruled the judge: a chosen pair that differs from the judge's kept
    pair (or where the judge kept none), or a rejection of a record whose judge pair was kept."""
    states = load_reviews(run_dir)
    out = {"reviewed": len(states), "accepted": 0, "rejected": 0, "edited": 0, "chose_pair": 0,
           "overruled_judge": 0, "reviewers": sorted({s.reviewer for s in states.values() if s.reviewer})}
    if not states:
        return out
    from datakit.judge.store import merge_run

    pairs = {r.id: (r.judge or {}).get("pair") or {} for r in merge_run(run_dir, only=set(states))}
    for rid, st in states.items():
        out["accepted" if st.status == "accepted" else "rejected"] += 1
        out["edited"] += bool(st.edits)
        machine = pairs.get(rid) or {}
        if st.choice:
            out["chose_pair"] += 1
            same = machine.get("kept") and (machine.get("chosen"), machine.get("rejected")) == (
                st.choice["chosen"], st.choice["rejected"])
            out["overruled_judge"] += not same
        elif st.status == "rejected" and machine.get("kept"):
            out["overruled_judge"] += 1
    return out
