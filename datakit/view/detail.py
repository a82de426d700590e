"""One record as the viewer shows it: the machine's view (the record merged with its candidates
and judgements exactly as ``judge`` and ``export`` merge them) and the reviewed view (human
verdicts applied as every stage applies them), plus the context a reviewer needs: the nearest
text the ROUGE-L filter compared against, the duplicate cluster, the verdict history."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from datakit.judge.store import attach_judgements, record_candidates, unit_key
from datakit.records import Record
from datakit.reviews import review_row
from datakit.view.index import SOURCES
from datakit.view.store import ViewStore


class Stale(Exception):
    """The run changed under the index (a resumed run rewrote a log): rebuild it."""


def _read_at(store: ViewStore, src: int, off: int, length: int) -> dict[str, Any]:
    path = store.run / SOURCES[src]
    try:
        with open(path, "rb") as f:
            data = os.pread(f.fileno(), length, off)
        row = json.loads(data)
    except (OSError, ValueError):
        raise Stale(f"{SOURCES[src]} changed since it was indexed") from None
    if not isinstance(row, dict):
        raise Stale(f"{SOURCES[src]} changed since it was indexed")
    return row


def _merged(store: ViewStore, row: dict[str, Any], min_margin: float, tie_break: str | None) -> Record:
    rec = Record.from_dict(row)
    cands: dict[str, dict[str, Any]] = {}
    judgements: dict[tuple, dict[str, Any]] = {}
    for src, off, length in store.subs(rec.id):
        line = _read_at(store, src, off, length)
        if SOURCES[src] == "candidates.jsonl":
            cands[str(line.get("id"))] = {k: v for k, v in line.items() if k != "record_id"}
        else:
            judgements[unit_key(line)] = line
    attach_judgements(rec, record_candidates(rec, cands), judgements, min_margin, tie_break)
    return rec


def _nearest(store: ViewStore, rec: dict[str, Any]) -> dict[str, Any]:
    """Texts of the records the filters name (``detail.nearest``, ``detail.duplicate_of``)."""
    ids = []
    for v in rec.get("filters") or []:
        d = v.get("detail") if isinstance(v, dict) and isinstance(v.get("detail"), dict) else {}
        ids += [str(d[k]) for k in ("nearest", "duplicate_of", "example_id") if d.get(k)]
    found = store.texts(sorted(set(ids)))
    return {i: found.get(i) for i in sorted(set(ids))}


def record_detail(store: ViewStore, rid: str, min_margin: float = 1.0, tie_break: str | None = None
                  ) -> dict[str, Any] | None:
    loc = store.lookup(rid)
    if loc is None:
        return None
    row = _read_at(store, loc["src"], loc["off"], loc["len"])
    if str(row.get("id")) != rid:
        raise Stale(f"{SOURCES[loc['src']]} changed since it was indexed")
    machine = _merged(store, row, min_margin, tie_break).to_dict()
    store.sync_reviews()
    st = store.states.get(rid)
    reviewed = review_row(copy.copy(machine), st) if st else None
    cur = store.curation(rid)
    cluster_text = store.texts([m["id"] for m in cur["cluster"]])
    for m in cur["cluster"]:
        m["instruction"] = (cluster_text.get(m["id"]) or {}).get("instruction")
    return {"n": loc["n"], "source": SOURCES[loc["src"]], "machine": machine,
            "reviewed": reviewed, "review": st.summary() if st else None,
            "history": store.history.get(rid, [])[-50:], "nearest": _nearest(store, machine),
            "curation": cur}
