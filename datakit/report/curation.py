"""Curation steps (``filter``, ``dedup``, decontamination with ``--against``).

From stages.jsonl when the commands logged themselves there (counts: in, kept, removed by
reason, clusters, matches per --against file); otherwise from the ``*.removed.jsonl`` files
found under the run (reason, duplicate_of, similarity, matched_file), with ``in`` counted from
the kept file beside them when it is there. Examples always come from the removed rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from datakit.report.files import count_lines, iter_jsonl, kept_file_of, removed_files
from datakit.report.funnel import EXAMPLES, _clip
from datakit.report.stages import counts_of, paths_of

LABELS = {"filter": "passed filter (rules + ROUGE-L)", "dedup": "passed dedup / decontamination"}


def _removed_summary(path: Path) -> dict[str, Any]:
    """Reasons, clusters, matches per file and two examples per reason, from one removed file."""
    reasons, against, stage = Counter(), Counter(), Counter()
    reps: set[str] = set()
    examples: dict[str, list[dict[str, Any]]] = {}
    for row in iter_jsonl(path):
        reason = str(row.get("reason") or "unknown")
        reasons[reason] += 1
        if row.get("matched_file"):
            against[str(row["matched_file"])] += 1
        elif reason == "near_duplicate" and row.get("duplicate_of") is not None:
            reps.add(str(row["duplicate_of"]))
        last = (row.get("filters") or [{}])[-1]
        stage[str(last.get("filter") if isinstance(last, dict) else "")] += 1
        ex = examples.setdefault(reason, [])
        if len(ex) < EXAMPLES:
            ex.append({"id": row.get("id"), "instruction": _clip(row.get("instruction")),
                       "duplicate_of": row.get("duplicate_of"), "similarity": row.get("similarity"),
                       "matched_file": row.get("matched_file")})
    name = stage.most_common(1)[0][0] if stage else ""
    return {"stage": name if name in LABELS else ("dedup" if against or reps else "filter"),
            "removed": dict(reasons.most_common()), "clusters": len(reps), "against": dict(against),
            "examples": examples}


def from_stages(rows: list[dict[str, Any]], run: Path) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if r["stage"] not in LABELS:
            continue
        c = counts_of(r)
        step = {"key": r["stage"], "label": LABELS[r["stage"]], "source": "stages.jsonl",
                "in": c.get("in"), "count": c.get("kept"), "removed": dict(c.get("removed") or {}),
                "clusters": c.get("clusters"), "against": dict(c.get("against") or {}), "examples": {}}
        for p in paths_of(r, "outputs"):
            path = Path(p) if Path(p).is_absolute() else run / p
            if not path.is_file() and not Path(p).is_absolute():
                path = Path(p)  # relative to where the command ran
            if path.name.endswith("removed.jsonl") and path.is_file():
                step["examples"] = _removed_summary(path)["examples"]
                step["removed_file"] = str(path)
        out.append(step)
    return out


def from_files(run: Path) -> list[dict[str, Any]]:
    out = []
    for path in removed_files(run):
        s = _removed_summary(path)
        kept = kept_file_of(path)
        n_kept = count_lines(kept) if kept and kept.suffix == ".jsonl" else None
        n_removed = sum(s["removed"].values())
        out.append({"key": s["stage"], "label": LABELS[s["stage"]], "source": str(path.relative_to(run)),
                    "in": None if n_kept is None else n_kept + n_removed, "count": n_kept,
                    "removed": s["removed"], "clusters": s["clusters"] if s["stage"] == "dedup" else None,
                    "against": s["against"], "examples": s["examples"], "removed_file": str(path)})
    return out


def curation_steps(stage_rows: list[dict[str, Any]], run: Path) -> list[dict[str, Any]]:
    logged = from_stages(stage_rows, run)
    return logged if logged else from_files(run)
