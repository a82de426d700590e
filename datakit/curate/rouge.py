"""ROUGE-L novelty filter: self-instruct's greedy rule, exact and fast.

Texts are considered in order; a text is dropped when its ROUGE-L F-measure against any text
kept before it is above the threshold, otherwise it is kept. With ``tokenizer="rouge"`` the
keep/drop decisions are exactly those of ``rouge_score.rouge_scorer.RougeScorer(["rougeL"],
use_stemmer=False)`` applied to every pair (the Stanford Alpaca way), only much faster:

1. **Bound.** ROUGE-L F = 2·LCS / (|a| + |b|) and LCS <= the multiset overlap of the two token
   bags, so a pair can only pass the threshold if the bags share enough tokens. A pair whose
   bound is below the threshold is never looked at.
2. **Prefix filtering** (as in set-similarity joins): tokens are expanded into occurrences
   (``the``, ``the`` -> ``the#0``, ``the#1``) so the multiset overlap becomes a set overlap,
   sorted rarest first; two bags that share at least ``o`` occurrences must share one among
   the first ``len - o + 1`` of each. Only those prefixes go into an inverted index, and rare
   tokens have short posting lists.
3. **Exact LCS** for the surviving candidates with a bit-parallel algorithm (Allison-Dix /
   Hyyrö) on Python integers: one big-int add, and, or per token of the query.
4. The score is computed with rouge-score's own float formula, so decisions at the threshold
   agree to the last bit. The pruning bound uses a margin of 1e-9 below the threshold, so no
   pair that rouge-score would score above the threshold can be pruned by rounding.

Scores returned: when a text is dropped, ``max_f`` is its exact highest ROUGE-L F against the
kept texts and ``nearest_id`` the earliest kept text reaching it. When a text is kept, the
pairs that were pruned are only known to be below the threshold, so ``max_f`` is the highest
score among the candidates that were actually compared (a lower bound of the true maximum,
and always <= the threshold; 0.0 when every pair was pruned).

Tokenizers: ``"rouge"`` is rouge-score's tokenizer (lowercase, everything that is not
``[a-z0-9]`` becomes a space). It drops every non-ASCII letter, so Chinese text has no tokens at
all and scores 0 against everything. ``"cjk"`` is datakit's deliberate departure for zh (and
ja/ko) text: each CJK character is one token and other letters/digits form words (Unicode
aware, lowercased).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_CJK_RANGES = (
    "\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3038-\u303b\u3040-\u30ff\u3100-\u312f"
    "\u3130-\u318f\u31a0-\u31bf\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
    "\uf900-\ufaff\U00020000-\U0003134f"
)
_CJK_OR_WORD = re.compile(f"[{_CJK_RANGES}]|[^\\W_{_CJK_RANGES}]+")

TOKENIZERS = ("rouge", "cjk")
_MARGIN = 1e-9
_VECTOR_MIN = 24  # candidates above which the numpy LCS is faster than the Python one


def tokenize(text: str, tokenizer: str = "rouge") -> list[str]:
    """Tokens of ``text``: ``"rouge"`` = rouge-score's tokenizer (no stemming), ``"cjk"`` = one
    token per CJK character plus lowercased Unicode words."""
    text = text.lower()
    if tokenizer == "rouge":
        return _NON_ALNUM.sub(" ", text).split()
    if tokenizer == "cjk":
        return _CJK_OR_WORD.findall(text)
    raise ValueError(f"unknown tokenizer {tokenizer!r} (use 'rouge' or 'cjk')")


# --------------------------------------------------------------------------- exact LCS

def match_masks(tokens: Sequence[str]) -> dict[str, int]:
    """For each distinct token, an int whose bit ``j`` is set where ``tokens[j]`` is it."""
    masks: dict[str, int] = {}
    bit = 1
    for t in tokens:
        masks[t] = masks.get(t, 0) | bit
        bit <<= 1
    return masks


def lcs_masks(a: Iterable[str], masks: dict[str, int], m: int) -> int:
    """Length of the longest common subsequence of ``a`` and the sequence (of length ``m``)
    described by ``masks`` (see :func:`match_masks`); bit-parallel, Hyyrö's formulation."""
    if m == 0:
        return 0
    full = (1 << m) - 1
    v = full
    get = masks.get
    for t in a:
        mt = get(t)
        if mt:
            u = v & mt
            v = ((v + u) | (v - u)) & full
    return m - v.bit_count()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """LCS length of two token sequences (exact)."""
    if not a or not b:
        return 0
    if len(b) > len(a):
        a, b = b, a
    return lcs_masks(a, match_masks(b), len(b))


def _fmeasure(lcs: int, n_target: int, n_pred: int) -> float:
    # rouge-score's arithmetic, operation for operation (rouge_scorer._score_lcs, scoring.fmeasure)
    if n_target == 0 or n_pred == 0:
        return 0.0
    precision = lcs / n_pred
    recall = lcs / n_target
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def rouge_l_f(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F of two token lists, bit-identical to rouge-score's ``_score_lcs(a, b).fmeasure``."""
    return _fmeasure(lcs_length(a, b), len(a), len(b))


# --------------------------------------------------------------------------- pruning bounds

def _min_overlap_table(threshold: float, n: int) -> int:
    """Smallest overlap any partner of a length-``n`` text must share with it to possibly reach
    F > threshold (with the safety margin); ``n + 1`` when no partner can."""
    t = threshold - _MARGIN
    if t <= 0:
        return 1 if n > 0 else n + 1
    best = n + 1
    # o_min(n, m) grows with m; the smallest feasible partner length gives the smallest overlap
    for m in range(1, n + 1):
        need = int(t * (n + m) / 2) + 1  # overlap strictly above t*(n+m)/2
        if need <= m:
            best = need
            break
    return best


class RougeLNovelty:
    """Keeps a set of texts; :meth:`offer` keeps a new text unless it is too close to a kept one.

    ``threshold``: a text is dropped when its ROUGE-L F against a kept text is > threshold.
    ``tokenizer``: ``"rouge"`` (rouge-score's, exact parity) or ``"cjk"`` (zh by characters).
    ``vocabulary``: optional texts (for example the whole batch about to be filtered) used to
    order tokens by rarity up front; without it the order is learned from the kept texts and
    the index is rebuilt each time they double in number (the result is the same either way,
    only the speed differs).
    """

    def __init__(self, threshold: float = 0.7, tokenizer: str = "rouge",
                 vocabulary: Iterable[str] | None = None):
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {tokenizer!r} (use 'rouge' or 'cjk')")
        self.threshold = float(threshold)
        self.tokenizer = tokenizer
        self._ids: list[str] = []
        self._lens: list[int] = []
        self._masks: list[dict[str, int]] = []
        self._elems: list[list[str]] = []  # occurrence elements, unsorted
        self._index: dict[str, list[int]] = {}
        self._df: Counter[str] = Counter()  # document frequency of elements over kept texts
        self._rank: dict[str, int] = {}  # frozen element order (higher df = later)
        self._fixed_order = False
        self._next_rebuild = 64
        self.pairs_compared = 0  # exact LCS computations done (for benchmarks)
        self.record_candidates: list | None = None  # set to [] to log candidates (benchmarks)
        # flat token-id store of kept texts, for the vectorised LCS over many candidates
        self._tokid: dict[str, int] = {}
        self._flat = np.zeros(1024, dtype=np.int32)
        self._flat_len = 0
        self._starts_np = np.zeros(1024, dtype=np.int64)
        self._lens_np = np.zeros(1024, dtype=np.int64)
        self._qpos = np.full(1024, -1, dtype=np.int64)
        if vocabulary is not None:
            df: Counter[str] = Counter()
            for text in vocabulary:
                df.update(self._elements(tokenize(text, tokenizer)))
            self._freeze(df)
            self._fixed_order = True

    def __len__(self) -> int:
        return len(self._ids)

    # -- internals -------------------------------------------------------------------------
    @staticmethod
    def _elements(tokens: Sequence[str]) -> list[str]:
        seen: dict[str, int] = {}
        out = []
        for t in tokens:
            k = seen.get(t, 0)
            seen[t] = k + 1
            out.append(t if k == 0 else f"{t}\x00{k}")
        return out

    def _freeze(self, df: Counter[str]) -> None:
        # unseen elements get rank -1 (rarest); ties broken by the element text (sort key below)
        self._rank = dict(df)

    def _prefix(self, elems: list[str], n: int) -> list[str]:
        o = _min_overlap_table(self.threshold, n)
        if o > n:
            return []
        rank = self._rank
        ordered = sorted(elems, key=lambda e: (rank.get(e, 0), e))
        return ordered[: n - o + 1]

    def _rebuild(self) -> None:
        self._freeze(self._df)
        index: dict[str, list[int]] = {}
        for i, elems in enumerate(self._elems):
            for e in self._prefix(elems, self._lens[i]):
                index.setdefault(e, []).append(i)
        self._index = index

    def _length_ok(self, n: int, m: int) -> bool:
        return 2 * min(n, m) / (n + m) > self.threshold - _MARGIN

    # -- API -------------------------------------------------------------------------------
    def _search(self, toks: list[str], elems: list[str], stop_above: bool = False
                ) -> tuple[float, str | None]:
        n = len(toks)
        if n == 0 or not self._ids or not (prefix := self._prefix(elems, n)):
            if self.record_candidates is not None:
                self.record_candidates.append([])
            return 0.0, None
        cands: set[int] = set()
        index = self._index
        for e in prefix:
            p = index.get(e)
            if p:
                cands.update(p)
        if self.record_candidates is not None:
            self.record_candidates.append(sorted(cands))
        best, best_i = 0.0, -1
        lens, masks = self._lens, self._masks
        t = self.threshold - _MARGIN
        compared = 0
        if len(cands) >= _VECTOR_MIN:
            arr = np.sort(np.fromiter(cands, dtype=np.int64, count=len(cands)))
            big = self._lens_np[arr] > 63
            small = arr[~big]
            cand_list = arr[big].tolist()
            if len(small):
                f_arr, c_arr = self._lcs_vector(toks, small, t)
                compared += len(c_arr)
                if len(c_arr):
                    k = int(np.argmax(f_arr))  # first maximum = earliest kept text
                    if f_arr[k] > 0:
                        best, best_i = float(f_arr[k]), int(c_arr[k])
        else:
            cand_list = sorted(cands)
        for i in cand_list:
            m = lens[i]
            # length bound: 2*min(n, m)/(n + m) must exceed the threshold
            if 2 * (m if m < n else n) <= t * (n + m):
                continue
            compared += 1
            # bit-parallel LCS (Hyyro), inlined: this loop is the hot path
            get = masks[i].get
            full = (1 << m) - 1
            v = full
            for tok in toks:
                mt = get(tok)
                if mt:
                    u = v & mt
                    v = ((v + u) | (v - u)) & full
            lcs = m - v.bit_count()
            if lcs:
                precision = lcs / m
                recall = lcs / n
                f = 2 * precision * recall / (precision + recall)
                if f > best or (f == best and f > 0 and i < best_i):
                    best, best_i = f, i
        self.pairs_compared += compared
        return best, (self._ids[best_i] if best_i >= 0 else None)

    def _store_ids(self, toks: list[str]) -> None:
        tokid = self._tokid
        ids = [tokid.setdefault(tok, len(tokid)) for tok in toks]
        need = self._flat_len + len(ids)
        if need > len(self._flat):
            self._flat = np.concatenate([self._flat, np.zeros(max(need, len(self._flat)), np.int32)])
        self._flat[self._flat_len:need] = ids
        k = len(self._ids) - 1
        if k >= len(self._lens_np):
            self._lens_np = np.concatenate([self._lens_np, np.zeros(len(self._lens_np), np.int64)])
            self._starts_np = np.concatenate([self._starts_np, np.zeros(len(self._starts_np), np.int64)])
        self._lens_np[k] = len(ids)
        self._starts_np[k] = self._flat_len
        self._flat_len = need
        if len(tokid) > len(self._qpos):
            self._qpos = np.concatenate([self._qpos, np.full(len(tokid) + len(self._qpos), -1, np.int64)])

    def _lcs_vector(self, toks: list[str], cands: np.ndarray, t: float):
        """Exact ROUGE-L F of ``toks`` against many kept texts of <= 63 tokens at once: the same
        bit-parallel recurrence on uint64 lanes, one lane per candidate."""
        n = len(toks)
        lens = self._lens_np[cands]
        mins = np.minimum(lens, n)
        ok = 2 * mins > t * (n + lens)
        cands, lens = cands[ok], lens[ok]
        if len(cands) == 0:
            return np.zeros(0), cands
        # query tokens -> rows; tokens the kept texts never had cannot match
        qrow: dict[int, int] = {}
        rows_of = []
        for tok in toks:
            tid = self._tokid.get(tok)
            if tid is None:
                rows_of.append(-1)
            else:
                rows_of.append(qrow.setdefault(tid, len(qrow)))
        if not qrow:
            return np.zeros(len(cands)), cands
        qpos = self._qpos
        qids = np.fromiter(qrow.keys(), dtype=np.int64, count=len(qrow))
        qpos[qids] = np.arange(len(qids))
        starts = self._starts_np[cands]
        total = int(lens.sum())
        lane = np.repeat(np.arange(len(cands)), lens)
        offs = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
        toks_flat = self._flat[np.repeat(starts, lens) + offs]
        row = qpos[toks_flat]
        qpos[qids] = -1
        hit = row >= 0
        masks = np.zeros((len(qrow), len(cands)), dtype=np.uint64)
        np.bitwise_or.at(masks, (row[hit], lane[hit]),
                         np.left_shift(np.uint64(1), offs[hit].astype(np.uint64)))
        full = (np.left_shift(np.uint64(1), lens.astype(np.uint64)) - np.uint64(1))
        v = full.copy()
        for r in rows_of:
            if r < 0:
                continue
            u = v & masks[r]
            v = ((v + u) | (v - u)) & full
        lcs = lens - np.bitwise_count(v).astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = lcs / lens
            recall = lcs / n
            f = np.where(lcs > 0, 2 * precision * recall / (precision + recall), 0.0)
        return f, cands

    def check(self, text: str) -> tuple[float, str | None]:
        """Highest ROUGE-L F of ``text`` against the kept texts, and the id of that text (exact
        when above the threshold; see the module notes)."""
        toks = tokenize(text, self.tokenizer)
        return self._search(toks, self._elements(toks))

    def add(self, text: str, id: str) -> None:
        """Keep ``text`` (under ``id``) without checking it."""
        toks = tokenize(text, self.tokenizer)
        self._add(toks, self._elements(toks), id)

    def _add(self, toks: list[str], elems: list[str], id: str) -> None:
        i = len(self._ids)
        self._ids.append(id)
        self._lens.append(len(toks))
        self._masks.append(match_masks(toks))
        self._elems.append(elems)
        self._store_ids(toks)
        if not self._fixed_order:
            self._df.update(elems)
        for e in self._prefix(elems, len(toks)):
            self._index.setdefault(e, []).append(i)
        if not self._fixed_order and len(self._ids) >= self._next_rebuild:
            self._next_rebuild *= 2
            self._rebuild()

    def offer(self, text: str, id: str) -> tuple[bool, float, str | None]:
        """Keep ``text`` unless a kept text scores above the threshold against it. Returns
        ``(kept, max_f, nearest_id)``; ``kept`` is ``max_f <= threshold``."""
        toks = tokenize(text, self.tokenizer)
        elems = self._elements(toks)
        score, nearest = self._search(toks, elems)
        keep = score <= self.threshold
        if keep:
            self._add(toks, elems, id)
        return keep, score, nearest


def novelty_filter(texts: Sequence[str], ids: Sequence[str], threshold: float = 0.7,
                   tokenizer: str = "rouge", progress=None
                   ) -> list[tuple[bool, float, str | None]]:
    """Run the greedy novelty filter over ``texts`` in order; one ``(kept, max_f, nearest_id)``
    per text. ``progress(n_done)`` is called every 1000 texts when given."""
    f = RougeLNovelty(threshold, tokenizer)
    out = []
    for k, (text, id_) in enumerate(zip(texts, ids)):
        out.append(f.offer(text, id_))
        if progress is not None and (k + 1) % 1000 == 0:
            progress(k + 1)
    if progress is not None:
        progress(len(texts))
    return out
