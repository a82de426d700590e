"""Ranking candidates and building preference pairs: pure functions over stored judgements.

The rule (also in docs/JUDGE_EXPORT.md):

1. A candidate takes part when it has a non-empty output and a pointwise score (``ok`` or
   ``partial`` verdict). ``unparsed`` candidates never take part: no default score.
2. Candidates are ranked by score, high to low; equal scores are ordered by agreed pairwise
   wins (more first), then by candidate id, so the ranking is deterministic.
3. chosen = the first, rejected = the last of that ranking.
4. The pair is kept only when
   * there are at least two scored candidates (``too_few_candidates``),
   * the scores differ (``all_tied``: a tie is no preference, whatever ``min_margin`` is),
   * ``chosen.score - rejected.score >= min_margin`` (inclusive; ``margin_below_min``),
   * the two outputs differ (``identical_outputs``),
   * and, when the pairwise judge compared the two, both orders agree that chosen is better
     (``pairwise_disagree``, ``pairwise_tie``, ``pairwise_contradicts``, ``pairwise_unparsed``).
5. With pairwise judgements but no pointwise scores, candidates are ranked by agreed wins and
   a pair is kept when the first has an agreed win over the last (margin = difference in wins,
   ``min_margin`` does not apply).
6. A tie-break *by design*, only when the user asks for one (``tie_break``) and only where the
   judge could not tell the candidates apart (``all_tied``, ``margin_below_min``,
   ``pairwise_tie``, ``pairwise_disagree``, ``pairwise_unparsed``; never against a judge that
   prefers the other side): candidates made to differ in quality decide the pair.
   ``"temperature"``: the lowest-temperature sample is chosen, the highest rejected (a greedy
   or low-temperature answer over a high-temperature one); ``"teacher:NAME"``: a candidate of
   teacher NAME is chosen over one of any other teacher (a strong teacher's answer over the
   student model's own, as in on-policy preference data). Such a pair records
   ``basis: "design:temperature"`` (or ``"design:teacher"``) and no judge margin; a judged pair
   records ``basis: "judge"``. No score is ever invented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

EPS = 1e-9


def combine_orders(ab: str | None, ba: str | None) -> dict[str, Any]:
    """Combine the two orders of one pairwise comparison of candidates x and y.

    ``ab`` is the verdict with x shown as A, ``ba`` with y shown as A. Returns the outcome
    (``"x"``, ``"y"``, ``"tie"``, ``"disagree"`` or ``"unparsed"``) and whether the judge
    picked the same *position* both times (position bias).
    """
    if ab is None or ba is None:
        return {"result": "unparsed", "position_bias": False}
    # Translate each order's verdict into which candidate it prefers.
    first = {"A": "x", "B": "y", "tie": "tie"}[ab]
    second = {"A": "y", "B": "x", "tie": "tie"}[ba]
    position_bias = ab == ba and ab in ("A", "B")
    if first == second:
        return {"result": first, "position_bias": False}
    return {"result": "disagree", "position_bias": position_bias}


def agreed_wins(pairwise: Iterable[dict[str, Any]]) -> dict[str, int]:
    wins: dict[str, int] = {}
    for p in pairwise:
        for side in ("x", "y"):
            wins.setdefault(p[side], 0)
        if p.get("result") in ("x", "y"):
            wins[p[p["result"]]] += 1
    return wins


def pairwise_between(pairwise: Iterable[dict[str, Any]], a: str, b: str) -> str | None:
    """The combined pairwise outcome for candidates a and b from a's side:
    ``"win"``, ``"loss"``, ``"tie"``, ``"disagree"``, ``"unparsed"``; None when not compared."""
    for p in pairwise:
        if {p["x"], p["y"]} == {a, b}:
            r = p.get("result")
            if r in ("x", "y"):
                return "win" if p[r] == a else "loss"
            return r
    return None


@dataclass
class PairDecision:
    chosen: str | None
    rejected: str | None
    kept: bool
    reason: str | None
    margin: float | None
    chosen_score: float | None = None
    rejected_score: float | None = None
    ranking: list[str] | None = None
    basis: str | None = None          # "judge", "design:temperature", "design:teacher"
    judge_reason: str | None = None   # why the judge alone kept no pair, when design decided

    def to_dict(self) -> dict[str, Any]:
        d = {"chosen": self.chosen, "rejected": self.rejected, "kept": self.kept,
             "reason": self.reason, "margin": self.margin, "chosen_score": self.chosen_score,
             "rejected_score": self.rejected_score, "basis": self.basis}
        if self.judge_reason:
            d["judge_reason"] = self.judge_reason
        return d


def candidate_score(c: dict[str, Any]) -> float | None:
    j = c.get("judge") or {}
    if j.get("status") in ("ok", "partial") and isinstance(j.get("score"), (int, float)):
        return float(j["score"])
    return None


def rank_candidates(candidates: list[dict[str, Any]], pairwise: list[dict[str, Any]] | None = None
                    ) -> list[dict[str, Any]]:
    """Scored candidates with output, best first (see the module docstring)."""
    wins = agreed_wins(pairwise or [])
    scored = [c for c in candidates if (c.get("output") or "").strip() and candidate_score(c) is not None]
    return sorted(scored, key=lambda c: (-candidate_score(c), -wins.get(c["id"], 0), str(c["id"])))


TIE_BREAKABLE = ("all_tied", "margin_below_min", "pairwise_tie", "pairwise_disagree", "pairwise_unparsed")


def check_tie_break(tie_break: str | None) -> str | None:
    """``None``/``"none"``, ``"temperature"`` or ``"teacher:NAME"``; a ValueError otherwise."""
    if tie_break in (None, "", "none"):
        return None
    if tie_break == "temperature" or (tie_break.startswith("teacher:") and len(tie_break) > len("teacher:")):
        return tie_break
    raise ValueError(f"must be none, temperature or teacher:NAME (got {tie_break!r})")


def build_pair(candidates: list[dict[str, Any]], pairwise: list[dict[str, Any]] | None = None,
               min_margin: float = 1.0, tie_break: str | None = None) -> PairDecision:
    """chosen = best, rejected = worst candidate, kept only under the rules above; where the
    judge cannot tell them apart, ``tie_break`` may decide by design (rule 6)."""
    d = _judged_pair(candidates, pairwise or [], min_margin)
    if d.kept:
        d.basis = "judge"
    elif tie_break and d.reason in TIE_BREAKABLE:
        return _design_pair(candidates, pairwise or [], tie_break, d)
    return d


def _design_rank(c: dict[str, Any], tie_break: str) -> float | None:
    """Higher is better by design; None when the candidate has no place in that design."""
    if tie_break == "temperature":
        t = (c.get("params") or {}).get("temperature")
        return -float(t) if isinstance(t, (int, float)) else None
    return 1.0 if c.get("teacher") == tie_break.split(":", 1)[1] else 0.0


def _design_pair(candidates: list[dict[str, Any]], pairwise: list[dict[str, Any]], tie_break: str,
                 judged: PairDecision) -> PairDecision:
    placed = [(r, str(c["id"]), c) for c in candidates
              if (c.get("output") or "").strip() and (r := _design_rank(c, tie_break)) is not None]
    placed.sort(key=lambda t: (-t[0], t[1]))
    basis = "design:" + tie_break.split(":", 1)[0]

    def no(reason: str) -> PairDecision:
        return PairDecision(judged.chosen, judged.rejected, False, reason, judged.margin, judged.chosen_score,
                            judged.rejected_score, judged.ranking, None, judged.reason)

    if len(placed) < 2 or placed[0][0] == placed[-1][0]:
        return no(judged.reason)  # nothing differs by design: the judge's reason stands
    best, worst = placed[0][2], placed[-1][2]
    if best["output"].strip() == worst["output"].strip():
        return no("identical_outputs")
    bs, ws = candidate_score(best), candidate_score(worst)
    if (bs is not None and ws is not None and bs < ws) or pairwise_between(pairwise, best["id"], worst["id"]) == "loss":
        return no("judge_contradicts_design")
    return PairDecision(best["id"], worst["id"], True, None, None, bs, ws, judged.ranking, basis, judged.reason)


def _judged_pair(candidates: list[dict[str, Any]], pairwise: list[dict[str, Any]], min_margin: float
                 ) -> PairDecision:
    ranked = rank_candidates(candidates, pairwise)
    if not ranked and pairwise:
        return _pairwise_only(candidates, pairwise)
    ranking = [c["id"] for c in ranked]
    if len(ranked) < 2:
        c = ranked[0] if ranked else None
        return PairDecision(c["id"] if c else None, None, False, "too_few_candidates", None,
                            candidate_score(c) if c else None, None, ranking)
    best, worst = ranked[0], ranked[-1]
    bs, ws = candidate_score(best), candidate_score(worst)
    margin = round(bs - ws, 6)

    def decide(kept: bool, reason: str | None) -> PairDecision:
        return PairDecision(best["id"], worst["id"], kept, reason, margin, bs, ws, ranking)

    if margin <= EPS:
        return decide(False, "all_tied")
    if margin + EPS < min_margin:
        return decide(False, "margin_below_min")
    if best["output"].strip() == worst["output"].strip():
        return decide(False, "identical_outputs")
    pw = pairwise_between(pairwise, best["id"], worst["id"])
    if pw is not None and pw != "win":
        return decide(False, {"loss": "pairwise_contradicts", "tie": "pairwise_tie",
                              "disagree": "pairwise_disagree"}.get(pw, "pairwise_unparsed"))
    return decide(True, None)


def _pairwise_only(candidates: list[dict[str, Any]], pairwise: list[dict[str, Any]]) -> PairDecision:
    by_id = {c["id"]: c for c in candidates if (c.get("output") or "").strip()}
    wins = agreed_wins(pairwise)
    ids = sorted((i for i in wins if i in by_id), key=lambda i: (-wins[i], i))
    if len(ids) < 2:
        return PairDecision(ids[0] if ids else None, None, False, "too_few_candidates", None, ranking=ids)
    best, worst = ids[0], ids[-1]
    margin = float(wins[best] - wins[worst])
    pw = pairwise_between(pairwise, best, worst)
    if pw == "win" and by_id[best]["output"].strip() != by_id[worst]["output"].strip():
        return PairDecision(best, worst, True, None, margin, ranking=ids)
    reason = "identical_outputs" if pw == "win" else {
        None: "not_compared", "loss": "pairwise_contradicts", "tie": "pairwise_tie",
        "disagree": "pairwise_disagree"}.get(pw, "pairwise_unparsed")
    return PairDecision(best, worst, False, reason, margin, ranking=ids)


def position_bias_rate(pairwise: Iterable[dict[str, Any]]) -> tuple[float | None, int]:
    """Share of comparisons (both orders parsed) where the judge picked the same position
    both times, and how many such comparisons there were."""
    n = biased = 0
    for p in pairwise:
        if p.get("result") == "unparsed":
            continue
        n += 1
        biased += bool(p.get("position_bias"))
    return (biased / n if n else None), n
