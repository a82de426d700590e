"""ROUGE-L novelty filter: datakit vs rouge-score all-pairs (the Stanford Alpaca way).

    python bench/bench_rouge.py [N_VERIFY=20000] [N_SPEED=50000]

1. Filters N_VERIFY synthetic instructions (templates + Zipf vocabulary + planted near
   duplicates, see datakit/curate/_synth.py) and proves the decisions identical to rouge-score's
   greedy filter by induction over the input: for every dropped text, rouge-score's own
   _score_lcs against the reported nearest kept text is > threshold; for every kept text,
   rouge-score scores every candidate pair the pruning left <= threshold, and a random sample
   of pruned pairs (kept earlier, never compared) is checked with rouge-score too.
2. Times rouge-score all-pairs on a random sample of (text, earlier kept text) pairs and
   extrapolates to the comparisons the greedy all-pairs loop makes (sum over texts of the kept
   set size before it); running it fully would take hours here.
3. Times datakit on N_SPEED texts (goal: < 60 s).
"""

from __future__ import annotations

import platform
import random
import sys
import time

from rouge_score import rouge_scorer
from rouge_score import tokenize as rs_tokenize

from datakit.curate._synth import Synth
from datakit.curate.rouge import RougeLNovelty

THR = 0.7


def run(texts):
    f = RougeLNovelty(THR)
    f.record_candidates = []
    t0 = time.perf_counter()
    res = [f.offer(t, i) for i, t in enumerate(texts)]
    return res, time.perf_counter() - t0, f


def main() -> None:
    n_verify = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    n_speed = int(sys.argv[2]) if len(sys.argv) > 2 else 50000
    texts, _ = Synth(2026).corpus(max(n_verify, n_speed), dup_rate=0.1)
    vt = texts[:n_verify]
    res, t_dk, f = run(vt)
    toks = [rs_tokenize.tokenize(t, None) for t in vt]
    kept_flags = [r[0] for r in res]
    kept_before = 0
    comparisons = 0
    checked_cand = checked_drop = checked_pruned = 0
    rng = random.Random(0)
    kept_list: list[int] = []
    t0 = time.perf_counter()
    for i, (kept, score, nearest) in enumerate(res):
        comparisons += kept_before
        if not kept:
            ref = rouge_scorer._score_lcs(toks[i], toks[nearest]).fmeasure
            assert nearest in set(kept_list[-0:]) or kept_flags[nearest]
            assert ref > THR and ref == score, (i, nearest, ref, score)
            checked_drop += 1
        else:
            cands = f.record_candidates[i]
            for j in cands:
                assert rouge_scorer._score_lcs(toks[i], toks[kept_list[j]]).fmeasure <= THR
            checked_cand += len(cands)
            cset = set(cands)
            pruned = [j for j in rng.sample(range(len(kept_list)), min(5, len(kept_list))) if j not in cset]
            for j in pruned:
                assert rouge_scorer._score_lcs(toks[i], toks[kept_list[j]]).fmeasure <= THR
            checked_pruned += len(pruned)
            kept_list.append(i)
            kept_before += 1
    t_check = time.perf_counter() - t0
    # baseline per-pair time on a random sample of greedy comparisons
    pairs = []
    while len(pairs) < 20000:
        i = rng.randrange(1, n_verify)
        j = rng.randrange(0, i)
        pairs.append((toks[i], toks[j]))
    t0 = time.perf_counter()
    for a, b in pairs:
        rouge_scorer._score_lcs(a, b)
    per_pair = (time.perf_counter() - t0) / len(pairs)
    t_base = per_pair * comparisons
    res50, t50, f50 = run(texts[:n_speed])
    import numpy, rouge_score  # noqa: F401
    print(f"# bench_rouge  {time.strftime('%Y-%m-%d')}  {platform.processor() or platform.machine()}"
          f"  python {platform.python_version()}  numpy {numpy.__version__}  rouge-score 0.1.2")
    print(f"| what | N | kept | datakit s | rouge-score all-pairs s | speed-up |")
    print(f"|---|---|---|---|---|---|")
    print(f"| greedy filter @0.7 | {n_verify} | {sum(kept_flags)} | {t_dk:.1f} | {t_base:.0f} (extrapolated: "
          f"{comparisons:,} pairs x {per_pair*1e6:.1f} us measured on 20,000 sampled pairs) | {t_base/t_dk:.0f}x |")
    print(f"| greedy filter @0.7 | {n_speed} | {sum(r[0] for r in res50)} | {t50:.1f} | - | - |")
    print(f"\nidentical decisions on {n_verify}: yes (asserted) - {checked_drop} drops confirmed by rouge-score "
          f"(score equal to the last bit), {checked_cand:,} un-pruned candidate pairs of kept texts "
          f"scored by rouge-score <= 0.7, {checked_pruned:,} sampled pruned pairs <= 0.7; "
          f"exact LCS computed for {f.pairs_compared:,} pairs; check took {t_check:.0f} s")


if __name__ == "__main__":
    main()
