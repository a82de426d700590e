"""datakit/curate/clusters.py on hand-made graphs: which documents go, and to whom."""

import numpy as np

from datakit.curate import minhash as mh
from datakit.curate.clusters import resolve


def _sim(table):
    def similarity(u, v):
        return np.array([table.get((min(a, b), max(a, b)), 0.0) for a, b in zip(u.tolist(), v.tolist())])
    return similarity


def _one_bucket(n):
    keys = np.zeros(n, dtype=np.uint64)  # every document shares band 0's key: all pairs are candidates
    return lambda j: keys


def test_chain_keeps_what_is_near_nothing_kept():
    # 0-1-2-3-4 a chain (each 0.8 to the next, 0.5 two apart, less further), 5 alone
    table = {(i, i + 1): 0.8 for i in range(4)} | {(i, i + 2): 0.5 for i in range(3)}
    n = 6
    label = mh.components(n, np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4]))
    m, r, s, clusters = resolve(label, np.full(n, np.nan), 0.7, _sim(table), _one_bucket(n), 1)
    # round 1: 0 represents the chain, only 1 is near it; 2, 3, 4 are resolved greedily: 2 kept, takes 3; 4 kept
    assert dict(zip(m.tolist(), r.tolist())) == {1: 0, 3: 2}
    assert s.tolist() == [0.8, 0.8] and clusters == 2


def test_scores_pick_representatives_in_both_steps():
    table = {(0, 1): 0.9, (1, 2): 0.9, (0, 2): 0.6, (2, 3): 0.9, (1, 3): 0.6, (0, 3): 0.1}
    n = 4
    label = mh.components(n, np.array([0, 1, 2]), np.array([1, 2, 3]))
    scores = np.array([np.nan, 5.0, np.nan, 7.0])
    m, r, s, _ = resolve(label, scores, 0.7, _sim(table), _one_bucket(n), 1)
    # 3 (score 7) represents: 2 is near it; 0 and 1 are far: 1 (score 5) kept, takes 0
    assert dict(zip(m.tolist(), r.tolist())) == {0: 1, 2: 3}


def test_nothing_to_remove():
    n = 3
    m, r, s, clusters = resolve(np.arange(n), np.full(n, np.nan), 0.7, _sim({}), _one_bucket(n), 1)
    assert len(m) == len(r) == len(s) == 0 and clusters == 0
