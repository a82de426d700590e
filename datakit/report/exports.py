"""Exported SFT rows and DPO pairs: from stages.jsonl, else by looking at the run's files.

A JSONL/Parquet file under the run (not one of the stage logs) is an SFT export when its first
row has ``messages`` or ``conversations`` without ``chosen``, a DPO export when it has
``chosen`` and ``rejected``; ``NAME.eval.EXT`` files are the held-out split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from datakit.report.files import CARD_DIR, KNOWN_FILES, count_lines
from datakit.report.stages import counts_of, paths_of


def _first_row(path: Path) -> dict[str, Any] | None:
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
            return {n: True for n in names}
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    obj = json.loads(line)
                    return obj if isinstance(obj, dict) else None
    except Exception:  # not an export file: anything unreadable is simply not counted
        return None
    return None


def kind_of(path: Path) -> str | None:
    row = _first_row(path)
    if not row:
        return None
    if "chosen" in row and "rejected" in row:
        return "dpo"
    if "messages" in row or "conversations" in row:
        return "sft"
    return None


def _rows(path: Path) -> int:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return count_lines(path)


def from_files(run: Path) -> dict[str, Any]:
    found: dict[str, dict[str, Any]] = {}
    skip = set(KNOWN_FILES)
    for d in [run] + sorted(p for p in run.iterdir() if p.is_dir() and p.name != CARD_DIR and not p.name.startswith("train")):
        for path in sorted(list(d.glob("*.jsonl")) + list(d.glob("*.parquet"))):
            if path.name in skip or path.name.endswith("removed.jsonl"):
                continue
            kind = kind_of(path)
            if kind is None:
                continue
            e = found.setdefault(kind, {"format": kind, "rows": 0, "eval_rows": 0, "files": [], "dropped": {}})
            is_eval = ".eval." in path.name
            e["eval_rows" if is_eval else "rows"] += _rows(path)
            e["files"].append(str(path.relative_to(run)))
    return found


def from_stages(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The last export of each format (a rerun replaces the file it wrote)."""
    found: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["stage"] != "export":
            continue
        c = counts_of(r)
        fmt = str(c.get("format") or "sft")
        found[fmt] = {"format": fmt, "style": c.get("style"), "rows": c.get("rows"),
                      "eval_rows": c.get("eval_rows"), "dropped": dict(Counter(c.get("dropped") or {})),
                      "files": paths_of(r, "outputs")}
    return found


def exports(stage_rows: list[dict[str, Any]], run: Path) -> tuple[dict[str, Any], str]:
    logged = from_stages(stage_rows)
    if logged:
        return logged, "stages.jsonl"
    return from_files(run), "files"
