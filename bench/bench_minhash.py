"""MinHash/LSH dedup: datakit vs datasketch, 1M-document dedup, planted-duplicate quality, Ray.

    python bench/bench_minhash.py [N_BIG=1000000] [--ray]

* throughput: signatures per second, one process, same num_perm (128) and shingles (word
  3-grams of the normalised text). datasketch gets its shingles pre-computed (bytes) and the
  permutations built once (MinHash(permutations=...)), which favours it; datakit's time
  includes normalisation and shingling from raw text.
* end to end: datakit dedup (signatures, banding, buckets, verification, clusters) of N_BIG
  short synthetic documents, one process.
* quality: 20,000 documents with planted near duplicates (0-6 word edits: substitutions,
  insertions, deletions, swaps); ground truth = exact Jaccard of the shingle sets over every
  pair inside a planted family plus every pair datakit reported; precision and recall of the
  reported pairs at threshold 0.7.
* --ray: the Ray engine on local Ray (2 CPUs) vs the local engine on the same 50,000 docs.
"""

from __future__ import annotations

import itertools
import platform
import sys
import time

import numpy as np
from datasketch import MinHash

from datakit.curate import minhash as mh
from datakit.curate._synth import Synth
from datakit.curate.dedup import clusters_from_keys, dedup_rows


def shingles(text, n=3):
    w = mh._WORDS.findall(mh.normalize(text))
    return {" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


def main() -> None:
    n_big = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1_000_000
    cfg = mh.MinHashConfig(num_perm=128, threshold=0.7)
    print(f"# bench_minhash  {time.strftime('%Y-%m-%d')}  {platform.machine()}  python "
          f"{platform.python_version()}  numpy {np.__version__}  datasketch 2.0.0")
    # ---- throughput
    texts, _ = Synth(1).corpus(20000)
    sh = [[s.encode() for s in shingles(t)] for t in texts[:5000]]
    proto = MinHash(num_perm=128)
    perms, scheme = proto.permutations, proto.scheme
    t0 = time.perf_counter()
    for s in sh:
        m = MinHash(num_perm=128, permutations=perms, scheme=scheme)
        m.update_batch(s)
    ds_rate = len(sh) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    mh.signatures(texts, cfg)
    dk_rate = len(texts) / (time.perf_counter() - t0)
    print("| signatures, 1 process | docs/s | vs datasketch |\n|---|---|---|")
    print(f"| datasketch MinHash.update_batch (pre-shingled) | {ds_rate:,.0f} | 1x |")
    print(f"| datakit signatures (from raw text) | {dk_rate:,.0f} | {dk_rate/ds_rate:.0f}x |")
    # ---- quality
    s = Synth(7)
    texts, src = s.corpus(20000, dup_rate=0.3, max_edits=6)
    sig = mh.signatures(texts, cfg)
    keys = mh.band_keys(sig, *cfg.band_rows())
    labels, u, v, j = clusters_from_keys(keys, sig, cfg.threshold)
    found = set(zip(u.tolist(), v.tolist()))
    root = list(range(len(texts)))
    for i, p in enumerate(src):
        if p >= 0:
            root[i] = root[p]
    fam: dict[int, list[int]] = {}
    for i, r in enumerate(root):
        fam.setdefault(r, []).append(i)
    S = [shingles(t) for t in texts]
    jac = lambda a, b: len(S[a] & S[b]) / len(S[a] | S[b])
    universe = set(found)
    for members in fam.values():
        universe.update(itertools.combinations(members, 2))
    truth = {p for p in universe if jac(*p) >= 0.7}
    tp = len(truth & found)
    prec, rec = tp / max(1, len(found)), tp / max(1, len(truth))
    f1 = 2 * prec * rec / (prec + rec)
    print(f"\n| quality @0.7, 20,000 docs, planted edits 0-6 | pairs true | reported | precision | recall | F1 |")
    print(f"|---|---|---|---|---|---|\n| word 3-gram, 128 perm, bands x rows {cfg.band_rows()} | {len(truth)} | "
          f"{len(found)} | {prec:.3f} | {rec:.3f} | {f1:.3f} |")
    # ---- 1M end to end
    big, _ = Synth(3).corpus(n_big, dup_rate=0.1)
    rows = [{"id": i, "instruction": t} for i, t in enumerate(big)]
    t0 = time.perf_counter()
    res = dedup_rows(rows, cfg=cfg)
    dt = time.perf_counter() - t0
    print(f"\n| end to end dedup | docs | clusters | removed | seconds | docs/s |\n|---|---|---|---|---|---|")
    print(f"| local engine, 1 process | {n_big:,} | {res.clusters:,} | {len(res.removed):,} | {dt:.1f} | {n_big/dt:,.0f} |")
    if "--ray" in sys.argv:
        rows = rows[:50000]
        t0 = time.perf_counter()
        loc = dedup_rows(rows, cfg=cfg)
        tl = time.perf_counter() - t0
        from datakit.curate.ray_engine import ensure_ray

        ensure_ray()
        t0 = time.perf_counter()
        ray_res = dedup_rows(rows, cfg=cfg, engine="ray")
        tr = time.perf_counter() - t0
        same = [(r.index, r.duplicate_of) for r in loc.removed] == [(r.index, r.duplicate_of) for r in ray_res.removed]
        assert same
        print(f"| local engine | 50,000 | {loc.clusters:,} | {len(loc.removed):,} | {tl:.1f} | {50000/tl:,.0f} |")
        print(f"| ray engine, local Ray 2 CPUs (Ray start-up excluded) | 50,000 | {ray_res.clusters:,} | "
              f"{len(ray_res.removed):,} | {tr:.1f} | {50000/tr:,.0f} |")
        print(f"\nray vs local: identical clusters and removals: {same}")


if __name__ == "__main__":
    main()
