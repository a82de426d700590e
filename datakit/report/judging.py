"""The judge section: from ``judgements.jsonl`` (every call; the last line of a unit wins, as in
the merged view) and ``judged.jsonl`` (pair decisions, margins, best/worst candidates)."""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from datakit.judge.pairs import combine_orders, position_bias_rate
from datakit.report.files import Progress, iter_jsonl
from datakit.report.funnel import _clip
from datakit.report.stats import histogram, share

N_EXAMPLES = 3


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def read_judgements(path: Path, progress: Progress | None = None) -> dict[str, Any]:
    point: dict[tuple, tuple] = {}
    pair: dict[tuple, Any] = {}
    for row in iter_jsonl(path, "judgements.jsonl", progress):
        who = (str(row.get("teacher")), str(row.get("model")))
        if row.get("kind") == "pointwise":
            v = row.get("verdict") if isinstance(row.get("verdict"), dict) else {}
            aspects = {a: _num(d.get("score")) for a, d in (v.get("aspects") or {}).items() if isinstance(d, dict)}
            point[(row.get("record_id"), row.get("cand"))] = (v.get("status") or "unparsed", _num(v.get("score")), aspects, who)
        elif row.get("kind") == "pairwise":
            pair[(row.get("record_id"), row.get("x"), row.get("y"), row.get("order"))] = (row.get("winner"), who)
    return _summarise_calls(point, pair)


def _summarise_calls(point: dict[tuple, tuple], pair: dict[tuple, Any]) -> dict[str, Any]:
    status, judges, scores = Counter(), Counter(), []
    aspects: dict[str, list[float]] = defaultdict(list)
    for st, score, asp, who in point.values():
        status[st] += 1
        judges[who] += 1
        if score is not None and st in ("ok", "partial"):
            scores.append(score)
        for a, s in asp.items():
            if s is not None:
                aspects[a].append(s)
    comps = []
    for (rid, x, y, order), (winner, who) in pair.items():
        judges[who] += 1
        if order == "xy":
            ba = pair.get((rid, x, y, "yx"), (None,))[0]
            comps.append(combine_orders(winner, ba))
        elif (rid, x, y, "xy") not in pair:
            comps.append(combine_orders(None, winner))
    results = Counter("agreed" if c["result"] in ("x", "y") else c["result"] for c in comps)
    bias, compared = position_bias_rate(comps)
    return {"pointwise": len(point), "status": share(status), "score": histogram(scores, [1 + 0.5 * i for i in range(19)]),
            "aspects": {a: histogram(v, 10, integer=True) for a, v in sorted(aspects.items())},
            "pairwise": {"comparisons": len(comps), "results": dict(results), "compared": compared,
                         "agreement": round(results["agreed"] / compared, 4) if compared else None,
                         "position_bias_rate": None if bias is None else round(bias, 4)},
            "judges": [{"teacher": t, "model": m, "calls": n} for (t, m), n in judges.most_common()],
            "records_judged": len({k[0] for k in point} | {k[0] for k in pair})}


def _example(rec: dict[str, Any], cand: dict[str, Any], score: float) -> dict[str, Any]:
    j = cand.get("judge") or {}
    rationale = next((d.get("rationale") for d in (j.get("aspects") or {}).values()
                      if isinstance(d, dict) and d.get("rationale")), None)
    return {"record_id": rec.get("id"), "candidate": cand.get("id"), "score": score,
            "teacher": cand.get("teacher"), "model": cand.get("model"),
            "instruction": _clip(rec.get("instruction"), 300), "input": _clip(rec.get("input"), 200),
            "output": _clip(cand.get("output"), 400), "rationale": _clip(rationale, 200) or None}


def read_judged(path: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Pair decisions, margins and the best/worst scored candidates from ``judged.jsonl``."""
    decisions, margins, kept_margins, min_margin = Counter(), [], [], None
    best: list[tuple] = []
    worst: list[tuple] = []
    k = 0
    for rec in iter_jsonl(path, "judged.jsonl", progress):
        j = rec.get("judge") if isinstance(rec.get("judge"), dict) else None
        if not j:
            continue
        p = j.get("pair") if isinstance(j.get("pair"), dict) else {}
        # kept pairs by what decided them: the judge, a tie-break by design, or a person
        decisions[f"kept ({p.get('basis') or 'judge'})" if p.get("kept") else str(p.get("reason") or "none")] += 1
        m = _num(p.get("margin"))
        if m is not None:
            margins.append(m)
            if p.get("kept"):
                kept_margins.append(m)
        min_margin = _num(p.get("min_margin")) if min_margin is None else min_margin
        for c in rec.get("candidates") or []:
            s = _num(((c.get("judge") or {}) if isinstance(c, dict) else {}).get("score"))
            if s is None or (c.get("judge") or {}).get("status") not in ("ok", "partial"):
                continue
            k += 1  # tie-break: earlier first, so the choice is stable
            heapq.heappush(best, (s, -k, rec, c)) if len(best) < N_EXAMPLES else heapq.heappushpop(best, (s, -k, rec, c))
            heapq.heappush(worst, (-s, -k, rec, c)) if len(worst) < N_EXAMPLES else heapq.heappushpop(worst, (-s, -k, rec, c))
    return {"pairs": dict(decisions.most_common()), "min_margin": min_margin,
            "margin": histogram(margins, 18), "kept_margin": histogram(kept_margins, 18),
            "best": [_example(r, c, s) for s, _, r, c in sorted(best, key=lambda t: (-t[0], -t[1]))],
            "worst": [_example(r, c, -s) for s, _, r, c in sorted(worst, key=lambda t: (-t[0], -t[1]))]}
