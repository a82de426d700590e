"""--engine ray on a real local Ray (2 CPUs) gives the local engine's result. Slow: Ray start-up."""

import pytest

from datakit.curate._synth import Synth
from datakit.curate.dedup import dedup_rows
from datakit.curate.minhash import MinHashConfig


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    from datakit.curate.ray_engine import ensure_ray

    ensure_ray()
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_equals_local(ray_session):
    texts, _ = Synth(31).corpus(3000, dup_rate=0.3)
    # a big bucket (> 64 identical texts) exercises the star edges too
    texts += ["Write a short poem about the sea."] * 70
    rows = [{"id": f"r{i}", "instruction": t} for i, t in enumerate(texts)]
    key = lambda res: [(r.index, r.reason, r.duplicate_of, r.score) for r in res.removed]
    # default (exact Jaccard verification) and the signature estimate
    for cfg in (MinHashConfig(), MinHashConfig(verify=False)):
        local = dedup_rows(rows, cfg=cfg, engine="local")
        ray_res = dedup_rows(rows, cfg=cfg, engine="ray")
        assert key(local) == key(ray_res) and local.removed
        assert local.kept == ray_res.kept and local.clusters == ray_res.clusters
