"""Record-level curation: load inputs, novelty filter, near-duplicate removal, decontamination,
and writing kept and removed records.

Library entry points (the CLI is a thin layer over them):

* :func:`load_inputs` - rows from JSONL/Parquet files or run directories, validated.
* :func:`filter_rows` - rule filters + the greedy ROUGE-L novelty filter.
* :func:`dedup_rows` - MinHash/LSH near-duplicate clusters (local numpy or Ray engine) and
  decontamination against other files.
* :func:`write_outputs` - kept rows (every input field, input order) and removed rows beside
  them, both written atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from datakit.curate import minhash as mh
from datakit.curate.clusters import resolve
from datakit.curate.rouge import RougeLNovelty
from datakit.curate.rules import RuleFilter, RulesConfig, check_turns, conversation_text
from datakit.errors import UserError
from datakit.records import make_id, read_table, write_table

TEXT_FIELDS = ("instruction", "input", "output")
AGAINST_FALLBACK = ("instruction", "prompt", "question", "text", "input", "content")


@dataclass
class Inputs:
    rows: list[dict[str, Any]]
    source: list[int]  # index into files for each row
    files: list[Path]
    reviewed: dict[str, int] = field(default_factory=dict)  # rows dropped/edited by RUN/reviews.jsonl


def _resolve(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        if (p / "records.jsonl").exists():
            return p / "records.jsonl"
        raise UserError("is a folder without records.jsonl (expected a run directory or a file)",
                        path=str(p))
    if not p.exists():
        raise UserError("file not found", path=str(p))
    return p


def load_inputs(paths: Sequence[str | os.PathLike], fields: Sequence[str] = ("instruction",),
                *, role: str = "input", fallback: Sequence[str] = ()) -> Inputs:
    """Read and validate rows. Each row needs every field in ``fields`` except ``input`` and
    ``output`` (missing means empty) as text; a row without ``id`` gets a content id. With
    ``fallback``, a file lacking the first field uses the first fallback field it has."""
    if not paths:
        raise UserError(f"no {role} files given")
    if role == "input":
        from datakit.curate.dedup_stream import streamed_inputs

        big = streamed_inputs(paths, fields)
        if big is not None:
            return big
    rows: list[dict[str, Any]] = []
    source: list[int] = []
    files: list[Path] = []
    reviewed: dict[str, int] = {}
    for k, raw in enumerate(paths):
        p = _resolve(raw)
        files.append(p)
        table = read_table(p)
        if role == "input":  # an input in a run directory honours its human verdicts
            table = _reviewed(table, raw, reviewed)
        use = list(fields)
        if fallback and table and not any(f in table[0] for f in fields):
            have = [f for f in fallback if f in table[0]]
            if not have:
                raise UserError(f"no text field found (looked for {', '.join(fallback)})",
                                path=str(p), line=1)
            use = [have[0]]
        for i, row in enumerate(table, 1):
            rows.append(checked_row(row, use, p, i))
            source.append(k)
        if role != "input":
            for r in rows[len(rows) - len(table):]:
                r["_text_fields"] = use
    if not rows:
        raise UserError(f"no records in {role} ({', '.join(str(f) for f in files)})")
    return Inputs(rows, source, files, reviewed)


def checked_row(row: dict[str, Any], use: Sequence[str], path: Path, line: int) -> dict[str, Any]:
    """``row`` with every field in ``use`` checked (text; ``input``/``output`` may be missing)
    and an ``id`` (a content id when it has none)."""
    for f in use:
        v = row.get(f)
        if v is None and f in ("input", "output"):
            continue
        if v is None:
            raise UserError("missing field (is this the right column? see --fields)",
                            path=str(path), line=line, field=f)
        if not isinstance(v, str):
            raise UserError(f"expected text, got {type(v).__name__}", path=str(path),
                            line=line, field=f)
    rid = row.get("id")
    if rid is None:
        row = {"id": make_id(*(str(row.get(f) or "") for f in use)), **row}
    elif not isinstance(rid, (str, int)):
        raise UserError(f"id must be text or a number, got {type(rid).__name__}",
                        path=str(path), line=line, field="id")
    return row


def _reviewed(table: list[dict[str, Any]], path: str | os.PathLike, counts: dict[str, int]) -> list[dict[str, Any]]:
    from datakit.reviews import apply_to_rows, reviews_for

    table, c = apply_to_rows(table, reviews_for([path]))
    for k, v in c.items():
        if v:
            counts[k] = counts.get(k, 0) + v
    return table


def row_text(row: dict[str, Any], fields: Sequence[str]) -> str:
    """The text a record is compared by: its ``fields`` joined, or for a multi-turn record
    (``messages``) the whole conversation, so ROUGE-L and dedup see every turn."""
    conv = conversation_text(row)
    if conv is not None:
        return conv
    return "\n".join(str(row.get(f) or "") for f in fields if row.get(f))


# --------------------------------------------------------------------------- results

@dataclass
class Removal:
    index: int
    reason: str  # rule reason code, "rouge_l", "near_duplicate" or "contaminated"
    duplicate_of: str | None = None
    score: float | None = None
    against: str | None = None


@dataclass
class Result:
    n_in: int
    kept: list[int]
    removed: list[Removal]
    clusters: int = 0  # clusters with more than one member (dedup)
    against_counts: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    engine: str = "local"

    def summary(self) -> dict[str, Any]:
        return {"documents_in": self.n_in, "clusters": self.clusters, "kept": len(self.kept),
                "removed": len(self.removed), "reasons": dict(self.reasons),
                "against": dict(self.against_counts), "engine": self.engine}


def _finish(n: int, removed: list[Removal], **kw: Any) -> Result:
    gone = {r.index for r in removed}
    reasons: dict[str, int] = {}
    for r in removed:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    removed.sort(key=lambda r: r.index)
    return Result(n, [i for i in range(n) if i not in gone], removed, reasons=reasons, **kw)


# --------------------------------------------------------------------------- filter

def filter_rows(rows: list[dict[str, Any]], *, threshold: float = 0.7, tokenizer: str = "rouge",
                fields: Sequence[str] = ("instruction",), rules: RulesConfig | None = None,
                progress: Callable[[int], None] | None = None) -> Result:
    """Rule filters (when ``rules`` is given) then the greedy ROUGE-L novelty filter, in input
    order: a row is dropped if its ROUGE-L F against an earlier kept row is above ``threshold``."""
    if not 0.0 <= threshold <= 1.0:
        raise UserError("--rouge-l must be between 0 and 1")
    novelty = RougeLNovelty(threshold, tokenizer)
    rule_filter = RuleFilter(rules) if rules is not None else None
    removed: list[Removal] = []
    for i, row in enumerate(rows):
        text = row_text(row, fields)
        if rule_filter is not None:
            verdicts = check_turns(rule_filter, row) if "messages" in row else \
                rule_filter.check(row.get("instruction") or text)  # every user turn of a conversation
            failed = [v for v in verdicts if not v.passed]
            if failed:
                removed.append(Removal(i, failed[0].reason or failed[0].filter, None,
                                       failed[0].score))
                continue
        kept, score, nearest = novelty.offer(text, str(row["id"]))
        if not kept:
            removed.append(Removal(i, "rouge_l", nearest, round(score, 6)))
        if progress is not None and (i + 1) % 500 == 0:
            progress(i + 1)
    if progress is not None:
        progress(len(rows))
    return _finish(len(rows), removed)


# --------------------------------------------------------------------------- dedup

def _judge_score(row: dict[str, Any]) -> float | None:
    j = row.get("judge")
    if isinstance(j, dict):
        s = j.get("score")
        if isinstance(s, (int, float)) and not isinstance(s, bool):
            return float(s)
    return None


def signatures_local(texts: Sequence[str], cfg: mh.MinHashConfig, batch: int = 50_000,
                     progress: Callable[[int], None] | None = None) -> np.ndarray:
    out = np.empty((len(texts), cfg.num_perm), dtype=np.uint32)
    for s in range(0, len(texts), batch):
        out[s:s + batch] = mh.signatures(texts[s:s + batch], cfg)
        if progress is not None:
            progress(min(s + batch, len(texts)))
    return out


def pair_similarity(texts: Sequence[str], sig: np.ndarray, u: np.ndarray, v: np.ndarray,
                    cfg: mh.MinHashConfig, other_texts: Sequence[str] | None = None,
                    other_sig: np.ndarray | None = None) -> np.ndarray:
    """Similarity of the pairs ``(texts[u], other[v])``: the exact Jaccard of their shingle
    sets when ``cfg.verify`` (the default), else the signature estimate."""
    if cfg.verify:
        return mh.exact_jaccard(texts, u, v, cfg, other=other_texts)
    return mh.estimated_jaccard(sig, u, v, other_sig)


def verify_edges(texts: Sequence[str], sig: np.ndarray, u: np.ndarray, v: np.ndarray,
                 cfg: mh.MinHashConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs kept when their similarity reaches the threshold, then components.
    Returns (labels, u, v, similarity) for the kept edges. Both engines call this."""
    j = pair_similarity(texts, sig, u, v, cfg)
    ok = j >= cfg.threshold
    u, v, j = u[ok], v[ok], j[ok]
    return mh.components(sig.shape[0], u, v), u, v, j


def clusters_from_keys(keys: np.ndarray, sig: np.ndarray, cfg: mh.MinHashConfig,
                       texts: Sequence[str]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs from band keys, verified (:func:`verify_edges`), then components."""
    u, v = mh.bucket_pairs(keys)
    return verify_edges(texts, sig, u, v, cfg)


def resolve_clusters(rows: list[dict[str, Any]], labels: np.ndarray, sig: np.ndarray,
                     skip: set[int], keys: np.ndarray, texts: Sequence[str],
                     cfg: mh.MinHashConfig) -> tuple[list[Removal], int]:
    """One representative per cluster (the highest judge score, else and on ties the earliest
    record); a member is removed only when it is within the threshold of its representative,
    the others are resolved greedily among themselves (:func:`clusters.resolve`). ``skip``: records already
    removed (decontamination)."""
    scores = np.array([np.nan if (s := _judge_score(r)) is None else s for r in rows], dtype=np.float64)

    m, rep, sim, n_clusters = resolve(labels, scores, cfg.threshold,
                                      lambda u, v: pair_similarity(texts, sig, u, v, cfg),
                                      lambda j: keys[:, j], keys.shape[1])
    removed = [Removal(i, "near_duplicate", str(rows[r]["id"]), round(s, 4))
               for i, r, s in zip(m.tolist(), rep.tolist(), sim.tolist()) if i not in skip]
    return removed, n_clusters


def decontaminate(sig: np.ndarray, keys: np.ndarray | Callable[[int], np.ndarray], against: Inputs,
                  cfg: mh.MinHashConfig, texts: Sequence[str] | None = None) -> list[Removal]:
    """Records whose similarity (exact Jaccard when ``cfg.verify``, else estimated) with any
    item of ``against`` reaches the threshold; each is matched to its most similar item
    (earliest on ties). ``keys``: the band keys ``(n, bands)``, or a function giving band
    ``b``'s column (the streamed path reads them from disk)."""
    column = keys if callable(keys) else (lambda band: keys[:, band])
    etexts = [row_text(r, r["_text_fields"]) for r in against.rows]
    esig = mh.signatures(etexts, cfg)
    b, r = cfg.band_rows()
    ekeys = mh.band_keys(esig, b, r)
    us, vs = [], []
    for band in range(b):
        i, j = mh.key_join(column(band), ekeys[:, band])
        us.append(i)
        vs.append(j)
    u = np.concatenate(us)
    v = np.concatenate(vs)
    if len(u) == 0:
        return []
    pair = mh.unique_sorted(u * len(etexts) + v)
    u, v = pair // len(etexts), pair % len(etexts)
    if texts is not None:
        jac = pair_similarity(texts, sig, u, v, cfg, etexts, esig)
    else:
        jac = mh.estimated_jaccard(sig, u, v, esig)
    ok = jac >= cfg.threshold
    u, v, jac = u[ok], v[ok], jac[ok]
    best: dict[int, tuple[float, int]] = {}
    for a, e, s in zip(u.tolist(), v.tolist(), jac.tolist()):
        cur = best.get(a)
        if cur is None or s > cur[0] or (s == cur[0] and e < cur[1]):
            best[a] = (s, e)
    out = []
    for a, (s, e) in sorted(best.items()):
        src = str(against.files[against.source[e]])
        out.append(Removal(a, "contaminated", str(against.rows[e]["id"]), round(s, 4), src))
    return out


def dedup_rows(rows: list[dict[str, Any]], *, cfg: mh.MinHashConfig | None = None,
               fields: Sequence[str] = ("instruction",), against: Inputs | None = None,
               engine: str = "local", progress: Callable[[str, int], None] | None = None
               ) -> Result:
    """Near-duplicate removal with MinHash/LSH (and decontamination against ``against``)."""
    cfg = cfg or mh.MinHashConfig()
    cfg.validate()
    from datakit.curate.dedup_stream import JsonlRows, dedup_stream

    if isinstance(rows, JsonlRows):  # too big to hold as Python rows: streamed
        return dedup_stream(rows, cfg=cfg, fields=fields, against=against, engine=engine,
                            progress=progress)
    texts = [row_text(r, fields) for r in rows]
    b, r = cfg.band_rows()
    step = (lambda k: progress("signatures", k)) if progress else None
    if engine == "ray":
        from datakit.curate.ray_engine import ray_signatures_and_edges

        sig, keys, u, v = ray_signatures_and_edges(texts, cfg)
        labels, *_ = verify_edges(texts, sig, u, v, cfg)
    elif engine == "local":
        sig = signatures_local(texts, cfg, progress=step)
        keys = mh.band_keys(sig, b, r)
        labels, *_ = clusters_from_keys(keys, sig, cfg, texts)
    else:
        raise UserError(f"unknown engine {engine!r} (use 'local' or 'ray')")
    removed: list[Removal] = []
    against_counts: dict[str, int] = {}
    if against is not None:
        removed = decontaminate(sig, keys, against, cfg, texts)
        for rem in removed:
            against_counts[rem.against] = against_counts.get(rem.against, 0) + 1
        for f in against.files:
            against_counts.setdefault(str(f), 0)
    dup, n_clusters = resolve_clusters(rows, labels, sig, {x.index for x in removed}, keys, texts, cfg)
    if progress:
        progress("clusters", len(rows))
    return _finish(len(rows), removed + dup, clusters=n_clusters, against_counts=against_counts,
                   engine=engine)


# --------------------------------------------------------------------------- outputs

def removed_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.is_dir() or str(out).endswith(os.sep):
        return out / "removed.jsonl"
    return out.with_name(out.name + ".removed.jsonl")


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "_text_fields"}


def removed_row(row: dict[str, Any], r: Removal, stage: str) -> dict[str, Any]:
    """A removed row as written: every input field, then status, reason and the verdict."""
    row = dict(_clean(row))
    row["status"] = "rejected"
    row["reason"] = r.reason
    row["duplicate_of"] = r.duplicate_of
    row["similarity"] = r.score
    if r.against:
        row["matched_file"] = r.against
    verdicts = list(row.get("filters") or []) if isinstance(row.get("filters"), list) else []
    verdicts.append({"filter": stage, "passed": False, "score": r.score, "reason": r.reason,
                     "detail": {"duplicate_of": r.duplicate_of}})
    row["filters"] = verdicts
    return row


def write_outputs(inputs: Inputs, result: Result, out: str | os.PathLike, stage: str) -> list[Path]:
    """Write kept rows to ``out`` (a file, or a folder: one file per input file, same names) and
    removed rows to :func:`removed_path`. Returns the paths written."""
    from datakit.curate.dedup_stream import JsonlRows, write_stream

    if isinstance(inputs.rows, JsonlRows):
        return write_stream(inputs, result, out, stage)
    rows = inputs.rows
    rem_rows = [removed_row(rows[r.index], r, stage) for r in result.removed]
    out_p = Path(out)
    written: list[Path] = []
    try:
        if out_p.is_dir() or str(out).endswith(os.sep):
            out_p.mkdir(parents=True, exist_ok=True)
            names = [f.name for f in inputs.files]
            if len(set(names)) != len(names):
                names = [f"{k:05d}-{n}" for k, n in enumerate(names)]
            per_file: list[list[dict[str, Any]]] = [[] for _ in inputs.files]
            for i in result.kept:
                per_file[inputs.source[i]].append(_clean(rows[i]))
            targets = [(out_p / name, part) for name, part in zip(names, per_file)]
        else:
            targets = [(out_p, [_clean(rows[i]) for i in result.kept])]
        rp = removed_path(out)
        # build every Parquet table before writing anything: a mixed schema fails here, not
        # after some files are already written
        import pyarrow as pa

        for path, part in targets:
            if path.suffix.lower() in (".parquet", ".pq"):
                pa.Table.from_pylist(part)
        write_table(rp, rem_rows)
        written.append(rp)
        for path, part in targets:
            write_table(path, part)
            written.append(path)
    except UserError:
        raise
    except OSError as e:  # a full disk, a denied permission, a missing folder: say which
        what = e.strerror or str(e) or type(e).__name__
        raise UserError(f"cannot write output ({what})", path=str(getattr(e, "filename", None) or out)) from None
    except Exception as e:  # pyarrow's errors for mixed column types (ArrowInvalid, TypeError, …)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot write output: mixed schemas across records ({msg})",
                        path=str(out)) from None
    return written
