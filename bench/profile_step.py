"""Where a QLoRA step's time goes: torch.profiler over datakit's SFT step on the 7B shape.

    python bench/profile_step.py [--model-dir DIR] [--layers 28]

Builds (or reuses) bench/train_gpu.py's random-weight Qwen2.5-7B-shaped model, loads it 4-bit
with datakit's loader and adapters, and profiles two configurations: micro-batch 1 with
checkpointing (the trainer's default) and micro-batch 4 (``--micro-batch``) without. For each it prints the step's
wall time, the summed GPU kernel time (GPU busy share = kernel time / wall), the number of
kernels launched, and the 20 kernels or operators with the most GPU time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--fused", type=int, default=1)
    ap.add_argument("--kernels", default="auto")
    ap.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout [0.05, the default]")
    ap.add_argument("--only", choices=["mb1", "mb4"], default=None, help="profile one configuration")
    ap.add_argument("--micro-batch", type=int, default=4, help="the no-checkpointing configuration's [4]")
    ap.add_argument("--ops", type=int, default=0, help="also list this many operators (with input shapes) by GPU time")
    args = ap.parse_args()
    import bitsandbytes as bnb
    import torch
    from torch.profiler import ProfilerActivity, profile

    import train_gpu as TG
    from datakit.train.model import Fp32Master

    mdir = Path(args.model_dir or f"/tmp/qwen7b-shaped-{args.layers}L")
    dev = torch.device("cuda", 0)
    model, kernels, _ = TG.load_datakit(mdir, args.layers, args.dropout, args.kernels, fused=bool(args.fused))
    print("kernels:", kernels, "fused LoRA:", bool(args.fused), flush=True)
    master = Fp32Master(p for p in model.parameters() if p.requires_grad)
    opt = bnb.optim.PagedAdamW8bit(master.params, lr=1e-4)
    model.train()
    base = model.get_base_model()

    def make(mb):
        return TG.sft_step(model, master, opt, dev, mb)

    configs = (("mb1", "mb1 checkpointing", 1, True), ("mb4", f"mb{args.micro_batch} no checkpointing", args.micro_batch, False))
    for key, name, mb, ckpt in configs:
        if args.only and key != args.only:
            continue
        if not ckpt:
            base.gradient_checkpointing_disable()
        step = make(mb)
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t = time.perf_counter()
            step()
            torch.cuda.synchronize()
            wall = time.perf_counter() - t
        events = prof.events()
        kern = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        gpu = sum(e.time_range.elapsed_us() for e in kern) / 1e6
        print(f"\n== {name}: wall {wall * 1e3:.0f} ms (profiled), GPU kernel time {gpu * 1e3:.0f} ms "
              f"({gpu / wall:.0%} busy), kernels {len(kern):,}", flush=True)
        by: dict[str, list[float]] = {}
        for e in kern:
            by.setdefault(e.name[:90], []).append(e.time_range.elapsed_us() / 1e3)
        top = sorted(by.items(), key=lambda kv: -sum(kv[1]))[:22]
        for k, v in top:
            print(f"  {sum(v):8.1f} ms  {len(v):6d}x  {k}")
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=60))
        if args.ops:  # the operators behind the kernels (with input shapes), by GPU time
            ops = [e for e in prof.key_averages(group_by_input_shape=True) if e.self_device_time_total > 0
                   and e.key.startswith("aten::")]
            for e in sorted(ops, key=lambda e: -e.self_device_time_total)[:args.ops]:
                print(f"  {e.self_device_time_total / 1e3:8.1f} ms  {e.count:5d}x  {e.key:24s} {str(e.input_shapes)[:150]}")


if __name__ == "__main__":
    main()
