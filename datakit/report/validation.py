"""Validation runs: every ``train*`` folder of the run (metrics.jsonl, summary.json and the
judged comparison ``validation.json`` of tuned vs base)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datakit.report.files import iter_jsonl, read_json, train_dirs
from datakit.report.funnel import _clip

N_PAIRS = 3


def _curves(path: Path) -> dict[str, list]:
    steps, loss, ev_steps, ev = [], [], [], []
    if path.is_file():
        for r in iter_jsonl(path):
            s = r.get("step")
            if not isinstance(s, (int, float)):
                continue
            if isinstance(r.get("loss"), (int, float)):
                steps.append(s)
                loss.append(r["loss"])
            if isinstance(r.get("eval_loss"), (int, float)):
                ev_steps.append(s)
                ev.append(r["eval_loss"])
    return {"steps": steps, "loss": loss, "eval_steps": ev_steps, "eval_loss": ev}


def example_pairs(judgements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Three pairs to show: a win, a loss and a tie when there are (else the first ones)."""
    picked: list[dict[str, Any]] = []
    for outcome in ("win", "loss", "tie"):
        j = next((j for j in judgements if isinstance(j, dict) and j.get("outcome") == outcome), None)
        if j is not None:
            picked.append(j)
    for j in judgements:
        if len(picked) >= N_PAIRS:
            break
        if isinstance(j, dict) and j not in picked:
            picked.append(j)
    return [{"prompt": _clip(j.get("prompt"), 300), "base": _clip(j.get("base"), 400),
             "tuned": _clip(j.get("tuned"), 400), "ab": j.get("ab"), "ba": j.get("ba"),
             "outcome": j.get("outcome")} for j in picked[:N_PAIRS]]


def _judged(v: dict[str, Any] | None) -> dict[str, Any] | None:
    if not v:
        return None
    keys = ("judge", "n_prompts", "wins", "ties", "losses", "unparsed", "win_rate", "ci95", "verdict")
    out = {k: v.get(k) for k in keys}
    out["examples"] = example_pairs(v.get("judgements") or [])
    return out


def one_run(d: Path, run: Path) -> dict[str, Any]:
    summary = read_json(d / "summary.json") or {}
    val = read_json(d / "validation.json")
    curves = _curves(d / "metrics.jsonl")
    eval_loss = (val or {}).get("eval_loss") if isinstance((val or {}).get("eval_loss"), dict) else {}
    tuned = eval_loss.get("tuned")
    if tuned is None:
        tuned = summary.get("best_eval_loss")
    if tuned is None and curves["eval_loss"]:
        tuned = min(curves["eval_loss"])
    return {"dir": str(d.relative_to(run)), "method": summary.get("method"), "model": summary.get("model"),
            "steps": summary.get("steps") or (curves["steps"][-1] if curves["steps"] else None),
            "wall_s": summary.get("wall_s"), "first_loss": summary.get("first_loss"),
            "last_loss": summary.get("last_loss"), "eval_loss_base": eval_loss.get("base"),
            "eval_loss_tuned": tuned, "curves": curves, "judged": _judged(val)}


def validation_runs(run: Path) -> list[dict[str, Any]]:
    return [one_run(d, run) for d in train_dirs(run)]
