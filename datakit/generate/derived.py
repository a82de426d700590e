"""Runs derived from another run: ``evolve`` and ``converse`` write a run directory of their own
(by default a folder inside the source run, ``RUN/evolve`` or ``RUN/converse``) with the same
files and the same commit protocol as ``generate`` — so ``respond``, ``judge``, ``export``,
``filter`` and ``report`` read it as they read any run.

Work goes in rounds. A round's requests are a pure function of the committed state (the source
records, the records of earlier rounds, the options), so after kill -9 the logs are cut back to
the last committed round and the interrupted round is replayed from the response cache.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from datakit.errors import UserError
from datakit.records import JsonlAppender, Record, read_jsonl, read_records
from datakit.runs import RunDir

Step = Callable[[int], Awaitable["tuple[list[Record], list[Record]] | None"]]


@dataclass
class DerivedSummary:
    run_dir: str
    source: str
    accepted: int = 0
    rounds: int = 0
    rejected: Counter = field(default_factory=Counter)
    teachers: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    resumed_from_round: int = 0


def source_records(source: str | Path) -> list[Record]:
    """The accepted records of a run directory (committed rounds) or of a record file."""
    recs = [r for r in read_records(source) if r.status == "accepted"]
    if not recs:
        raise UserError("no accepted records to start from", path=str(source))
    return recs


def default_out(source: str | Path, name: str) -> Path:
    src = Path(source)
    if not src.exists():
        raise UserError("run directory not found", path=str(src))
    if not src.is_dir():
        raise UserError("SOURCE is a file: name the run directory to write with --out", field="--out")
    return src / name


def restore(run: RunDir) -> tuple[dict[str, Any], list[Record], list[Record]]:
    """Cut the logs back to the last committed round; the committed accepted and rejected rows."""
    state = run.load_state() or {"round": 0, "accepted": 0, "rejected": {}, "teachers": {}}
    run.cut_back(lambda r: (r.get("lineage") or {}).get("round", 0), state["round"])
    acc = [Record.from_dict(r) for r in read_jsonl(run.records_path)] if run.records_path.exists() else []
    rej = [Record.from_dict(r) for r in read_jsonl(run.rejected_path)] if run.rejected_path.exists() else []
    if len(acc) != state["accepted"]:
        raise UserError(f"records.jsonl holds {len(acc)} records but state.json says {state['accepted']}; "
                        f"the run directory was changed by hand", path=str(run.path))
    return state, acc, rej


def finished(summary: DerivedSummary, state: dict[str, Any]) -> DerivedSummary:
    """The summary of a run with nothing left to do (no teacher is started for it)."""
    summary.accepted, summary.rounds = state["accepted"], state["round"]
    summary.rejected.update(state["rejected"])
    summary.totals, summary.resumed_from_round = state.get("teachers", {}), state["round"]
    return summary


async def run_rounds(run: RunDir, pool: Any, state: dict[str, Any], last_round: int, step: Step,
                     summary: DerivedSummary) -> DerivedSummary:
    """Rounds ``state.round + 1 .. last_round``: each appends its logs, then commits. ``step``
    returns None when there is nothing left to do."""
    from datakit.generate.loop import _merge_stats

    t0 = time.monotonic()
    before = {name: dict(s) for name, s in state.get("teachers", {}).items()}
    accepted, rejected, round_no = state["accepted"], Counter(state["rejected"]), state["round"]
    summary.resumed_from_round = round_no
    with JsonlAppender(run.records_path) as rec_log, JsonlAppender(run.rejected_path) as rej_log:
        while round_no < last_round:
            out = await step(round_no + 1)
            if out is None:
                break
            round_no += 1
            acc, rej = out
            rec_log.write_batch(r.to_dict() for r in acc)
            rej_log.write_batch(r.to_dict() for r in rej)
            accepted += len(acc)
            rejected.update(r.reason for r in rej)
            run.commit({"round": round_no, "accepted": accepted, "rejected": dict(rejected),
                        "teachers": _merge_stats(before, pool.stats())})
    summary.accepted, summary.rounds, summary.rejected = accepted, round_no, rejected
    summary.teachers = pool.summary_rows()
    summary.totals = _merge_stats(before, pool.stats())
    summary.seconds = time.monotonic() - t0
    return summary
