"""From near-duplicate clusters to removals, without chains.

LSH + verification gives edges between pairs at or above the threshold; their connected
components chain: A ~ B and B ~ C put A and C in one cluster even when A and C are far apart,
and at millions of documents long chains remove documents that are near nothing kept. So a
cluster is not removed wholesale. Each cluster keeps its representative (highest judge score,
else the earliest document); a member is removed only when its own similarity to that
representative reaches the threshold. The members that do not (detached) are clustered again
among themselves, with the same candidate search, and the step repeats until nothing is
detached. Every round keeps at least one representative, so it ends.

What it guarantees, whatever the corpus:

* every removed document is at or above the threshold to the kept document it names;
* no two kept documents form a verified candidate pair (the only near-duplicates left in the
  output are pairs the LSH bands never proposed).

Both engines and both paths (in memory and streamed) call :func:`resolve`, with their own
``similarity`` (exact Jaccard or the signature estimate) and ``recluster`` (components of a
subset of the documents, found the same way as the first clustering).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from datakit.curate import minhash as mh

Similarity = Callable[[np.ndarray, np.ndarray], np.ndarray]
Recluster = Callable[[np.ndarray], np.ndarray]


def representatives(label: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(members, their representative) for every cluster of more than one document, in the
    positions of ``label``: the representative is the member with the highest score (NaN = none),
    earliest on ties."""
    n = len(label)
    moved = np.flatnonzero(label != np.arange(n))
    roots = mh.unique_sorted(label[moved])
    members = np.concatenate([roots, moved])
    cl = label[members]
    s = np.where(np.isnan(scores[members]), -np.inf, scores[members])
    order = np.lexsort((members, -s, cl))
    members, cl = members[order], cl[order]
    first = np.ones(len(cl), dtype=bool)
    first[1:] = cl[1:] != cl[:-1]
    rep = members[first][np.cumsum(first) - 1]
    keep = members != rep
    return members[keep], rep[keep]


def resolve(label: np.ndarray, scores: np.ndarray, threshold: float, similarity: Similarity,
            recluster: Recluster) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Removals from cluster labels (``label[i]`` = the root of i's component).

    ``similarity(u, v)``: similarity of document pairs (global indices). ``recluster(idx)``:
    component labels of the documents ``idx`` among themselves, as positions in ``idx``.
    Returns (removed, their representative, similarity to it, clusters, rounds), sorted by the
    removed index; ``clusters`` counts the kept documents that have at least one removal."""
    members, rep = representatives(label, scores)
    out_m, out_r, out_s = [], [], []
    rounds = 0
    while len(members):
        rounds += 1
        sim = similarity(members, rep)
        near = sim >= threshold
        out_m.append(members[near])
        out_r.append(rep[near])
        out_s.append(sim[near])
        far = np.sort(members[~near])
        if len(far) < 2:
            break
        m, r = representatives(recluster(far), scores[far])
        members, rep = far[m], far[r]
    if not out_m:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0), 0, 0
    m, r, s = np.concatenate(out_m), np.concatenate(out_r), np.concatenate(out_s)
    order = np.argsort(m, kind="stable")
    return m[order], r[order], s[order], len(mh.unique_sorted(r)), rounds
