"""Dedup of inputs too big to hold as Python rows (10M short documents on a laptop).

:func:`load_inputs` hands back a :class:`JsonlRows` (rows read again from the files when
needed, never held) for JSONL inputs of at least ``DATAKIT_STREAM_BYTES`` bytes (default
256 MiB) without human reviews. Then :func:`dedup_stream` computes the same clusters and
removals as the in-memory path, in bounded memory:

1. one pass over the rows in chunks of :data:`CHUNK` (parsed and signed on worker processes,
   one per CPU up to 4): each chunk's text is kept as one UTF-8
   blob (its ids too, and the judge scores as floats), its MinHash signatures are computed and
   only their band keys are kept, appended to one file per band on disk (with ``--no-verify``
   the signatures too: the estimate needs them);
2. band by band: the keys are read back, sorted into buckets, and the bucket pairs (exactly
   :func:`minhash.band_pairs`) whose two documents are not yet in one cluster are verified
   (exact Jaccard, shingling again only the documents named, in chunks of pairs) and merged
   into the clusters (:func:`minhash.merge_components`); the checks run on forked workers that
   share the texts (:class:`Verifier`). A pair already joined through earlier bands, or that
   was a candidate in an earlier band (same key there, and not left out of a big bucket's
   star), is not checked again, which changes no cluster: each candidate pair is verified at
   most once, as in memory;
3. representatives (highest judge score, else earliest) and the similarity of each member to
   its representative, with numpy over the cluster labels; members below the threshold are
   resolved greedily among themselves from their own candidate pairs (:func:`clusters.resolve`);
4. :func:`write_stream` reads the input again line by line and writes kept and removed rows
   as it goes (JSONL), each file atomically.

Memory: the text blob (~ the input's text bytes), 8 bytes of offsets and 8 of labels per
document, 1 byte per document and band (bucket roles), one band's keys and sort at a time
(~40 bytes per document), and the pairs of one band. Disk: 8 bytes per document and band in
a temporary folder.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from datakit.curate import minhash as mh
from datakit.curate.clusters import band_candidates, resolve
from datakit.errors import UserError

CHUNK = 100_000
PAIR_CHUNK = 1 << 19
MIN_POOL_PAIRS = 4096  # fewer pairs are checked here, not on the workers
_REASONS = ("near_duplicate", "contaminated")


def stream_min_bytes() -> int:
    return int(os.environ.get("DATAKIT_STREAM_BYTES", 256 << 20))


def streamed_inputs(paths: Sequence[str | os.PathLike], fields: Sequence[str]):
    """An :class:`Inputs` over a :class:`JsonlRows` when every input is a JSONL file, none has
    human reviews and they are big enough; else None (the in-memory path)."""
    from datakit.curate.dedup import Inputs, _resolve
    from datakit.reviews import reviews_for

    files = [_resolve(p) for p in paths]
    if any(f.suffix.lower() != ".jsonl" for f in files):
        return None
    if sum(f.stat().st_size for f in files) < stream_min_bytes():
        return None
    if reviews_for(list(paths)):
        return None
    rows = JsonlRows(files, tuple(fields))
    return Inputs(rows, rows.source, files)  # type: ignore[arg-type]


class JsonlRows:
    """The rows of JSONL files, validated as :func:`load_inputs` does, read again on each pass."""

    def __init__(self, files: Sequence[Path], fields: Sequence[str]):
        self.files, self.fields = list(files), tuple(fields)
        self.counts = [sum(1 for line in open(f, "rb") if line.strip()) for f in self.files]
        if not sum(self.counts):
            raise UserError(f"no records in input ({', '.join(map(str, self.files))})")
        self.source = _Source(self.counts)

    def __len__(self) -> int:
        return sum(self.counts)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for k, _, row in self.lines():
            yield row

    def raw_chunks(self, size: int) -> Iterator[list[tuple[int, int, bytes]]]:
        """Lists of ``size`` rows (the last one shorter) as (file number, line number, raw line)."""
        chunk: list[tuple[int, int, bytes]] = []
        for k, f in enumerate(self.files):
            with open(f, "rb") as fh:
                for i, line in enumerate(fh, 1):
                    if line.strip():
                        chunk.append((k, i, line))
                        if len(chunk) == size:
                            yield chunk
                            chunk = []
        if chunk:
            yield chunk

    def lines(self) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
        """(file number, raw line, checked row) for every row, in input order."""
        for k, f in enumerate(self.files):
            with open(f, "rb") as fh:
                for i, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    yield k, line, parse_row(line, self.fields, f, i)


def parse_row(line: bytes, fields: Sequence[str], path: Path, i: int) -> dict[str, Any]:
    import json

    from datakit.curate.dedup import checked_row

    try:
        row = json.loads(line)
    except ValueError as e:
        raise UserError(f"not valid JSON ({e.args[0].split(':')[0]})", path=str(path), line=i) from None
    if not isinstance(row, dict):
        raise UserError("expected a JSON object", path=str(path), line=i)
    return checked_row(row, fields, path, i)


class _Source:
    """``source[i]``: the file number of row ``i`` (what :class:`Inputs` keeps as a list)."""

    def __init__(self, counts: Sequence[int]):
        self.ends = np.cumsum(counts)

    def __getitem__(self, i: int) -> int:
        return int(np.searchsorted(self.ends, i, side="right"))


def encode(texts: Sequence[str]) -> tuple[bytes, np.ndarray]:
    """Strings as one UTF-8 blob and the offsets of each (``len(texts) + 1``)."""
    enc = [t.encode("utf-8") for t in texts]
    off = np.zeros(len(enc) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, enc), dtype=np.int64, count=len(enc)), out=off[1:])
    return b"".join(enc), off


class TextStore:
    """Strings appended in chunks and kept as UTF-8 blobs with offsets; ``store[i]`` decodes one."""

    def __init__(self, chunk: int = CHUNK):
        self.chunk = chunk
        self.blobs: list[bytes] = []
        self.offsets: list[np.ndarray] = []

    def append_chunk(self, texts: Sequence[str]) -> None:
        self.append_encoded(*encode(texts))

    def append_encoded(self, blob: bytes, off: np.ndarray) -> None:
        assert not self.blobs or len(self.offsets[-1]) == self.chunk + 1, "only the last chunk may be short"
        self.blobs.append(blob)
        self.offsets.append(off)

    def __len__(self) -> int:
        return sum(len(o) - 1 for o in self.offsets)

    def __getitem__(self, i: int) -> str:
        c, k = divmod(int(i), self.chunk)
        off = self.offsets[c]
        return self.blobs[c][off[k]:off[k + 1]].decode("utf-8")

    def take(self, idx: np.ndarray) -> list[str]:
        """``[self[i] for i in idx]``, faster."""
        idx = np.asarray(idx, dtype=np.int64)
        c, k = np.divmod(idx, self.chunk)
        out: list[str] = []
        blobs, offsets = self.blobs, self.offsets
        for ci, ki in zip(c.tolist(), k.tolist()):
            off = offsets[ci]
            out.append(blobs[ci][off[ki]:off[ki + 1]].decode("utf-8"))
        return out


@dataclass
class StreamResult:
    """Removals as arrays, sorted by index (``dup_of``: the representative's row index, or -1
    for a contaminated row, whose match is in ``contaminated``)."""
    n_in: int
    index: np.ndarray
    dup_of: np.ndarray
    score: np.ndarray
    ids: TextStore
    contaminated: dict[int, Any] = field(default_factory=dict)  # index -> Removal
    clusters: int = 0
    against_counts: dict[str, int] = field(default_factory=dict)
    engine: str = "local"

    def summary(self) -> dict[str, Any]:
        reasons = {}
        near = len(self.index) - len(self.contaminated)
        if near:
            reasons["near_duplicate"] = near
        if self.contaminated:
            reasons["contaminated"] = len(self.contaminated)
        return {"documents_in": self.n_in, "clusters": self.clusters,
                "kept": self.n_in - len(self.index), "removed": len(self.index), "reasons": reasons,
                "against": dict(self.against_counts), "engine": self.engine}

    def removals(self) -> Iterator[Any]:
        """:class:`Removal` objects in index order, made as they are read."""
        from datakit.curate.dedup import Removal

        for i, d, s in zip(self.index.tolist(), self.dup_of.tolist(), self.score.tolist()):
            yield self.contaminated.get(i) or Removal(i, "near_duplicate", self.ids[d], round(s, 4))


# --------------------------------------------------------------------------- the passes

def _chunk_work(rows: JsonlRows, fields: Sequence[str], cfg: mh.MinHashConfig, engine: str,
                items: list[tuple[int, int, bytes]]):
    """One chunk of raw lines -> (texts, ids, judge scores, band keys, signatures or None); a
    bad row -> ("error", the message). Runs in a worker process (local engine)."""
    from datakit.curate.dedup import _judge_score, row_text

    try:
        rows = [parse_row(line, rows.fields, rows.files[k], i) for k, i, line in items]
    except UserError as e:
        return ("error", str(e))
    texts = [row_text(x, fields) for x in rows]
    scores = np.array([np.nan if s is None else s for s in map(_judge_score, rows)], dtype=np.float64)
    ids = encode([str(x["id"]) for x in rows])
    del rows
    sig = _signatures(texts, cfg, engine)
    b, r = cfg.band_rows()
    keys = mh.band_keys(sig, b, r)
    return encode(texts), ids, scores, keys, (None if cfg.verify else sig)


def workers() -> int:
    """Processes for the first pass: the CPUs this process may use, at most 4."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _ordered_map(work: Callable[[Any], Any], chunks: Iterator[Any], n_proc: int) -> Iterator[Any]:
    """``work(chunk)`` for every chunk, in order: on ``n_proc`` forked workers (at most one chunk
    waiting per worker, so memory stays bounded) or, with one, here."""
    if n_proc <= 1:
        yield from map(work, chunks)
        return
    import multiprocessing
    from collections import deque

    # fork: the workers need nothing but the arguments (the CLI's __main__ cannot be re-imported)
    with multiprocessing.get_context("fork").Pool(n_proc) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(work, (chunk,)))
            if len(pending) > n_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _results(rows: JsonlRows, cfg: mh.MinHashConfig, fields: Sequence[str], engine: str):
    """:func:`_chunk_work` of every chunk, in order (for Ray or one CPU, in this process)."""
    import functools

    work = functools.partial(_chunk_work, rows, tuple(fields), cfg, engine)
    n_proc = workers() if engine == "local" and len(rows) > CHUNK else 1
    return _ordered_map(work, rows.raw_chunks(CHUNK), n_proc)


def _first_pass(rows: JsonlRows, cfg: mh.MinHashConfig, fields: Sequence[str], tmp: Path,
                engine: str, progress: Callable[[int], None] | None):
    """Texts, ids and judge scores kept; band keys (and signatures without verification)
    written to ``tmp``."""
    b, _ = cfg.band_rows()
    texts, ids = TextStore(CHUNK), TextStore(CHUNK)
    scores: list[np.ndarray] = []
    band_files = [open(tmp / f"band{j}.u64", "wb") for j in range(b)]
    sig_file = open(tmp / "sig.u32", "wb") if not cfg.verify else None
    done = 0
    try:
        for res in _results(rows, cfg, fields, engine):
            if res[0] == "error":
                raise UserError(res[1])
            t, i, sc, keys, sig = res
            texts.append_encoded(*t)
            ids.append_encoded(*i)
            scores.append(sc)
            for j, fh in enumerate(band_files):
                np.ascontiguousarray(keys[:, j]).tofile(fh)
            if sig_file is not None:
                sig.tofile(sig_file)
            done += len(sc)
            if progress is not None:
                progress(done)
    finally:
        for fh in band_files:
            fh.close()
        if sig_file is not None:
            sig_file.close()
    return texts, ids, np.concatenate(scores)


def _signatures(texts: list[str], cfg: mh.MinHashConfig, engine: str) -> np.ndarray:
    if engine == "ray":
        from datakit.curate.ray_engine import ray_signatures

        return ray_signatures(texts, cfg)
    return mh.signatures(texts, cfg)


def _similarity(texts: TextStore, sig: np.ndarray | None, u: np.ndarray, v: np.ndarray,
                cfg: mh.MinHashConfig) -> np.ndarray:
    out = np.empty(len(u), dtype=np.float64)
    for s in range(0, len(u), PAIR_CHUNK):
        a, c = u[s:s + PAIR_CHUNK], v[s:s + PAIR_CHUNK]
        out[s:s + len(a)] = (mh.exact_jaccard(texts, a, c, cfg) if cfg.verify
                             else mh.estimated_jaccard(sig, a, c))
    return out


_SHARED: dict[str, Any] = {}


def _verify_shared(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _similarity(*_SHARED["texts_sig"], u, v, _SHARED["cfg"])


class Verifier:
    """Similarity of pairs (:func:`_similarity`), split over forked worker processes that share
    the texts with this one (copy on write: the blobs are only read) when more than one CPU is
    available; ``close`` ends them."""

    def __init__(self, texts: TextStore, sig: np.ndarray | None, cfg: mh.MinHashConfig, n_proc: int):
        import multiprocessing

        self.texts, self.sig, self.cfg, self.n_proc = texts, sig, cfg, n_proc
        self.pool = None
        if n_proc > 1:
            _SHARED.update(texts_sig=(texts, sig), cfg=cfg)
            self.pool = multiprocessing.get_context("fork").Pool(n_proc)

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        if self.pool is None or len(u) < MIN_POOL_PAIRS:
            return _similarity(self.texts, self.sig, u, v, self.cfg)
        pieces = max(self.n_proc, -(-len(u) // PAIR_CHUNK))
        cuts = np.linspace(0, len(u), pieces + 1).astype(np.int64)
        parts = self.pool.starmap(_verify_shared, [(u[a:b], v[a:b]) for a, b in zip(cuts[:-1], cuts[1:])])
        return np.concatenate(parts)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        _SHARED.clear()


def cluster_bands(n: int, band: Callable[[int], np.ndarray], texts: TextStore,
                  sig: np.ndarray | None, cfg: mh.MinHashConfig,
                  progress: Callable[[int], None] | None = None,
                  similarity: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Cluster labels (as :func:`minhash.components`) from the band keys, one band at a time."""
    similarity = similarity or (lambda u, v: _similarity(texts, sig, u, v, cfg))
    b, _ = cfg.band_rows()
    label = np.arange(n, dtype=np.int64)
    # a pair already joined through earlier bands needs no check: it would change no cluster
    for j, u, v in band_candidates(band, b, n, keep=lambda u, v: label[u] != label[v]):
        ok = similarity(u, v) >= cfg.threshold
        mh.merge_components(label, u[ok], v[ok])
        if progress is not None:
            progress(j + 1)
    return label


def dedup_stream(rows: JsonlRows, *, cfg: mh.MinHashConfig, fields: Sequence[str] = ("instruction",),
                 against=None, engine: str = "local",
                 progress: Callable[[str, int], None] | None = None) -> StreamResult:
    """:func:`dedup.dedup_rows` for :class:`JsonlRows`: the same clusters and removals."""
    from datakit.curate.dedup import decontaminate

    if engine not in ("local", "ray"):
        raise UserError(f"unknown engine {engine!r} (use 'local' or 'ray')")
    n = len(rows)
    step = (lambda what: (lambda k: progress(what, k))) if progress else (lambda what: None)
    with tempfile.TemporaryDirectory(prefix="datakit-dedup-") as d:
        tmp = Path(d)
        texts, ids, scores = _first_pass(rows, cfg, fields, tmp, engine, step("signatures"))
        sig = None if cfg.verify else np.memmap(tmp / "sig.u32", dtype=np.uint32, mode="r",
                                               shape=(n, cfg.num_perm))
        band = lambda j: np.fromfile(tmp / f"band{j}.u64", dtype=np.uint64)  # noqa: E731
        b, _ = cfg.band_rows()
        on_band = (lambda j: progress("bands", n * j // b)) if progress else None
        verifier = Verifier(texts, sig, cfg, workers() if engine == "local" and n > CHUNK else 1)
        try:
            label = cluster_bands(n, band, texts, sig, cfg, on_band, verifier)
            contaminated: dict[int, Any] = {}
            against_counts: dict[str, int] = {}
            if against is not None:
                for rem in decontaminate(sig, band, against, cfg, texts):
                    contaminated[rem.index] = rem
                    against_counts[rem.against] = against_counts.get(rem.against, 0) + 1
                for f in against.files:
                    against_counts.setdefault(str(f), 0)
            members, rep, sim, n_clusters = resolve(label, scores, cfg.threshold, verifier, band, b)
            del label
            if contaminated:
                gone = np.isin(members, np.fromiter(contaminated, dtype=np.int64))
                members, rep, sim = members[~gone], rep[~gone], sim[~gone]
        finally:
            verifier.close()
        del sig
    idx = np.concatenate([members, np.fromiter(contaminated, dtype=np.int64, count=len(contaminated))])
    dup = np.concatenate([rep, np.full(len(contaminated), -1, dtype=np.int64)])
    sc = np.concatenate([sim, np.zeros(len(contaminated))])
    order = np.argsort(idx, kind="stable")
    if progress:
        progress("clusters", n)
    return StreamResult(n, idx[order], dup[order], sc[order], ids, contaminated,
                        clusters=n_clusters, against_counts=against_counts, engine=engine)


# --------------------------------------------------------------------------- output

class _AtomicLines:
    """A JSONL file written through a temporary file in the same folder, renamed when done."""

    def __init__(self, path: Path):
        self.path = path
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        self.tmp = Path(tmp)
        self.fh = os.fdopen(fd, "w", encoding="utf-8", buffering=1 << 20)

    def write_text(self, text: str) -> None:
        self.fh.write(text)

    def commit(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


def _write_chunk(rows: JsonlRows, stage: str, n_out: int, job) -> tuple:
    """One chunk of raw lines -> ("ok", removed rows' text, kept rows' text per output), as
    :func:`dedup.write_outputs` writes them; a bad row -> ("error", the message)."""
    from datakit.curate.dedup import _clean, removed_row
    from datakit.records import dumps_line

    start, items, rems = job
    removed: list[str] = []
    kept: list[list[str]] = [[] for _ in range(n_out)]
    try:
        for pos, (k, i, line) in enumerate(items, start):
            row = parse_row(line, rows.fields, rows.files[k], i)
            rem = rems.get(pos)
            if rem is not None:
                removed.append(dumps_line(removed_row(row, rem, stage)))
            else:
                kept[k if n_out > 1 else 0].append(dumps_line(_clean(row)))
    except UserError as e:
        return ("error", str(e))
    return ("ok", "".join(removed), ["".join(x) for x in kept])


def _write_jobs(rows: JsonlRows, removals: Iterator[Any]):
    """(first row index, raw lines, {index: Removal}) for every chunk."""
    nxt = next(removals, None)
    start = 0
    for items in rows.raw_chunks(CHUNK):
        end = start + len(items)
        rems = {}
        while nxt is not None and nxt.index < end:
            rems[nxt.index] = nxt
            nxt = next(removals, None)
        yield start, items, rems
        start = end


def write_stream(inputs, result, out: str | os.PathLike, stage: str) -> list[Path]:
    """:func:`dedup.write_outputs` for streamed inputs: rows read again, chunk by chunk (made
    into output lines on worker processes), and written as they come (JSONL only: a Parquet
    output of a streamed input is refused before anything is written)."""
    import functools

    from datakit.curate.dedup import removed_path

    out_p = Path(out)
    as_dir = out_p.is_dir() or str(out).endswith(os.sep)
    names = [f.name for f in inputs.files]
    if as_dir and len(set(names)) != len(names):
        names = [f"{k:05d}-{nm}" for k, nm in enumerate(names)]
    targets = [out_p / nm for nm in names] if as_dir else [out_p]
    if any(p.suffix.lower() in (".parquet", ".pq") for p in targets):
        raise UserError("inputs this big are streamed and written as JSONL: name a .jsonl output "
                        "(or set DATAKIT_STREAM_BYTES higher)", path=str(out))
    removals = result.removals() if isinstance(result, StreamResult) else iter(result.removed)
    rows = inputs.rows
    work = functools.partial(_write_chunk, rows, stage, len(targets))
    writers: list[_AtomicLines] = []
    try:
        if as_dir:
            out_p.mkdir(parents=True, exist_ok=True)
        rem_w = _AtomicLines(removed_path(out))
        writers.append(rem_w)
        outs = [_AtomicLines(p) for p in targets]
        writers.extend(outs)
        n_proc = workers() if len(rows) > CHUNK else 1
        for res in _ordered_map(work, _write_jobs(rows, removals), n_proc):
            if res[0] == "error":
                raise UserError(res[1])
            rem_w.write_text(res[1])
            for w, text in zip(outs, res[2]):
                w.write_text(text)
        for w in writers:
            w.commit()
    except OSError as e:
        for w in writers:
            w.discard()
        what = e.strerror or str(e) or type(e).__name__
        raise UserError(f"cannot write output ({what})", path=str(getattr(e, "filename", None) or out)) from None
    except BaseException:
        for w in writers:
            w.discard()
        raise
    return [w.path for w in writers]
