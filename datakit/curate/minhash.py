"""MinHash signatures and LSH banding, vectorised in numpy.

Pipeline: normalise (NFKC, casefold, whitespace) -> shingles (word or character n-grams) ->
64-bit shingle hashes -> ``num_perm`` min-wise hashes per document -> ``bands`` band keys ->
documents sharing a band key are candidates -> candidates whose estimated Jaccard (share of
equal signature values) reaches the threshold are linked -> clusters are the connected
components (union-find by min-label propagation), represented by their earliest member.

Every step is a numpy operation over a batch of documents; there is no Python loop per
shingle or per permutation. Word hashes come from BLAKE2b (cached per process), so signatures
are the same in every process and on every machine (the Ray engine relies on this).

Permutations are the multiply-add-shift family ``h_i(x) = (a_i * x + b_i mod 2^64) >> 32``
with odd 64-bit ``a_i`` (Dietzfelbinger's universal hashing), cheaper than datasketch's
``(a x + b) mod (2^61 - 1)`` and with the same collision behaviour for MinHash purposes; the
estimated Jaccard therefore agrees with datasketch statistically, not bit for bit.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from datakit.curate.rouge import _CJK_RANGES

_WS = re.compile(r"\s+")
_WORDS = re.compile(f"[{_CJK_RANGES}]|[^\\W_{_CJK_RANGES}]+|[^\\w\\s]")
_U64 = np.uint64
_MIX1, _MIX2 = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)
_NGRAM_MULS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                        0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53,
                        0x87C37B91114253D5, 0x4CF5AD432745937F], dtype=np.uint64)
_EMPTY_HASH = _U64(0x5BD1E9955BD1E995)


@dataclass(frozen=True)
class MinHashConfig:
    num_perm: int = 128
    threshold: float = 0.7
    shingle: str = "word"  # "word" or "char"
    ngram: int | None = None  # default: 3 for words, 5 for characters
    seed: int = 1
    bands: int | None = None  # default: chosen from the threshold (see optimal_bands)
    rows: int | None = None

    @property
    def n(self) -> int:
        if self.ngram is not None:
            return self.ngram
        return 3 if self.shingle == "word" else 5

    def validate(self) -> None:
        from datakit.errors import UserError

        if self.shingle not in ("word", "char"):
            raise UserError(f"--shingle must be 'word' or 'char', not {self.shingle!r}")
        if not 1 <= self.n <= len(_NGRAM_MULS):
            raise UserError(f"--ngram must be between 1 and {len(_NGRAM_MULS)}")
        if not 2 <= self.num_perm <= 1024:
            raise UserError("--num-perm must be between 2 and 1024")
        if not 0.0 < self.threshold <= 1.0:
            raise UserError("--threshold must be in (0, 1]")
        b, r = self.band_rows()
        if b * r > self.num_perm or b < 1 or r < 1:
            raise UserError(f"bands x rows ({b} x {r}) must fit in --num-perm {self.num_perm}")

    def band_rows(self) -> tuple[int, int]:
        if self.bands and self.rows:
            return self.bands, self.rows
        return optimal_bands(self.threshold, self.num_perm)


# --------------------------------------------------------------------------- LSH parameters

def _integral(f, lo: float, hi: float, steps: int = 2000) -> float:
    if hi <= lo:
        return 0.0
    x = np.linspace(lo, hi, steps + 1)
    y = f(x)
    h = (hi - lo) / steps
    return float(h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum()))


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5,
                  fn_weight: float = 0.5) -> tuple[int, int]:
    """Bands ``b`` and rows ``r`` (``b*r <= num_perm``) minimising the weighted probability of
    false positives (pairs below the threshold that collide in some band) plus false negatives
    (pairs above it that collide in none), integrated over Jaccard, as datasketch does."""
    best, opt = float("inf"), (1, num_perm)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integral(lambda s: 1 - (1 - s ** r) ** b, 0.0, threshold)
            fn = _integral(lambda s: (1 - s ** r) ** b, threshold, 1.0)
            err = fp * fp_weight + fn * fn_weight
            if err < best:
                best, opt = err, (b, r)
    return opt


# --------------------------------------------------------------------------- shingles

def normalize(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed to single spaces, stripped."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


_word_cache: dict[str, int] = {}


def _word_hash(w: str) -> int:
    h = _word_cache.get(w)
    if h is None:
        h = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little")
        if len(_word_cache) < 2_000_000:
            _word_cache[w] = h
    return h


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array."""
    x ^= x >> _U64(30)
    x *= _MIX1
    x ^= x >> _U64(27)
    x *= _MIX2
    x ^= x >> _U64(31)
    return x


def _ngrams(units: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of all n-grams of the unit sequences laid end to end in ``units`` (lengths
    ``lengths``); a sequence shorter than ``n`` gives one shingle of all its units and an empty
    one a fixed hash. Returns (hashes, shingles per document)."""
    lengths = lengths.astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    counts = np.where(lengths >= n, lengths - n + 1, 1)
    total = int(counts.sum())
    doc = np.repeat(np.arange(len(lengths)), counts)
    first = np.repeat(starts, counts) + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    width = np.minimum(lengths, n)[doc]
    h = np.zeros(total, dtype=np.uint64)
    padded = np.concatenate([units.astype(np.uint64), np.zeros(n, dtype=np.uint64)])
    with np.errstate(over="ignore"):
        for k in range(n):
            part = padded[first + k] * _NGRAM_MULS[k]
            h += np.where(width > k, part, _U64(0))
        h += width.astype(np.uint64)
        h = _mix(h)
        h[np.repeat(lengths == 0, counts)] = _EMPTY_HASH
    return h, counts


def shingle_hashes(texts: Sequence[str], config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every document's shingles, laid end to end, and the count per document."""
    norm = [normalize(t) for t in texts]
    if config.shingle == "char":
        joined = "".join(norm)
        units = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        lengths = np.fromiter((len(t) for t in norm), dtype=np.int64, count=len(norm))
    else:
        cache_get = _word_cache.get
        ids: list[int] = []
        lens: list[int] = []
        for t in norm:
            words = _WORDS.findall(t)
            lens.append(len(words))
            ids.extend([cache_get(w) or _word_hash(w) for w in words])
        units = np.array(ids, dtype=np.uint64)
        lengths = np.array(lens, dtype=np.int64)
    return _ngrams(units, lengths, config.n)


def permutations(config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(config.seed)
    a = rng.integers(0, 2**63, size=config.num_perm, dtype=np.uint64) * _U64(2) + _U64(1)
    b = rng.integers(0, 2**63, size=config.num_perm, dtype=np.uint64) * _U64(2)
    return a, b


def signatures(texts: Sequence[str], config: MinHashConfig, chunk_cells: int = 1 << 22
               ) -> np.ndarray:
    """MinHash signatures, shape ``(len(texts), num_perm)``, dtype uint32."""
    a, b = permutations(config)
    out = np.empty((len(texts), config.num_perm), dtype=np.uint32)
    if not len(texts):
        return out
    h, counts = shingle_hashes(texts, config)
    ends = np.cumsum(counts)
    starts = ends - counts
    per = max(1, chunk_cells // config.num_perm)  # shingles per chunk
    d0 = 0
    n_docs = len(texts)
    while d0 < n_docs:
        # as many documents as fit in the chunk (at least one)
        d1 = int(np.searchsorted(ends, starts[d0] + per, side="right"))
        d1 = max(d1, d0 + 1)
        s0, s1 = int(starts[d0]), int(ends[d1 - 1])
        x = h[s0:s1]
        with np.errstate(over="ignore"):
            v = np.multiply.outer(x, a)
            v += b
        v >>= _U64(32)
        out[d0:d1] = np.minimum.reduceat(v, (starts[d0:d1] - s0), axis=0)
        d0 = d1
    return out


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (document, band), shape ``(n, bands)``."""
    keys = np.zeros((sig.shape[0], bands), dtype=np.uint64)
    s = sig[:, : bands * rows].astype(np.uint64).reshape(sig.shape[0], bands, rows)
    with np.errstate(over="ignore"):
        for j in range(rows):
            keys += s[:, :, j] * _NGRAM_MULS[j % len(_NGRAM_MULS)] + _U64(j + 1)
            keys = _mix(keys)
        keys ^= np.arange(bands, dtype=np.uint64)[None, :] * _U64(0x9E3779B97F4A7C15)
    return keys


def estimated_jaccard(sig: np.ndarray, u: np.ndarray, v: np.ndarray, other: np.ndarray | None = None,
                      chunk: int = 200_000) -> np.ndarray:
    """Share of equal signature values between rows ``u`` of ``sig`` and rows ``v`` of
    ``other`` (default ``sig``)."""
    other = sig if other is None else other
    out = np.empty(len(u), dtype=np.float64)
    for i in range(0, len(u), chunk):
        out[i:i + chunk] = (sig[u[i:i + chunk]] == other[v[i:i + chunk]]).mean(axis=1)
    return out


# --------------------------------------------------------------------------- buckets and clusters

def bucket_pairs(keys: np.ndarray, max_bucket: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs ``(u, v)``, ``u < v``, of documents sharing a key in some band. A bucket
    of up to ``max_bucket`` documents gives all its pairs; a bigger one links every member to
    its earliest one (enough for clustering, avoids quadratic blow-up)."""
    us, vs = [], []
    n = keys.shape[0]
    for band in range(keys.shape[1]):
        k = keys[:, band]
        order = np.argsort(k, kind="stable")
        ks = k[order]
        new = np.ones(n, dtype=bool)
        new[1:] = ks[1:] != ks[:-1]
        gid = np.cumsum(new) - 1
        gstart = np.flatnonzero(new)
        gsize = np.diff(np.append(gstart, n))
        size = gsize[gid]
        pos = np.arange(n) - gstart[gid]
        # small buckets: all pairs (i, j) with j after i in the bucket
        cnt = np.where((size >= 2) & (size <= max_bucket), size - pos - 1, 0)
        tot = int(cnt.sum())
        if tot:
            src = np.repeat(np.arange(n), cnt)
            step = np.arange(tot) - np.repeat(np.cumsum(cnt) - cnt, cnt) + 1
            us.append(order[src])
            vs.append(order[src + step])
        # big buckets: star to the earliest member (the first in stable order)
        big = (size > max_bucket) & (pos > 0)
        if big.any():
            us.append(order[gstart[gid[big]]])
            vs.append(order[big])
    if not us:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u = np.concatenate(us).astype(np.int64)
    v = np.concatenate(vs).astype(np.int64)
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    pair = np.unique(lo * n + hi)
    return pair // n, pair % n


def components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected components of the graph on ``n`` nodes with edges ``(u, v)``: each node's label
    is the smallest node index in its component (so the earliest document represents it)."""
    label = np.arange(n, dtype=np.int64)
    if len(u) == 0:
        return label
    while True:
        m = np.minimum(label[u], label[v])
        before = label.copy()
        np.minimum.at(label, u, m)
        np.minimum.at(label, v, m)
        # pointer jumping: follow labels to their own labels until stable
        while True:
            nxt = label[label]
            if np.array_equal(nxt, label):
                break
            label = nxt
        if np.array_equal(label, before):
            return label


def key_join(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``(i, j)`` with ``left[i] == right[j]`` (1-D uint64 arrays)."""
    order = np.argsort(right, kind="stable")
    rs = right[order]
    lo = np.searchsorted(rs, left, side="left")
    hi = np.searchsorted(rs, left, side="right")
    cnt = hi - lo
    tot = int(cnt.sum())
    i = np.repeat(np.arange(len(left)), cnt)
    j = order[np.repeat(lo, cnt) + (np.arange(tot) - np.repeat(np.cumsum(cnt) - cnt, cnt))]
    return i.astype(np.int64), j.astype(np.int64)
