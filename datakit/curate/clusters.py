"""From near-duplicate clusters to removals, without chains.

LSH + verification gives edges between pairs at or above the threshold; their connected
components chain: A ~ B and B ~ C put A and C in one cluster even when A and C are far apart,
and at millions of documents long chains remove documents that are near nothing kept. So a
cluster is not removed wholesale:

1. each cluster keeps its representative (highest judge score, else the earliest document); a
   member is removed when its own similarity to that representative reaches the threshold;
2. the members that do not (detached; ~14% of the members on the bench corpus) are resolved
   greedily among themselves: their candidate pairs (the same LSH bands and buckets as the
   first clustering) are verified, then in priority order (score, then earliest) each
   document not yet taken is kept and takes every verified neighbour not yet taken.

(Re-clustering the detached members round after round peels a long chain one representative
at a time: 33 rounds at 3M documents, hundreds at 10M. The greedy step is one pass.)

What it guarantees, whatever the corpus:

* every removed document is at or above the threshold to the kept document it names;
* no two kept documents form a verified candidate pair (near-duplicates left in the output are
  pairs the LSH bands never proposed, such as two members of a bucket of more than 64
  documents, which are linked only through its first member).

Both engines and both paths (in memory and streamed) call :func:`resolve`, with their own
``similarity`` (exact Jaccard or the signature estimate) and ``column`` (one band's keys for
every document: an array slice in memory, a file on disk when streamed).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from datakit.curate import minhash as mh

Similarity = Callable[[np.ndarray, np.ndarray], np.ndarray]
Column = Callable[[int], np.ndarray]


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
            column: Column, bands: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Removals from cluster labels (``label[i]`` = the root of i's component).

    ``similarity(u, v)``: similarity of document pairs (global indices); ``column(j)``: band
    ``j``'s key of every document. Returns (removed, their representative, similarity to it,
    clusters), sorted by the removed index; ``clusters`` counts the kept documents that have
    at least one removal."""
    members, rep = representatives(label, scores)
    sim = similarity(members, rep)
    near = sim >= threshold
    parts = [(members[near], rep[near], sim[near])]
    far = np.sort(members[~near])
    if len(far) > 1:
        parts.append(greedy(far, scores, threshold, similarity, column, bands))
    m, r, s = (np.concatenate(x) for x in zip(*parts))
    order = np.argsort(m, kind="stable")
    return m[order], r[order], s[order], len(mh.unique_sorted(r))


def band_candidates(column: Column, bands: int, n: int, keep: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None):
    """Per band ``j``: ``(j, u, v)``, the candidate pairs of :func:`minhash.band_pairs` on
    ``column(j)`` (``n`` documents) that ``keep`` (a boolean mask over the pairs; all when None)
    lets through and that were not already candidates in an earlier band (same key there, and
    not left out of a big bucket's star). So each candidate pair comes out once, in the first band
    that proposes it, with one band's keys and pairs in memory (earlier bands' keys are asked of
    ``column`` again)."""
    roles: list[np.ndarray] = []  # each band's bucket roles (see band_pairs), 1 byte per document
    for j in range(bands):
        roles.append(np.zeros(n, dtype=np.uint8))
        u, v = mh.band_pairs(column(j), roles=roles[j])
        if keep is not None and len(u):
            ok = keep(u, v)
            u, v = u[ok], v[ok]
        for e in range(j):
            if not len(u):
                break
            col = column(e)
            seen = (col[u] == col[v]) & (roles[e][u] != 3)
            u, v = u[~seen], v[~seen]
        yield j, u, v


def verified_edges(idx: np.ndarray, column: Column, bands: int, similarity: Similarity, threshold: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of ``idx`` (as positions in it) that share a key in some band and reach the
    threshold, with their similarity (:func:`band_candidates`: each pair checked once)."""
    cols = [column(j)[idx] for j in range(bands)]  # the subset's keys: small, read once
    us, vs, ss = [], [], []
    for _, u, v in band_candidates(cols.__getitem__, bands, len(idx)):
        if not len(u):
            continue
        s = similarity(idx[u], idx[v])
        ok = s >= threshold
        us.append(u[ok])
        vs.append(v[ok])
        ss.append(s[ok])
    if not us:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0)
    return np.concatenate(us), np.concatenate(vs), np.concatenate(ss)


def greedy(idx: np.ndarray, scores: np.ndarray, threshold: float, similarity: Similarity,
           column: Column, bands: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy resolution of the documents ``idx`` (sorted): in priority order (highest score,
    NaN lowest, then earliest) a document not yet taken is kept and takes each verified
    neighbour not yet taken. Returns (removed, the kept document that took each, similarity)."""
    n = len(idx)
    u, v, s = verified_edges(idx, column, bands, similarity, threshold)
    a, b, w = np.concatenate([u, v]), np.concatenate([v, u]), np.concatenate([s, s])
    o = np.argsort(a, kind="stable")
    a, b, w = a[o], b[o], w[o]
    start = np.searchsorted(a, np.arange(n + 1))
    pr = scores[idx]
    pr = np.where(np.isnan(pr), -np.inf, pr)
    owner = np.full(n, -1, dtype=np.int64)
    took = np.zeros(n)
    has_edges = start[1:] > start[:-1]
    for d in np.lexsort((idx, -pr)).tolist():
        if owner[d] >= 0:
            continue
        owner[d] = d
        if not has_edges[d]:
            continue
        nb, ws = b[start[d]:start[d + 1]], w[start[d]:start[d + 1]]
        free = owner[nb] < 0
        owner[nb[free]] = d
        took[nb[free]] = ws[free]
    gone = np.flatnonzero(owner != np.arange(n))
    return idx[gone], idx[owner[gone]], took[gone]
