"""The streamed dedup path (inputs too big to hold as rows) gives the in-memory path's clusters,
removals and output files; chunk boundaries and incremental cluster merging change nothing.
Real files, the real CLI; the streaming threshold is lowered so that small inputs stream."""

import json

import numpy as np
import pytest

from datakit.cli import main
from datakit.curate import dedup_stream as ds
from datakit.curate import minhash as mh
from datakit.curate._synth import Synth
from datakit.curate.dedup import dedup_rows, load_inputs, write_outputs


def _rows(n=3000, seed=31):
    texts, _ = Synth(seed).corpus(n, dup_rate=0.3)
    texts += ["Write a short poem about the sea."] * 70  # a bucket above 64: star edges
    rows = [{"id": f"r{i}", "instruction": t} for i, t in enumerate(texts)]
    for i in range(0, len(rows), 7):  # judge scores decide some representatives
        rows[i]["judge"] = {"score": (i * 13) % 5}
    return rows


def run(*args):
    with pytest.raises(SystemExit) as e:
        main(list(map(str, args)))
    return e.value.code


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _key(res):
    removals = res.removals() if isinstance(res, ds.StreamResult) else res.removed
    return [(r.index, r.reason, r.duplicate_of, r.score) for r in removals]


@pytest.mark.parametrize("chunk", [1000, 457])  # chunks that divide the input and ones that don't
@pytest.mark.parametrize("verify", [True, False])
def test_streamed_equals_in_memory(tmp_path, monkeypatch, chunk, verify):
    rows = _rows()
    f = _write(tmp_path / "in.jsonl", rows)
    cfg = mh.MinHashConfig(verify=verify)
    mem = dedup_rows(load_inputs([f]).rows, cfg=cfg)
    monkeypatch.setenv("DATAKIT_STREAM_BYTES", "1")
    monkeypatch.setattr(ds, "CHUNK", chunk)
    monkeypatch.setattr(ds, "PAIR_CHUNK", 1000)  # several pair chunks per band
    monkeypatch.setattr(ds, "MIN_POOL_PAIRS", 0)  # every band's pairs checked on the workers
    data = load_inputs([f])
    assert isinstance(data.rows, ds.JsonlRows) and len(data.rows) == len(rows)
    res = dedup_rows(data.rows, cfg=cfg)
    assert isinstance(res, ds.StreamResult)
    assert _key(res) == _key(mem) and len(mem.removed) > 100
    assert res.summary() == mem.summary()


def test_merge_components_equals_components():
    rng = np.random.default_rng(3)
    n = 5000
    u = rng.integers(0, n, 4000)
    v = rng.integers(0, n, 4000)
    want = mh.components(n, u, v)
    label = np.arange(n, dtype=np.int64)
    for part in np.array_split(np.arange(len(u)), 7):  # edges arriving in several calls
        mh.merge_components(label, u[part], v[part])
    assert np.array_equal(label, want)


def test_cli_streamed_outputs_match(tmp_path, monkeypatch):
    rows = _rows(1500, seed=5)
    rows[3].pop("id")  # a content id is made, as in memory
    f = _write(tmp_path / "in.jsonl", rows)
    ev = _write(tmp_path / "eval.jsonl", [{"prompt": rows[10]["instruction"]}])
    args = ["dedup", f, "--against", ev, "-o"]
    assert run(*args, tmp_path / "mem.jsonl") == 0
    monkeypatch.setenv("DATAKIT_STREAM_BYTES", "1")
    monkeypatch.setattr(ds, "CHUNK", 400)
    assert run(*args, tmp_path / "str.jsonl") == 0
    for a, b in (("mem.jsonl", "str.jsonl"), ("mem.jsonl.removed.jsonl", "str.jsonl.removed.jsonl")):
        assert (tmp_path / a).read_text() == (tmp_path / b).read_text()
    removed = [json.loads(x) for x in (tmp_path / "str.jsonl.removed.jsonl").read_text().splitlines()]
    assert {x["reason"] for x in removed} == {"near_duplicate", "contaminated"}


def test_streamed_bad_row_names_line(tmp_path, monkeypatch, capsys):
    f = tmp_path / "in.jsonl"
    f.write_text('{"id": 1, "instruction": "a b c"}\n{"id": 2, "instruction": 5}\n'
                 '{"id": 3, "instruction": "d e f"}\n')
    monkeypatch.setenv("DATAKIT_STREAM_BYTES", "1")
    monkeypatch.setattr(ds, "CHUNK", 1)  # chunks go to worker processes; the error comes back
    assert run("dedup", f, "-o", tmp_path / "o.jsonl") == 2
    err = capsys.readouterr().err
    assert "in.jsonl:2" in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


def test_streamed_parquet_output_refused(tmp_path, monkeypatch, capsys):
    f = _write(tmp_path / "in.jsonl", _rows(200))
    monkeypatch.setenv("DATAKIT_STREAM_BYTES", "1")
    assert run("dedup", f, "-o", tmp_path / "o.parquet") == 2
    assert "JSONL" in capsys.readouterr().err
    assert not list(tmp_path.glob("o.parquet*"))


@pytest.mark.slow
def test_streamed_ray_equals_local(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from datakit.curate.ray_engine import ensure_ray

    rows = _rows(2000, seed=9)
    f = _write(tmp_path / "in.jsonl", rows)
    mem = dedup_rows(load_inputs([f]).rows, cfg=mh.MinHashConfig())
    monkeypatch.setenv("DATAKIT_STREAM_BYTES", "1")
    monkeypatch.setattr(ds, "CHUNK", 700)
    ray = ensure_ray()
    try:
        res = dedup_rows(load_inputs([f]).rows, cfg=mh.MinHashConfig(), engine="ray")
    finally:
        ray.shutdown()
    assert _key(res) == _key(mem) and mem.removed


def test_pair_in_a_big_bucket_earlier_is_still_checked_later():
    """A pair inside a big bucket of an earlier band (> 64: only star edges to its earliest
    member were candidates there) that shares a small bucket in a later band is verified there,
    as in memory. (An earlier version skipped every pair that shared any earlier band's key.)"""
    from datakit.curate.dedup import verify_edges

    cfg = mh.MinHashConfig()
    b, _ = cfg.band_rows()
    n = 71
    texts = ["a completely different text about something else entirely here"]
    texts += [f"write a long story about the number {i // 2} and its friends" for i in range(n - 1)]
    keys = np.arange(n * b, dtype=np.uint64).reshape(n, b) + np.uint64(10_000)
    keys[:, 0] = 7  # band 0: one big bucket, star edges from doc 0 (dissimilar to all)
    keys[1:, 1] = np.arange(n - 1, dtype=np.uint64) // 2  # band 1: pairs of equal texts
    store = ds.TextStore(chunk=50)
    store.append_chunk(texts[:50])
    store.append_chunk(texts[50:])
    got = ds.cluster_bands(n, lambda j: np.ascontiguousarray(keys[:, j]), store, None, cfg)
    want, *_ = verify_edges(texts, np.zeros((n, 1)), *mh.bucket_pairs(keys), cfg)
    assert np.array_equal(got, want) and (want != np.arange(n)).sum() == (n - 1) // 2


def test_cli_streamed_folder_output_matches(tmp_path, monkeypatch):
    rows = _rows(1200, seed=8)
    a = _write(tmp_path / "a.jsonl", rows[:700])
    (tmp_path / "sub").mkdir()
    b = _write(tmp_path / "sub" / "a.jsonl", rows[700:])  # same name: outputs get numbered
    assert run("dedup", a, b, "-o", str(tmp_path / "mem") + "/") == 0
    monkeypatch.setenv("DATAKIT_STREAM_BYTES", "1")
    monkeypatch.setattr(ds, "CHUNK", 300)  # chunks straddle the two files
    assert run("dedup", a, b, "-o", str(tmp_path / "str") + "/") == 0
    names = sorted(p.name for p in (tmp_path / "mem").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "str").iterdir()) and len(names) == 3
    for nm in names:
        assert (tmp_path / "mem" / nm).read_text() == (tmp_path / "str" / nm).read_text()


def _chains(families=25, length=12, seed=5):
    """Chains of documents: each one word away from the last (Jaccard ~0.85 on word 3-grams),
    three steps apart below 0.7, so connected components join documents that are far apart."""
    import random

    rng = random.Random(seed)
    words = Synth(seed).vocab
    rows = []
    for f in range(families):
        doc = [rng.choice(words) for _ in range(40)]
        for k in range(length):
            if k:
                doc = list(doc)
                doc[(3 * k + 1) % 40] = f"edit{f}x{k}"
            rows.append({"id": f"c{f}-{k}", "instruction": " ".join(doc)})
    return rows


def _jac(a, b):
    def sh(t):
        w = mh._WORDS.findall(mh.normalize(t))
        return {" ".join(w[i:i + 3]) for i in range(max(1, len(w) - 2))}

    x, y = sh(a), sh(b)
    return len(x & y) / len(x | y)


@pytest.mark.parametrize("verify", [True, False])
def test_chains_are_split_not_removed_wholesale(tmp_path, monkeypatch, verify):
    """Components chain (A~B, B~C, A and C far apart); a document is removed only when it is
    within the threshold of the kept document it names, and no two kept documents are a
    near-duplicate pair; the streamed path gives the same removals."""
    from datakit.curate.dedup import clusters_from_keys

    rows = _chains() + _rows(800)
    cfg = mh.MinHashConfig(verify=verify)
    texts = [r["instruction"] for r in rows]
    sig = mh.signatures(texts, cfg)
    labels, *_ = clusters_from_keys(mh.band_keys(sig, *cfg.band_rows()), sig, cfg, texts)
    chained = [i for i in range(len(rows)) if labels[i] != i and _jac(texts[i], texts[labels[i]]) < 0.6]
    assert len(chained) > 50  # the corpus does chain: old wholesale removal would take these
    f = _write(tmp_path / "in.jsonl", rows)
    mem = dedup_rows(load_inputs([f]).rows, cfg=cfg)
    by_id = {r["id"]: i for i, r in enumerate(rows)}
    kept = set(mem.kept)
    for r in mem.removed:
        rep = by_id[r.duplicate_of]
        assert rep in kept and r.score >= cfg.threshold
        if verify:
            assert _jac(texts[r.index], texts[rep]) >= cfg.threshold
    chain_kept = sorted(i for i in kept if rows[i]["id"].startswith("c"))
    for a in chain_kept:  # no near-duplicate pair left among the kept chain documents
        for b in chain_kept:
            if verify and a < b and rows[a]["id"].split("-")[0] == rows[b]["id"].split("-")[0]:
                assert _jac(texts[a], texts[b]) < 0.8  # (0.8: an LSH miss at 0.7 is possible)
    assert sum(1 for r in mem.removed if rows[r.index]["id"].startswith("c")) >= 25 * 4
    monkeypatch.setenv("DATAKIT_STREAM_BYTES", "1")
    monkeypatch.setattr(ds, "CHUNK", 500)
    res = dedup_rows(load_inputs([f]).rows, cfg=cfg)
    assert _key(res) == _key(mem)
    assert res.summary() == mem.summary()
