"""Win / tie / loss of a tuned model against its base, and what they allow one to say.

Each held-out prompt is judged twice, the two answers swapped between positions A and B. The
prompt counts as a **win** (or **loss**) for the tuned model only when both orders prefer the
same answer; a tie in both orders, or two orders that disagree (the judge followed the position,
not the answer), count as a **tie**; an answer the parser could not read in either order makes
the prompt **unparsed** (left out of every rate).

The 95% interval is the Wilson score interval of the win rate among the *decided* prompts
(wins / (wins + losses)); ties carry no preference and are left out of that rate. The verdict
says the tuned model is better when the whole interval lies above 50%, worse when it lies below,
and "no measurable difference" when it covers 50% (or when no prompt was decided).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from datakit.judge.pairs import combine_orders

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal
CI_METHOD = "Wilson score interval (95%) of wins / (wins + losses); ties and unparsed left out"


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def outcome(ab: str | None, ba: str | None) -> tuple[str, bool]:
    """The tuned model's outcome on one prompt, and whether the two orders agreed.

    ``ab`` is the verdict with the base answer shown as A and the tuned one as B; ``ba`` the
    verdict with the tuned answer as A. Verdicts are "A", "B", "tie" or None (unparsed)."""
    r = combine_orders(ab, ba)["result"]  # x = base, y = tuned
    return {"x": "loss", "y": "win", "tie": "tie", "disagree": "tie", "unparsed": "unparsed"}[r], r != "disagree"


def tally(judgements: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts, win rate, interval and verdict of judgements that carry an ``outcome``."""
    js = list(judgements)
    c = {k: sum(1 for j in js if j["outcome"] == k) for k in ("win", "tie", "loss", "unparsed")}
    decided = c["win"] + c["loss"]
    lo, hi = wilson(c["win"], decided)
    res = {"n_prompts": len(js), "wins": c["win"], "ties": c["tie"], "losses": c["loss"],
           "unparsed": c["unparsed"], "disagreed": sum(1 for j in js if not j.get("orders_agree", True)),
           "win_rate": round(c["win"] / decided, 4) if decided else 0.5,
           "ci95": [round(lo, 4), round(hi, 4)], "ci_method": CI_METHOD}
    res["verdict"] = verdict(res)
    return res


def verdict(t: dict[str, Any]) -> str:
    """One line for a person: better, worse, or no measurable difference."""
    n, w, l, ties = t["n_prompts"], t["wins"], t["losses"], t["ties"]
    lo, hi = t["ci95"]
    ci = f"95% CI of the win rate among decided prompts {lo:.0%}–{hi:.0%}"
    rest = f"{l} lost, {ties} tied" + (f", {t['unparsed']} unparsed" if t["unparsed"] else "")
    if n == 0:
        return "no held-out prompts to compare"
    if w + l == 0:
        return f"no measurable difference: no prompt of {n} decided ({rest})"
    if lo > 0.5:
        return f"tuned beats base on {w} of {n} held-out prompts ({rest}), {ci}"
    if hi < 0.5:
        return f"tuned is worse than base: loses on {l} of {n} held-out prompts ({w} won, {ties} tied), {ci}"
    return f"no measurable difference: tuned wins {w} of {n} held-out prompts ({rest}), {ci} covers 50%"
