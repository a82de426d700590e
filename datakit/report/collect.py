"""Read a run directory into plain numbers: the content of report.json.

Each file is streamed once. records.jsonl and rejected.jsonl rows past the last committed
round (state.json) belong to a round that kill -9 cut off and are left out, as every other
stage does."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from datakit import __version__
from datakit.report import curation, exports, judging, lineage, stages, validation
from datakit.report.files import Progress, check_run_dir, iter_jsonl, read_json
from datakit.report.funnel import GenerateFunnel
from datakit.report.shape import ShapeAcc
from datakit.report.summary import bundled_flags, summary_and_warnings
from datakit.reviews import review_summary

SCHEMA = "datakit.report/1"


def _generate(run: Path, state: dict | None, progress: Progress | None) -> dict[str, Any]:
    """One pass over records.jsonl and rejected.jsonl feeding funnel, shape and lineage."""
    last = state.get("round") if isinstance(state, dict) and isinstance(state.get("round"), int) else None
    fun, shape, lin = GenerateFunnel(), ShapeAcc(), lineage.LineageAcc()
    skipped = 0

    def rows(name: str):
        nonlocal skipped
        path = run / name
        if not path.is_file():
            return
        for row in iter_jsonl(path, name, progress):
            rnd = (row.get("lineage") or {}).get("round", 0) if isinstance(row.get("lineage"), dict) else 0
            if last is not None and isinstance(rnd, int) and rnd > last:
                skipped += 1
                continue
            yield row

    for row in rows("records.jsonl"):
        if row.get("status", "accepted") != "accepted":
            continue
        fun.add_accepted()
        shape.add(row)
        lin.add(row, accepted=True)
    for row in rows("rejected.jsonl"):
        fun.add_rejected(row)
        lin.add(row, accepted=False)
    return {"funnel": fun.result(), "data": shape.result(), "lineage": lin.result(), "uncommitted_rows": skipped,
            "ran": (run / "records.jsonl").is_file(), "rejected_log": (run / "rejected.jsonl").is_file()}


def _judge(run: Path, progress: Progress | None) -> dict[str, Any]:
    out: dict[str, Any] = {"ran": (run / "judgements.jsonl").is_file()}
    if out["ran"]:
        out.update(judging.read_judgements(run / "judgements.jsonl", progress))
    if (run / "judged.jsonl").is_file():
        out["judged"] = judging.read_judged(run / "judged.jsonl", progress)
    return out


def _cost(run: Path, state: dict | None, stage_rows: list[dict], progress: Progress | None) -> dict[str, Any]:
    """Usage per stage and teacher, and wall time per stage: stages.jsonl first, logs second."""
    per = stages.per_stage(stage_rows)
    usage = {s: v["usage"] for s, v in per.items() if v["usage"]}
    wall = {s: v["wall_s"] for s, v in per.items()}
    source = {s: "stages.jsonl" for s in usage}
    if "generate" not in usage and state and state.get("teachers"):
        usage["generate"], source["generate"] = lineage.state_usage(state), "state.json"
    for stage, name in (("respond", "candidates.jsonl"), ("judge", "judgements.jsonl")):
        if stage not in usage and (run / name).is_file():
            usage[stage], source[stage] = lineage.log_usage(run / name, stage, progress), name
    busy = {t: c.get("seconds") for t, c in (usage.get("generate") or {}).items() if c.get("seconds") is not None}
    return {"usage": usage, "source": source, "wall_s": wall, "generate_busy_s": busy,
            "stage_log": [{"stage": r["stage"], "started": r.get("started"), "wall_s": r.get("wall_s"),
                           "argv": r.get("argv") if isinstance(r.get("argv"), list) else None} for r in stage_rows]}


def collect(run: str | Path, progress: Progress | None = None,
            status: Callable[[str], None] | None = None) -> dict[str, Any]:
    run = Path(run)
    check_run_dir(run)
    say = status or (lambda _m: None)
    config, state = read_json(run / "config.json"), read_json(run / "state.json")
    stage_rows = stages.read_stages(run)
    say("reading records and rejections")
    gen = _generate(run, state, progress)
    say("reading judge logs")
    judge = _judge(run, progress)
    say("reading curation, exports, training and usage")
    cur = curation.curation_steps(stage_rows, run)
    exp, exp_source = exports.exports(stage_rows, run)
    rep: dict[str, Any] = {
        "schema": SCHEMA, "datakit_version": __version__, "run": run.resolve().name,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages_log": bool(stage_rows),
        "generate": gen, "curation": cur, "judge": judge, "exports": {"formats": exp, "source": exp_source},
        "cost": _cost(run, state, stage_rows, progress), "validation": validation.validation_runs(run),
        "reviews": review_summary(run),
        "config_teachers": [t.get("name") for t in ((config or {}).get("config") or {}).get("teachers") or []
                            if isinstance(t, dict)] if config else None,
    }
    rep["bundled"] = bundled_flags(rep, config)
    rep["summary"], rep["warnings"] = summary_and_warnings(rep)
    return rep
