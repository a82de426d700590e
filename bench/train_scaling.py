"""Data-parallel scaling of `datakit train` (the real trainer, end to end) on 1 and N GPUs.

The Qwen2.5-7B-shaped random-weight model of bench/train_gpu.py, SmolLM2's tokenizer (ids fit
in the 152k vocabulary), and a synthetic SFT export of long two-turn conversations (rows fill
2048 tokens when packed). Each width runs `torchrun --nproc_per_node K` over the same data and
settings (micro-batch 4 rows, grad-accum 2 per GPU, so K GPUs do K times the work per step);
tokens/s is the median of the steps after the first two, read from metrics.jsonl.

    python bench/train_scaling.py --tokenizer DIR --out OUTDIR [--gpus 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def worker(args):
    from datakit.train import make_config, train

    cfg = make_config(None, data=args.data, model=args.model_dir, out=args.run_out, max_steps=args.steps,
                      batch_size=4, grad_accum=2, eval_fraction=0.0, eval_every=1000, samples=0,
                      max_len=2048, resume=False)
    train(cfg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--data")
    ap.add_argument("--model-dir")
    ap.add_argument("--run-out")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    from train_gpu import build

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mdir = Path(f"/tmp/qwen7b-shaped-{args.layers}L")
    if not (mdir / "config.json").exists():
        print("building", build(mdir, args.layers), flush=True)
    for f in Path(args.tokenizer).iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, mdir / f.name)
    rng = random.Random(0)
    words = "the of and to in is was for on that with as by at from his her it an are were this".split()
    rows = []
    for i in range(400):
        q = " ".join(rng.choice(words) for _ in range(200))
        a = " ".join(rng.choice(words) for _ in range(700))
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    data = out / "scaling_sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = []
    for k in args.gpus:
        run_out = Path(f"/tmp/scaling-{k}")
        shutil.rmtree(run_out, ignore_errors=True)
        env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "PYTHONUNBUFFERED": "1",
               "CUDA_VISIBLE_DEVICES": ",".join(map(str, range(k)))}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(k),
               __file__, "--worker", "--data", str(data), "--model-dir", str(mdir), "--run-out", str(run_out),
               "--tokenizer", args.tokenizer, "--steps", str(args.steps)]
        rc = subprocess.call(cmd, env=env)
        m = [json.loads(x) for x in (run_out / "metrics.jsonl").read_text().splitlines()] if rc == 0 else []
        s = json.loads((run_out / "summary.json").read_text()) if rc == 0 else {}
        tps = statistics.median(r["tokens_per_s"] for r in m[2:]) if len(m) > 2 else None
        results.append({"gpus": k, "rc": rc, "tokens_per_s": tps, "losses": [r["loss"] for r in m],
                        "peak_mem_gib": s.get("peak_mem_gib"), "world_size": s.get("world_size")})
        print(results[-1], flush=True)
    (out / "train_scaling.json").write_text(json.dumps(results, indent=1))
    one = next((r for r in results if r["gpus"] == 1 and r["tokens_per_s"]), None)
    print(f"\n{'GPUs':>5}{'tok/s':>10}{'scaling':>9}{'peak GiB':>10}")
    for r in results:
        sc = f"{r['tokens_per_s'] / one['tokens_per_s']:.2f}" if one and r["tokens_per_s"] else "-"
        print(f"{r['gpus']:>5}{(r['tokens_per_s'] or 0):>10.0f}{sc:>9}{str(r['peak_mem_gib']):>10}")


if __name__ == "__main__":
    main()
