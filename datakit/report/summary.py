"""The top of the card: the whole funnel in one list, the key numbers and the warnings."""

from __future__ import annotations

from typing import Any

BUNDLED_MODEL = "smollm2-135m-instruct"   # datakit.teachers.local.MODEL_ALIAS
BUNDLED_NOTE = ("the bundled 135M model (SmolLM2-135M-Instruct); its numbers exercise the pipeline "
                "and are no quality claim")


def _is_bundled(teacher: Any, model: Any) -> bool:
    return str(teacher) == "local" or str(model).lower() == BUNDLED_MODEL


def bundled_flags(rep: dict[str, Any], config: dict[str, Any] | None) -> dict[str, bool]:
    makers = rep["generate"]["lineage"]["makers"]
    usage = rep["cost"]["usage"]
    teacher = (config is not None and rep["config_teachers"] == []) or \
        any(_is_bundled(m["teacher"], m["model"]) for m in makers) or \
        any("local" in usage.get(s, {}) for s in ("generate", "respond"))
    judge = any(_is_bundled(j["teacher"], j["model"]) for j in rep["judge"].get("judges", []))
    val = any(((v.get("judged") or {}).get("judge") or {}).get("bundled") is True for v in rep["validation"])
    return {"teacher": teacher, "judge": judge, "validation_judge": val}


def pipeline_funnel(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """generate's steps, then curation, judged, exported: each with ``ran``."""
    gen = rep["generate"]
    steps = [dict(s, ran=gen["ran"]) for s in gen["funnel"]["steps"]]
    steps += [dict(s, ran=True) for s in rep["curation"]] or [
        {"key": "dedup", "label": "passed dedup / decontamination", "ran": False}]
    j = rep["judge"]
    steps.append({"key": "judged", "label": "judged", "ran": j["ran"], "count": j.get("records_judged"),
                  "removed": {}, "examples": {}})
    exp = rep["exports"]["formats"]
    pairs = (j.get("judged") or {}).get("pairs") or {}
    for fmt, label in (("sft", "exported SFT rows"), ("dpo", "exported DPO pairs")):
        e = exp.get(fmt)
        removed = dict((e or {}).get("dropped") or {})
        if fmt == "dpo" and not removed:
            removed = {k: v for k, v in pairs.items() if not k.startswith("kept")}
        steps.append({"key": f"export_{fmt}", "label": label, "ran": e is not None,
                      "count": None if e is None else e.get("rows"),
                      "eval_rows": None if e is None else e.get("eval_rows"), "removed": removed, "examples": {}})
    return steps


def _total(usage: dict[str, dict[str, dict[str, Any]]], key: str) -> float | None:
    vals = [c.get(key) for per in usage.values() for c in per.values()]
    known = [v for v in vals if isinstance(v, (int, float))]
    return round(sum(known), 6) if known else None


def summary_and_warnings(rep: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    gen, data, j = rep["generate"], rep["generate"]["data"], rep["judge"]
    rep["funnel"] = pipeline_funnel(rep)
    proposed = gen["funnel"]["steps"][0]["count"] if gen["ran"] else None
    accepted = gen["funnel"]["accepted"] if gen["ran"] else None
    exp = rep["exports"]["formats"]
    vals = [v["judged"] for v in rep["validation"] if v.get("judged")]
    s = {"accepted_records": accepted, "candidates_proposed": proposed,
         "acceptance_rate": round(accepted / proposed, 4) if proposed else None,
         "languages": {k: v["share"] for k, v in data["languages"].items()},
         "classification_share": data["classification"].get("classification", {}).get("share", 0.0 if data["n"] else None),
         "records_judged": j.get("records_judged"),
         "judge_ok_share": (j.get("status") or {}).get("ok", {}).get("share") if j["ran"] else None,
         "mean_candidate_score": (j.get("score") or {}).get("mean"),
         "position_bias_rate": (j.get("pairwise") or {}).get("position_bias_rate"),
         "sft_rows": (exp.get("sft") or {}).get("rows"), "dpo_pairs": (exp.get("dpo") or {}).get("rows"),
         "requests": _total(rep["cost"]["usage"], "requests"), "cost_usd": _total(rep["cost"]["usage"], "cost"),
         "wall_s": round(sum(rep["cost"]["wall_s"].values()), 1) if rep["cost"]["wall_s"] else None,
         "validation_verdict": vals[0].get("verdict") if vals else None}
    return s, _warnings(rep)


def _warnings(rep: dict[str, Any]) -> list[str]:
    w, b = [], rep["bundled"]
    if b["teacher"]:
        w.append(f"The teacher was {BUNDLED_NOTE}.")
    if b["judge"]:
        w.append(f"The judge was {BUNDLED_NOTE}.")
    if b["validation_judge"]:
        w.append(f"The validation judge was {BUNDLED_NOTE}.")
    gen = rep["generate"]
    copied = sum(s["removed"].get("copied_example", 0) for s in gen["funnel"]["steps"])
    if copied:
        w.append(f"{copied} candidates reproduced the prompt's own examples (rejected as copied_example).")
    rep_out = gen["data"]["repeated_outputs"]
    n = gen["data"]["n"]
    if n and rep_out["top"] and rep_out["top"][0]["n"] >= max(2, 0.05 * n):
        w.append(f"{rep_out['records_with_repeated_output']} of {n} accepted records share an output with "
                 f"another record (the most common output appears {rep_out['top'][0]['n']} times).")
    pb = (rep["judge"].get("pairwise") or {}).get("position_bias_rate")
    if pb is not None and pb >= 0.5:
        w.append(f"The pairwise judge picked the same position in both orders {pb:.0%} of the time (position bias).")
    pairs = ((rep["judge"].get("judged") or {}).get("pairs")) or {}
    kept = sum(v for k, v in pairs.items() if k.startswith("kept"))
    by_design = sum(v for k, v in pairs.items() if k.startswith("kept (design"))
    if by_design:
        w.append(f"{by_design} of {kept} DPO pairs rest on a tie-break by design (--tie-break), not on the judge: "
                 "the judge could not tell those candidates apart.")
    if gen["uncommitted_rows"]:
        w.append(f"{gen['uncommitted_rows']} rows past the last committed round were left out (an interrupted generate).")
    if not rep["stages_log"]:
        w.append("No stages.jsonl in this run: wall time per stage and cost of respond/judge are partly unavailable; "
                 "curation and export counts come from the files found in the run folder.")
    return w
