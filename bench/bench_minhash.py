"""MinHash/LSH dedup: datakit vs datasketch, planted-duplicate quality, 1M-document dedup, Ray.

    python bench/bench_minhash.py [N_BIG=1000000] [--ray]

* throughput: MinHash signatures per second, one process, num_perm 128, the same 20,000
  synthetic documents and the same shingles (word 3-grams of the normalised text, as strings)
  for everybody; median of 3 runs each.
  - datasketch, the usual way: ``m = MinHash(num_perm=128)`` per document, then
    ``m.update(s.encode("utf8"))`` per shingle;
  - datasketch ``update_batch``: permutations built once (``MinHash(num_perm=128,
    permutations=...)``) and the shingles already encoded to bytes (both favour datasketch);
  - datakit from raw text: ``minhash.signatures(texts)``, normalisation, tokenising, shingling
    and hashing included;
  - datakit from the same pre-made shingle strings: ``minhash.signatures_from_shingles``.
  datakit keeps no cache between calls (its word and shingle hashes are computed in numpy per
  batch), so repeated runs do not favour it.
* quality: 20,000 documents with planted near duplicates (0-6 word edits). Ground truth: the
  exact Jaccard (Python sets of shingle strings, independent of datakit's hashing) of *every*
  pair at or above 0.7, found exhaustively with prefix filtering (two sets with Jaccard >= t
  share a shingle among the first |A| - ceil(t|A|) + 1 of each, rarest first), and cross-checked
  against all pairs inside planted families, all reported pairs and 200,000 random pairs.
  Reported pairs = the verified LSH edges. datakit default (exact verification, 20 x 6 bands)
  and ``verify=False`` (signature estimate, 14 x 9 bands) are both measured, each with three
  permutation seeds (the estimate's errors are strongly correlated across near-identical
  copies, so one seed can look much better or worse than another).
* end to end: ``dedup_rows`` (signatures, banding, buckets, verification, clusters) of N_BIG
  synthetic documents, one process, with and without exact verification.
* --ray: the Ray engine on local Ray (2 CPUs) vs the local engine on the same 50,000 docs.
"""

from __future__ import annotations

import itertools
import math
import platform
import random
import statistics
import sys
import time

import datasketch
import numpy as np
from datasketch import MinHash

from datakit.curate import minhash as mh
from datakit.curate._synth import Synth
from datakit.curate.dedup import clusters_from_keys, dedup_rows

THRESHOLD = 0.7


def shingles(text: str, n: int = 3) -> set[str]:
    w = mh._WORDS.findall(mh.normalize(text))
    return {" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


def median_rate(fn, n_docs: int, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_docs / statistics.median(times)


def throughput() -> None:
    texts, _ = Synth(1).corpus(20000)
    sh = [sorted(shingles(t)) for t in texts]
    sh_bytes = [[s.encode("utf8") for s in doc] for doc in sh]
    cfg = mh.MinHashConfig(num_perm=128, threshold=THRESHOLD)
    n = len(texts)

    def ds_usual():
        for doc in sh:
            m = MinHash(num_perm=128)
            for s in doc:
                m.update(s.encode("utf8"))

    proto = MinHash(num_perm=128)
    perms, scheme = proto.permutations, proto.scheme

    def ds_batch():
        for doc in sh_bytes:
            m = MinHash(num_perm=128, permutations=perms, scheme=scheme)
            m.update_batch(doc)

    rates = {
        "usual": median_rate(ds_usual, n),
        "batch": median_rate(ds_batch, n),
        "raw": median_rate(lambda: mh.signatures(texts, cfg), n),
        "pre": median_rate(lambda: mh.signatures_from_shingles(sh, cfg), n),
    }
    # sanity: the estimates agree with datasketch's on planted pairs (see tests for the bound)
    print(f"shingles per document: {sum(map(len, sh)) / n:.1f}")
    print("\n| signatures, 1 process, 20,000 docs, 128 perm | docs/s | vs datasketch usual "
          "| vs datasketch update_batch |\n|---|---:|---:|---:|")
    rows = [("datasketch `MinHash(num_perm=128)` + `update(s.encode())` per shingle", "usual"),
            ("datasketch `update_batch` (bytes ready, permutations built once)", "batch"),
            ("datakit `signatures` from raw text (normalise + tokenise + shingle + hash)", "raw"),
            ("datakit `signatures_from_shingles` (same shingle strings)", "pre")]
    for label, k in rows:
        print(f"| {label} | {rates[k]:,.0f} | {rates[k] / rates['usual']:.1f}x | "
              f"{rates[k] / rates['batch']:.1f}x |")


def exhaustive_truth(S: list[set[str]], t: float) -> dict[tuple[int, int], float]:
    """Every pair with exact Jaccard >= t, by prefix filtering (complete, no sampling)."""
    freq: dict[str, int] = {}
    for s in S:
        for x in s:
            freq[x] = freq.get(x, 0) + 1
    index: dict[str, list[int]] = {}
    cands: set[tuple[int, int]] = set()
    for i, s in enumerate(S):
        order = sorted(s, key=lambda x: (freq[x], x))
        p = len(order) - math.ceil(t * len(order) - 1e-9) + 1
        for x in order[:p]:
            lst = index.setdefault(x, [])
            for j in lst:
                cands.add((j, i))
            lst.append(i)
    out = {}
    for a, b in cands:
        j = len(S[a] & S[b]) / len(S[a] | S[b])
        if j >= t:
            out[(a, b)] = j
    return out


def quality() -> None:
    texts, src = Synth(7).corpus(20000, dup_rate=0.3, max_edits=6)
    n = len(texts)
    S = [shingles(t) for t in texts]
    jac = lambda a, b: len(S[a] & S[b]) / len(S[a] | S[b])  # noqa: E731
    t0 = time.perf_counter()
    truth = exhaustive_truth(S, THRESHOLD)
    t_truth = time.perf_counter() - t0
    # cross-checks: planted families, a random sample of pairs
    root = list(range(n))
    for i, p in enumerate(src):
        if p >= 0:
            root[i] = root[p]
    fam: dict[int, list[int]] = {}
    for i, r in enumerate(root):
        fam.setdefault(r, []).append(i)
    fam_pairs = {p for m in fam.values() for p in itertools.combinations(m, 2)}
    rng = random.Random(5)
    sample = set()
    while len(sample) < 200_000:
        a, b = rng.randrange(n), rng.randrange(n)
        if a != b:
            sample.add((min(a, b), max(a, b)))
    fam_true = {p for p in fam_pairs if jac(*p) >= THRESHOLD}
    sample_true = {p for p in sample if jac(*p) >= THRESHOLD}
    assert fam_true <= truth.keys() and sample_true <= truth.keys()
    print(f"\nground truth: {len(truth):,} pairs with exact Jaccard >= {THRESHOLD} among "
          f"{n * (n - 1) // 2:,} (prefix filtering, {t_truth:.1f} s); {len(fam_true):,} of them "
          f"inside planted families ({len(fam_pairs):,} family pairs), "
          f"{len(truth) - len(fam_true):,} outside; random sample: {len(sample_true)} true of "
          f"{len(sample):,}, all in the exhaustive set")
    print(f"\n| quality @{THRESHOLD}, 20,000 docs, word 3-grams, 128 perm | true pairs | candidates "
          "| reported | precision | recall | F1 | verify s |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for verify, seed in itertools.product((True, False), (1, 2, 3)):
        cfg = mh.MinHashConfig(num_perm=128, threshold=THRESHOLD, verify=verify, seed=seed)
        b, r = cfg.band_rows()
        sig = mh.signatures(texts, cfg)
        keys = mh.band_keys(sig, b, r)
        cand_u, _ = mh.bucket_pairs(keys)
        t0 = time.perf_counter()
        _, u, v, _ = clusters_from_keys(keys, sig, cfg, texts)
        dt = time.perf_counter() - t0
        found = set(zip(u.tolist(), v.tolist()))
        tp = len(found & truth.keys())
        prec, rec = tp / max(1, len(found)), tp / max(1, len(truth))
        f1 = 2 * prec * rec / max(1e-12, prec + rec)
        how = "exact Jaccard (default)" if verify else "signature estimate"
        print(f"| {b} x {r}, {how}, seed {seed} | {len(truth):,} | {len(cand_u):,} | "
              f"{len(found):,} | {prec:.4f} | {rec:.4f} | {f1:.4f} | {dt:.2f} |")


def end_to_end(n_big: int, ray: bool) -> None:
    big, _ = Synth(3).corpus(n_big, dup_rate=0.1)
    rows = [{"id": i, "instruction": t} for i, t in enumerate(big)]
    print("\n| end to end dedup | docs | clusters | removed | seconds | docs/s |\n|---|---:|---:|---:|---:|---:|")
    for verify in (True, False):
        cfg = mh.MinHashConfig(num_perm=128, threshold=THRESHOLD, verify=verify)
        t0 = time.perf_counter()
        res = dedup_rows(rows, cfg=cfg)
        dt = time.perf_counter() - t0
        how = "exact verification (default)" if verify else "estimate only"
        print(f"| local engine, 1 process, {how} | {n_big:,} | {res.clusters:,} | "
              f"{len(res.removed):,} | {dt:.1f} | {n_big / dt:,.0f} |")
    if ray:
        cfg = mh.MinHashConfig(num_perm=128, threshold=THRESHOLD)
        rows = rows[:50000]
        t0 = time.perf_counter()
        loc = dedup_rows(rows, cfg=cfg)
        tl = time.perf_counter() - t0
        from datakit.curate.ray_engine import ensure_ray

        ensure_ray()
        t0 = time.perf_counter()
        ray_res = dedup_rows(rows, cfg=cfg, engine="ray")
        tr = time.perf_counter() - t0
        key = lambda res: [(r.index, r.duplicate_of, r.score) for r in res.removed]  # noqa: E731
        same = key(loc) == key(ray_res)
        assert same
        print(f"| local engine | 50,000 | {loc.clusters:,} | {len(loc.removed):,} | {tl:.1f} | {50000 / tl:,.0f} |")
        print(f"| ray engine, local Ray 2 CPUs (Ray start-up excluded) | 50,000 | {ray_res.clusters:,} | "
              f"{len(ray_res.removed):,} | {tr:.1f} | {50000 / tr:,.0f} |")
        print(f"\nray vs local: identical clusters and removals: {same}")


def main() -> None:
    n_big = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1_000_000
    print(f"# bench_minhash  {time.strftime('%Y-%m-%d')}  {platform.machine()}  python "
          f"{platform.python_version()}  numpy {np.__version__}  datasketch {datasketch.__version__}")
    throughput()
    quality()
    end_to_end(n_big, "--ray" in sys.argv)


if __name__ == "__main__":
    main()
