"""One process of the two-process training test (tests/test_train_ddp.py), on the CPU with gloo.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python tests/ddp_worker.py SPEC.json

SPEC (JSON): ``config`` (TrainConfig fields), ``out_by_rank`` (each rank's --out), ``self_init``
(per rank: join the process group here, with a short collective timeout so that a rank stuck in
a mismatched all-reduce fails instead of hanging; otherwise the trainer joins it, as under
torchrun), ``timeout_s`` and ``result`` (a path with ``{rank}``: the trained LoRA weights and
the summary). A UserError exits 2 with its one line on stderr, like the CLI.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta


def main(spec_path: str) -> int:
    import torch

    torch.set_num_threads(1)
    with open(spec_path) as f:
        spec = json.load(f)
    rank = int(os.environ["RANK"])
    if spec["self_init"][rank]:
        torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=spec["timeout_s"]))
    from datakit.errors import UserError
    from datakit.train.config import make_config
    from datakit.train.trainer import Run

    cfg = make_config(None, **{**spec["config"], "out": spec["out_by_rank"][rank]})
    try:
        run = Run(cfg)
        summary = run.execute()
    except UserError as e:
        print(e, file=sys.stderr)
        return 2
    weights = {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}
    torch.save({"weights": weights, "summary": summary, "world": torch.distributed.get_world_size()},
               spec["result"].format(rank=rank))
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
