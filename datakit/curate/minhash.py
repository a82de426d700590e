"""MinHash signatures, LSH banding and exact Jaccard verification, vectorised in numpy.

Pipeline: normalise (NFKC, casefold, whitespace) -> shingles (word or character n-grams) ->
64-bit shingle hashes -> ``num_perm`` min-wise hashes per document -> ``bands`` band keys ->
documents sharing a band key are candidates -> candidates whose exact Jaccard (of the shingle
sets; or, with ``verify=False``, the share of equal signature values) reaches the threshold
are linked -> clusters are the connected components (min-label propagation with pointer
jumping, not union-find); which members are removed is decided in :mod:`datakit.curate.clusters`.

Every step is a numpy operation over a batch of documents; there is no Python loop per
document, token, shingle or permutation. A batch is normalised and tokenised in one pass
(pure ASCII batches in numpy, others with one NFKC + casefold + regex pass over the joined
text); words, characters and pre-made shingle strings get a polynomial hash of their code
points through the splitmix64 finaliser, computed for the whole batch from prefix sums; n-gram
hashes mix the unit hashes with fixed odd multipliers. Nothing depends on Python's ``hash()``,
on a cache or on how documents are batched, so signatures are the same in every process and on
every machine (the Ray engine relies on this).

Permutations are the multiply-add-shift family ``h_i(x) = (a_i * x + b_i mod 2^64) >> 32``
with odd 64-bit ``a_i`` (Dietzfelbinger's universal hashing), cheaper than datasketch's
``(a x + b) mod (2^61 - 1)`` and with the same collision behaviour for MinHash purposes; the
estimated Jaccard therefore agrees with datasketch statistically, not bit for bit (tested).
"""

from __future__ import annotations

import functools
import itertools
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
VERIFY_FP_WEIGHT = 0.1


@dataclass(frozen=True)
class MinHashConfig:
    num_perm: int = 128
    threshold: float = 0.7
    shingle: str = "word"  # "word" or "char"
    ngram: int | None = None  # default: 3 for words, 5 for characters
    seed: int = 1
    bands: int | None = None  # default: chosen from the threshold (see optimal_bands)
    rows: int | None = None
    # verify LSH candidates with the exact Jaccard of their shingle sets (else with the
    # signature estimate); with verification the bands favour recall (see band_rows)
    verify: bool = True

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
        if self.verify:
            # a false positive only costs one exact check, a false negative is a missed
            # duplicate: weight them 1:9 (20 x 6 at 0.7/128 instead of 14 x 9)
            return optimal_bands(self.threshold, self.num_perm, VERIFY_FP_WEIGHT,
                                 1 - VERIFY_FP_WEIGHT)
        return optimal_bands(self.threshold, self.num_perm)


# --------------------------------------------------------------------------- LSH parameters

def _integral(f, lo: float, hi: float, steps: int = 2000) -> float:
    if hi <= lo:
        return 0.0
    x = np.linspace(lo, hi, steps + 1)
    y = f(x)
    h = (hi - lo) / steps
    return float(h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum()))


@functools.lru_cache(maxsize=64)
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


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array."""
    with np.errstate(over="ignore"):
        x ^= x >> _U64(30)
        x *= _MIX1
        x ^= x >> _U64(27)
        x *= _MIX2
        x ^= x >> _U64(31)
    return x


# Unit hashes (words, characters, pre-made shingle strings) are a polynomial hash of the code
# points, sum((c_i + 1) * P^i) mod 2^64, plus the length, through the splitmix64 finaliser. It is
# computed for all units of a batch at once from prefix sums (no Python code per unit), and it
# depends on the unit alone, so signatures do not depend on how documents are batched.
_P = 0x100000001B3 * 0x9E3779B97F4A7C15 % 2**64 | 1
_PINV = pow(_P, -1, 2**64)
_LEN_MUL = _U64(0xD6E8FEB86659FD93)


_POW_CACHE: dict[int, np.ndarray] = {}


def _powers(base: int, n: int) -> np.ndarray:
    """``base**k mod 2^64`` for ``k < n`` (a cached, growing table; read-only view)."""
    table = _POW_CACHE.get(base)
    if table is None or len(table) < n:
        size = max(n, 1 << 16, 2 * len(table) if table is not None else 0)
        table = np.full(size, base, dtype=np.uint64)
        table[0] = 1
        with np.errstate(over="ignore"):
            table = np.cumprod(table, dtype=np.uint64)
        table.flags.writeable = False
        if size <= 1 << 23:
            _POW_CACHE[base] = table
    return table[:n]


def _unit_hashes(cps: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hashes of the units ``cps[starts[k]:ends[k]]`` (code points, any unsigned dtype)."""
    n = len(cps)
    with np.errstate(over="ignore"):
        pre = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum((cps.astype(np.uint64) + _U64(1)) * _powers(_P, n), out=pre[1:])
        h = (pre[ends] - pre[starts]) * _powers(_PINV, n + 1)[starts]
        h += (ends - starts).astype(np.uint64) * _LEN_MUL
    return _mix(h)


def _ascii_class_tables() -> tuple[np.ndarray, np.ndarray]:
    """For each byte < 128: 1 = word character, 2 = a one-character token, 0 = separator,
    exactly as :data:`_WORDS` decides; and the lower-case byte."""
    cls = np.zeros(256, dtype=np.uint8)
    for c in range(128):
        ch = chr(c)
        if re.fullmatch(f"[^\\W_{_CJK_RANGES}]", ch):
            cls[c] = 1
        elif re.fullmatch(f"[{_CJK_RANGES}]|[^\\w\\s]", ch):
            cls[c] = 2
    low = np.arange(256, dtype=np.uint8)
    low[ord("A"):ord("Z") + 1] += 32
    return cls, low


_ASCII_CLASS, _ASCII_LOWER = _ascii_class_tables()


def _pick_separator(joined: str) -> str:
    for sep in ("\x00", "\x01", "\x02", "\x03", "\ufdd0", "\ufdd1"):
        if sep not in joined:
            return sep
    raise ValueError("cannot find a separator character absent from the batch")


def _word_tokens(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the word tokens (:data:`_WORDS` over the normalised text) of every document,
    laid end to end, and the number of tokens per document. One pass over the whole batch:
    pure ASCII batches are tokenised in numpy; others with one NFKC, casefold and regex pass
    over the joined text."""
    n = len(texts)
    joined = " ".join(texts)
    if not joined.strip():
        return np.zeros(0, dtype=np.uint64), np.zeros(n, dtype=np.int64)
    if joined.isascii():
        b = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
        cls = _ASCII_CLASS[b]
        word = cls == 1
        one = cls == 2
        prev = np.empty_like(word)
        prev[0] = False
        prev[1:] = word[:-1]
        nxt = np.empty_like(word)
        nxt[-1:] = False
        nxt[:-1] = word[1:]
        starts = np.flatnonzero(one | (word & ~prev))
        ends = np.flatnonzero(one | (word & ~nxt)) + 1
        h = _unit_hashes(_ASCII_LOWER[b], starts, ends)
        lens = np.fromiter(map(len, texts), dtype=np.int64, count=n)
        doc_start = np.cumsum(lens + 1) - (lens + 1)
        doc = np.searchsorted(doc_start, starts, side="right") - 1
        return h, np.bincount(doc, minlength=n).astype(np.int64)
    sep = _pick_separator(joined)
    norm = unicodedata.normalize("NFKC", sep.join(texts)).casefold()
    tokens = _WORDS.findall(norm)
    tlen = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    cps = np.frombuffer("".join(tokens).encode("utf-32-le"), dtype=np.uint32)
    ends = np.cumsum(tlen)
    starts = ends - tlen
    if not len(tokens):
        return np.zeros(0, dtype=np.uint64), np.zeros(n, dtype=np.int64)
    is_sep = (tlen == 1) & (cps[starts] == ord(sep))
    doc = np.cumsum(is_sep)
    keep = ~is_sep
    h = _unit_hashes(cps, starts[keep], ends[keep])
    return h, np.bincount(doc[keep], minlength=n).astype(np.int64)


def _char_units(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Code points of every normalised document, laid end to end, and the length of each."""
    sep = _pick_separator(" ".join(texts))
    norm = _WS.sub(" ", unicodedata.normalize("NFKC", sep.join(texts)).casefold())
    parts = [t.strip() for t in norm.split(sep)]
    units = np.frombuffer("".join(parts).encode("utf-32-le"), dtype=np.uint32)
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    return _unit_hashes(units, np.arange(len(units)), np.arange(1, len(units) + 1)), lengths


def _ngrams(units: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of all n-grams of the unit-hash sequences laid end to end in ``units`` (lengths
    ``lengths``); a sequence shorter than ``n`` gives one shingle of all its units and an empty
    one a fixed hash. Returns (hashes, shingles per document)."""
    lengths = lengths.astype(np.int64)
    total_units = len(units)
    starts = np.cumsum(lengths) - lengths
    counts = np.where(lengths >= n, lengths - n + 1, 1)
    csum = np.cumsum(counts)
    total = int(csum[-1]) if len(csum) else 0
    padded = np.zeros(total_units + n, dtype=np.uint64)
    padded[:total_units] = units
    with np.errstate(over="ignore"):
        # g[i] = sum_k units[i + k] * M_k for every start position (crossing documents too;
        # only positions inside a document are used)
        g = padded[:total_units + 1] * _NGRAM_MULS[0]
        for k in range(1, n):
            g += padded[k:total_units + 1 + k] * _NGRAM_MULS[k]
        first = np.arange(total, dtype=np.int64) + np.repeat(starts - (csum - counts), counts)
        h = g[first]
        h += _U64(n)
        short = np.flatnonzero(lengths < n)
        if len(short):
            pos = csum[short] - 1  # the one shingle of each short document
            hs = np.zeros(len(short), dtype=np.uint64)
            for k in range(n - 1):
                ok = lengths[short] > k
                hs[ok] += padded[starts[short][ok] + k] * _NGRAM_MULS[k]
            h[pos] = hs + lengths[short].astype(np.uint64)
        h = _mix(h)
        if len(short):
            empty = short[lengths[short] == 0]
            h[csum[empty] - 1] = _EMPTY_HASH
    return h, counts


SHINGLE_BATCH = 1 << 16


def shingle_hashes(texts: Sequence[str], config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every document's shingles, laid end to end, and the count per document.
    Documents are hashed :data:`SHINGLE_BATCH` at a time (the power tables of the unit hashes
    grow with a batch's characters; hashes do not depend on the batching)."""
    if not len(texts):
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    if len(texts) > SHINGLE_BATCH:
        parts = [shingle_hashes(texts[s:s + SHINGLE_BATCH], config)
                 for s in range(0, len(texts), SHINGLE_BATCH)]
        return np.concatenate([h for h, _ in parts]), np.concatenate([c for _, c in parts])
    units, lengths = _char_units(texts) if config.shingle == "char" else _word_tokens(texts)
    return _ngrams(units, lengths, config.n)


def hash_shingles(docs: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of pre-made shingles (strings, taken as they are), laid end to end, and the
    count per document. (A hash of a shingle string, not of its words: these signatures are
    comparable with each other, not with those of :func:`signatures`.)"""
    counts = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    flat = list(itertools.chain.from_iterable(docs))
    slen = np.fromiter(map(len, flat), dtype=np.int64, count=len(flat))
    cps = np.frombuffer("".join(flat).encode("utf-32-le"), dtype=np.uint32)
    ends = np.cumsum(slen)
    h = _unit_hashes(cps, ends - slen, ends)
    empty = np.flatnonzero(counts == 0)
    if len(empty):  # an empty document has one fixed shingle, as in shingle_hashes
        h = np.insert(h, (np.cumsum(counts) - counts)[empty], _EMPTY_HASH)
        counts = np.maximum(counts, 1)
    return h, counts


def permutations(config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(config.seed)
    a = rng.integers(0, 2**63, size=config.num_perm, dtype=np.uint64) * _U64(2) + _U64(1)
    b = rng.integers(0, 2**63, size=config.num_perm, dtype=np.uint64) * _U64(2)
    return a, b


def signatures_from_hashes(h: np.ndarray, counts: np.ndarray, config: MinHashConfig,
                           chunk_cells: int = 1 << 17) -> np.ndarray:
    """MinHash signatures of documents given as shingle hashes laid end to end (``counts`` per
    document, each >= 1): ``min_x ((a_i x + b_i) mod 2^64) >> 32``.

    Documents are grouped by shingle count ``k``; a block of ``g`` documents of one group is
    gathered, the ``g*k`` by ``num_perm`` products are made into one reused cache-sized buffer
    and reduced as a ``(g, k, num_perm)`` array (a strided minimum, much cheaper than
    ``minimum.reduceat`` over ragged rows). The minimum is taken on the 64-bit values (the
    shift is monotone) and only the per-document minima are shifted."""
    a, b = permutations(config)
    n_docs, p = len(counts), config.num_perm
    if not n_docs:
        return np.empty((0, p), dtype=np.uint32)
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    order = np.argsort(counts, kind="stable")
    sorted_counts = counts[order]
    bounds = np.flatnonzero(np.diff(sorted_counts)) + 1
    buf = np.empty(max(chunk_cells, int(sorted_counts[-1]) * p), dtype=np.uint64)
    mins = np.empty((n_docs, p), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for g0, g1 in zip(np.r_[0, bounds].tolist(), np.r_[bounds, n_docs].tolist()):
            k = int(sorted_counts[g0])
            per = max(1, chunk_cells // (k * p))  # documents per block
            steps = np.arange(k)
            for s in range(g0, g1, per):
                docs = order[s:min(s + per, g1)]
                x = h[(starts[docs][:, None] + steps).reshape(-1)]
                v = buf[: len(x) * p].reshape(len(x), p)
                np.multiply(x[:, None], a[None, :], out=v)
                v += b
                mins[docs] = v.reshape(len(docs), k, p).min(axis=1) if k > 1 else v
    mins >>= _U64(32)
    return mins.astype(np.uint32)


def signatures(texts: Sequence[str], config: MinHashConfig) -> np.ndarray:
    """MinHash signatures, shape ``(len(texts), num_perm)``, dtype uint32."""
    if not len(texts):
        return np.empty((0, config.num_perm), dtype=np.uint32)
    return signatures_from_hashes(*shingle_hashes(texts, config), config)


def signatures_from_shingles(docs: Sequence[Sequence[str]], config: MinHashConfig) -> np.ndarray:
    """MinHash signatures of pre-shingled documents (each a sequence of shingle strings)."""
    if not len(docs):
        return np.empty((0, config.num_perm), dtype=np.uint32)
    return signatures_from_hashes(*hash_shingles(docs), config)


# --------------------------------------------------------------------------- exact Jaccard

def unique_sorted(x: np.ndarray) -> np.ndarray:
    """Sorted unique values of a 1-D array (sort + neighbour test; numpy 2's hash-based
    ``np.unique`` is several times slower on millions of integers)."""
    x = np.sort(x)
    if len(x) > 1:
        x = x[np.concatenate(([True], x[1:] != x[:-1]))]
    return x


def _dense_ids(x: np.ndarray) -> np.ndarray:
    """Rank of each value among the distinct values of ``x`` (``int64``)."""
    order = np.argsort(x)
    xs = x[order]
    new = np.ones(len(x), dtype=np.int64)
    if len(x) > 1:
        new[1:] = xs[1:] != xs[:-1]
    ids = np.empty(len(x), dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids

def shingle_sets(texts: Sequence[str], config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """Each document's set of shingle hashes as dense ids (``uint64``, sorted and unique per
    document), laid end to end, and the offsets (``len(texts) + 1``)."""
    h, counts = shingle_hashes(texts, config)
    doc = np.repeat(np.arange(len(counts), dtype=np.uint64), counts)
    ids = _dense_ids(h)
    keys = unique_sorted((doc << _U64(32)) | ids.astype(np.uint64))
    d = (keys >> _U64(32)).astype(np.int64)
    offsets = np.searchsorted(d, np.arange(len(counts) + 1))
    return keys & _U64(0xFFFFFFFF), offsets


def _gather(vals: np.ndarray, offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cnt = offsets[docs + 1] - offsets[docs]
    tot = int(cnt.sum())
    first = np.repeat(offsets[docs] - (np.cumsum(cnt) - cnt), cnt) + np.arange(tot)
    return vals[first], cnt


def exact_jaccard(texts: Sequence[str], u: np.ndarray, v: np.ndarray, config: MinHashConfig,
                  other: Sequence[str] | None = None, chunk: int = 1 << 17) -> np.ndarray:
    """Exact Jaccard of the shingle sets of ``texts[u]`` and ``other[v]`` (default ``texts``),
    pair by pair. Only the documents named in the pairs are shingled again. Vectorised: each
    set is a sorted run of dense shingle ids; tagged with the pair number, the runs of all
    left sets form one sorted array and those of the right sets another, and one
    ``searchsorted`` of the left into the right finds the intersections."""
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    if not len(u):
        return np.zeros(0, dtype=np.float64)
    if other is None:
        ua = unique_sorted(np.concatenate([u, v]))
        sub = texts.take(ua) if hasattr(texts, "take") else [texts[i] for i in ua.tolist()]
        lut = np.empty(len(texts), dtype=np.int64)
        lut[ua] = np.arange(len(ua))
        iu, iv = lut[u], lut[v]
    else:
        ua, ub = unique_sorted(u), unique_sorted(v)
        sub = texts.take(ua) if hasattr(texts, "take") else [texts[i] for i in ua.tolist()]
        sub += [other[j] for j in ub.tolist()]
        iu, iv = np.searchsorted(ua, u), len(ua) + np.searchsorted(ub, v)
    vals, offsets = shingle_sets(sub, config)
    out = np.empty(len(u), dtype=np.float64)
    for c0 in range(0, len(u), chunk):
        a_docs, b_docs = iu[c0:c0 + chunk], iv[c0:c0 + chunk]
        m = len(a_docs)
        va, ca = _gather(vals, offsets, a_docs)
        vb, cb = _gather(vals, offsets, b_docs)
        pid = np.arange(m, dtype=np.uint64) << _U64(32)
        ka = np.repeat(pid, ca) | va
        kb = np.repeat(pid, cb) | vb
        pos = np.searchsorted(kb, ka)
        np.minimum(pos, len(kb) - 1, out=pos)
        hit = kb[pos] == ka
        inter = np.bincount((ka[hit] >> _U64(32)).astype(np.int64), minlength=m)
        out[c0:c0 + m] = inter / (ca + cb - inter)
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
                      chunk: int = 8192) -> np.ndarray:
    """Share of equal signature values between rows ``u`` of ``sig`` and rows ``v`` of
    ``other`` (default ``sig``)."""
    other = sig if other is None else other
    out = np.empty(len(u), dtype=np.float64)
    for i in range(0, len(u), chunk):
        eq = sig[u[i:i + chunk]] == other[v[i:i + chunk]]
        out[i:i + chunk] = np.count_nonzero(eq, axis=1) / sig.shape[1]
    return out


# --------------------------------------------------------------------------- buckets and clusters

def band_pairs(k: np.ndarray, max_bucket: int = 64, roles: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs ``(u, v)``, ``u < v``, of documents sharing a key in one band (``k``: one
    key per document). A bucket of up to ``max_bucket`` documents gives all its pairs; a bigger
    one links every member to its earliest one (enough for clustering, avoids quadratic
    blow-up). Each pair appears once. With ``roles`` (``uint8``, one per document), each
    document's part is written there: 0 alone, 1 in a small bucket, 2 the earliest member of a
    big one, 3 another member of a big one (so a pair of documents sharing the key was a
    candidate here exactly when the earlier one's role is 1 or 2)."""
    n = len(k)
    order = np.argsort(k, kind="stable")
    ks = k[order]
    new = np.ones(n, dtype=bool)
    new[1:] = ks[1:] != ks[:-1]
    del ks
    gid = np.cumsum(new) - 1
    gstart = np.flatnonzero(new)
    gsize = np.diff(np.append(gstart, n))
    size = gsize[gid]
    pos = np.arange(n) - gstart[gid]
    if roles is not None:
        roles[order] = np.where(size > max_bucket, np.where(pos == 0, 2, 3), size >= 2)
    us, vs = [], []
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
    return np.concatenate(us).astype(np.int64), np.concatenate(vs).astype(np.int64)


def bucket_pairs(keys: np.ndarray, max_bucket: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs ``(u, v)``, ``u < v``, unique, of documents sharing a key in some band
    (:func:`band_pairs` over every band of ``keys``, shape ``(n, bands)``)."""
    us, vs = [], []
    n = keys.shape[0]
    for band in range(keys.shape[1]):
        u, v = band_pairs(keys[:, band], max_bucket)
        us.append(u)
        vs.append(v)
    if not us or not sum(map(len, us)):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u = np.concatenate(us)
    v = np.concatenate(vs)
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    pair = unique_sorted(lo * n + hi)
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


def merge_components(label: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Add the edges ``(u, v)`` to ``label`` in place and return it. ``label`` is what
    :func:`components` returns (each node labelled with the smallest node of its component;
    ``np.arange(n)`` for no edges yet), and stays so: the larger of two roots is hooked to the
    smaller, then every label follows its root (pointer jumping). Edges can come in any number
    of calls; the result is the same as :func:`components` of all of them."""
    while len(u):
        ru, rv = label[u], label[v]
        apart = ru != rv
        if not apart.any():
            break
        u, v, ru, rv = u[apart], v[apart], ru[apart], rv[apart]
        np.minimum.at(label, np.maximum(ru, rv), np.minimum(ru, rv))
        while True:
            nxt = label[label]
            if np.array_equal(nxt, label):
                break
            label[:] = nxt
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
