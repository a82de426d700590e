"""The Ray engine for dedup: the same computation as the local engine, as Ray Data operations.

* signatures and band keys: ``map_batches`` over the documents (each worker runs the same
  numpy code as the local engine; signatures are deterministic across processes);
* bucket grouping: the (band, key, document) rows are grouped with ``groupby`` and each
  bucket emits its candidate pairs (all pairs for buckets up to 64 members, a star to the
  earliest member above that: exactly :func:`datakit.curate.minhash.bucket_pairs`);
* the candidate pairs (proportional to the duplicates, not to the corpus) come back to the
  driver, which verifies them (exact Jaccard of the shingle sets by default, shingling again
  only the documents named in pairs; else the signature estimate) and resolves clusters with
  the same code as the local engine (:func:`datakit.curate.dedup.verify_edges`).

Ray is reached at ``RAY_ADDRESS`` when set, else a local Ray with 2 CPUs is started.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from datakit.curate import minhash as mh
from datakit.errors import UserError

MAX_BUCKET = 64


def ensure_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'datakit[ray]'") from None
    if not ray.is_initialized():
        addr = os.environ.get("RAY_ADDRESS")
        try:
            if addr:
                ray.init(address=addr, log_to_driver=False)
            else:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        except Exception as e:  # connection errors come in many types
            raise UserError(f"cannot start or reach Ray ({str(e).splitlines()[0]})") from None
    import logging

    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
    return ray


def _sig_batch(batch: dict, cfg: mh.MinHashConfig) -> dict:
    texts = [str(t) for t in batch["text"]]
    sig = mh.signatures(texts, cfg)
    b, r = cfg.band_rows()
    keys = mh.band_keys(sig, b, r)
    return {"idx": batch["idx"], "sig": sig, "keys": keys}


def _explode(batch: dict) -> dict:
    idx = np.asarray(batch["idx"], dtype=np.int64)
    keys = np.asarray(batch["keys"]).astype(np.uint64)
    nb = keys.shape[1]
    return {"band": np.tile(np.arange(nb, dtype=np.int64), len(idx)),
            "key": keys.reshape(-1).view(np.int64),
            "idx": np.repeat(idx, nb)}


def _bucket_edges(group: dict) -> dict:
    idx = np.sort(np.asarray(group["idx"], dtype=np.int64))
    s = len(idx)
    if s < 2:
        return {"u": np.zeros(0, np.int64), "v": np.zeros(0, np.int64)}
    if s <= MAX_BUCKET:
        iu, iv = np.triu_indices(s, 1)
        return {"u": idx[iu], "v": idx[iv]}
    return {"u": np.full(s - 1, idx[0]), "v": idx[1:]}


def _signature_dataset(ray, texts: Sequence[str], cfg: mh.MinHashConfig, block: int):
    """The materialised Ray dataset of (idx, sig, keys) rows, and its signatures and band keys."""
    import pandas as pd

    n = len(texts)
    frames = [pd.DataFrame({"idx": np.arange(s, min(s + block, n)), "text": list(texts[s:s + block])})
              for s in range(0, n, block)]
    ds = ray.data.from_pandas(frames)
    sigs = ds.map_batches(_sig_batch, fn_kwargs={"cfg": cfg}, batch_format="numpy",
                          batch_size=block).materialize()
    sig = np.empty((n, cfg.num_perm), dtype=np.uint32)
    b, r = cfg.band_rows()
    keys = np.empty((n, b), dtype=np.uint64)
    for batch in sigs.iter_batches(batch_format="numpy", batch_size=None):
        i = np.asarray(batch["idx"], dtype=np.int64)
        sig[i] = np.asarray(batch["sig"])
        keys[i] = np.asarray(batch["keys"]).astype(np.uint64)
    return sigs, sig, keys


def ray_signatures(texts: Sequence[str], cfg: mh.MinHashConfig, block: int = 20_000) -> np.ndarray:
    """Signatures of ``texts`` computed on Ray workers (the streamed dedup path sends each chunk
    of documents this way; bucketing and verification stay on the driver)."""
    return _signature_dataset(ensure_ray(), texts, cfg, block)[1]


def ray_signatures_and_edges(texts: Sequence[str], cfg: mh.MinHashConfig, block: int = 20_000
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Signatures, band keys and candidate pairs (u < v, unique) computed on Ray."""
    ray = ensure_ray()
    n = len(texts)
    sigs, sig, keys = _signature_dataset(ray, texts, cfg, block)
    edges = (sigs.map_batches(_explode, batch_format="numpy")
             .groupby(["band", "key"], num_partitions=4).map_groups(_bucket_edges, batch_format="numpy"))
    us, vs = [], []
    for batch in edges.iter_batches(batch_format="numpy", batch_size=None):
        us.append(np.asarray(batch["u"], dtype=np.int64))
        vs.append(np.asarray(batch["v"], dtype=np.int64))
    u = np.concatenate(us) if us else np.zeros(0, np.int64)
    v = np.concatenate(vs) if vs else np.zeros(0, np.int64)
    if len(u):
        pair = mh.unique_sorted(u * n + v)
        u, v = pair // n, pair % n
    return sig, keys, u, v
