"""Small numeric summaries shared by the sections: a histogram with its summary numbers."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def histogram(values: Sequence[float], bins: int | Sequence[float] = 20,
              integer: bool = False) -> dict[str, Any]:
    """{n, mean, median, p90, min, max, edges, counts} of ``values`` ({"n": 0} when empty).

    ``integer``: one bin per integer value when the range is small (scores 1..10)."""
    if len(values) == 0:
        return {"n": 0}
    a = np.asarray(values, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if integer and isinstance(bins, int):
        lo_i, hi_i = int(np.floor(lo)), int(np.ceil(hi))
        step = max(1, int(np.ceil((hi_i - lo_i + 1) / bins)))
        edges = np.arange(lo_i, hi_i + step + 1, step) - 0.5
    elif isinstance(bins, int):
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
    counts, edges = np.histogram(np.clip(a, edges[0], edges[-1]), bins=edges)
    return {"n": int(a.size), "mean": round(float(a.mean()), 4), "median": round(float(np.median(a)), 4),
            "p90": round(float(np.percentile(a, 90)), 4), "min": round(lo, 4), "max": round(hi, 4),
            "edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}


def share(counter: dict[str, int]) -> dict[str, dict[str, float]]:
    """{key: {"n", "share"}} sorted by count, high to low."""
    total = sum(counter.values())
    return {k: {"n": v, "share": round(v / total, 4) if total else 0.0}
            for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))}
