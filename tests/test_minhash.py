"""MinHash/LSH against datasketch (the reference) and exact Jaccard ground truth."""

import numpy as np
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from datakit.curate import minhash as mh
from datakit.curate._synth import Synth


def _shingles(text, n=3):
    w = mh._WORDS.findall(mh.normalize(text))
    return {" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


def test_bands_and_rows_match_datasketch():
    for thr in (0.5, 0.7, 0.85):
        for p in (64, 128):
            assert mh.optimal_bands(thr, p) == _optimal_param(thr, p, 0.5, 0.5)


def test_estimated_jaccard_agrees_with_datasketch_and_truth():
    s = Synth(11)
    texts, src = s.corpus(600, dup_rate=0.5, max_edits=4)
    cfg = mh.MinHashConfig(num_perm=128)
    sig = mh.signatures(texts, cfg)
    mine, ds, truth = [], [], []
    for i, j in enumerate(src):
        if j < 0:
            continue
        a, b = _shingles(texts[i]), _shingles(texts[j])
        truth.append(len(a & b) / len(a | b))
        mine.append((sig[i] == sig[j]).mean())
        m1, m2 = MinHash(num_perm=128), MinHash(num_perm=128)
        m1.update_batch([x.encode() for x in a])
        m2.update_batch([x.encode() for x in b])
        ds.append(m1.jaccard(m2))
    mine, ds, truth = map(np.array, (mine, ds, truth))
    assert len(truth) > 200
    # unbiased, and the same spread as datasketch (sd of a 128-perm estimate is <= 0.045)
    assert abs((mine - truth).mean()) < 0.01
    assert (mine - truth).std() < 0.05
    assert abs((mine - truth).std() - (ds - truth).std()) < 0.015


def test_normalisation_and_determinism():
    cfg = mh.MinHashConfig()
    a = mh.signatures(["Ｗrite  a POEM\tabout cats", "write a poem about cats", ""], cfg)
    assert (a[0] == a[1]).all()
    assert (a == mh.signatures(["write a poem about cats"] * 2 + [""], cfg)).all()
    c = mh.signatures(["写一首关于猫的诗"], mh.MinHashConfig(shingle="char", ngram=2))
    assert c.shape == (1, 128)


def test_planted_duplicates_recall_and_precision():
    texts, src = Synth(12).corpus(3000, dup_rate=0.2, max_edits=2)
    cfg = mh.MinHashConfig(threshold=0.7)
    sig = mh.signatures(texts, cfg)
    keys = mh.band_keys(sig, *cfg.band_rows())
    u, v = mh.bucket_pairs(keys)
    found = {(a, b) for a, b, j in zip(u.tolist(), v.tolist(), mh.estimated_jaccard(sig, u, v)) if j >= 0.7}
    sh = [_shingles(t) for t in texts]
    planted = [(min(i, j), max(i, j)) for i, j in enumerate(src) if j >= 0]
    true_pairs = {p for p in planted if len(sh[p[0]] & sh[p[1]]) / len(sh[p[0]] | sh[p[1]]) >= 0.7}
    recall = len(true_pairs & found) / len(true_pairs)
    assert recall >= 0.9
    # every reported pair really is close (allowing the estimate's noise)
    close = [len(sh[a] & sh[b]) / len(sh[a] | sh[b]) for a, b in found]
    assert np.mean(np.array(close) >= 0.55) > 0.98


def test_components_union_find():
    lab = mh.components(6, np.array([4, 1, 2]), np.array([5, 2, 3]))
    assert lab.tolist() == [0, 1, 1, 1, 4, 4]
