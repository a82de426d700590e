"""LoRA-input dropout on a GPU: torch's mask-keeping dropout vs datakit's seeded one.

What a LoRA layer needs from dropout, on the down projection's input of a 7B model at 8,192
tokens (8192 x 18944, bf16): forward ``drop(x)``; backward ``drop(x)`` for the A gradient and
``g_x += drop(t)`` for the input gradient. torch: ``native_dropout`` in forward (keeps the dropped
copy and a bool mask until backward: 3 bytes an element), ``native_dropout_backward`` and an add in
backward. datakit (:mod:`datakit.train.dropout`): one Triton pass in forward, one in backward that
makes the mask again from an 8-byte seed and does both uses. Prints time per forward+backward
(median of 50, CUDA events) and the bytes held from forward to backward.

Then the LoRA layer's rank-16 products around it (``xa = s drop(x) A^T``; ``g_x += drop(g_xa A)``,
``g_A = g_xa^T drop(x)``), three ways: without dropout (cuBLAS; the floor), the two-step path
(the seeded mask as a tensor, then cuBLAS) and the mask inside the products
(:mod:`datakit.train.dropout_gemm`).

    python bench/seeded_dropout.py [--tokens 8192] [--width 18944] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from datakit.train import dropout as DR
from datakit.train import dropout_gemm as DG


def _time(fn, reps: int = 50) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def _rank_products(x: torch.Tensor, gx: torch.Tensor, p: float, r: int = 16, s: float = 2.0) -> dict:
    a = torch.randn(r, x.shape[1], device=x.device, dtype=x.dtype) / x.shape[1] ** 0.5
    g_xa = torch.randn(x.shape[0], r, device=x.device, dtype=x.dtype)

    def no_dropout():
        (x @ a.t()).mul_(s)
        gx.addmm_(g_xa, a)
        return g_xa.t() @ x

    def two_step():
        seed = DR.new_seed(x.device)
        (DR.dropout(x, seed, p) @ a.t()).mul_(s)
        xd = DR.dropout(x, seed, p, t=g_xa @ a, add=gx)
        return g_xa.t() @ xd

    def inside():
        seed = DR.new_seed(x.device)
        DG.down(x, a, seed, p, s)
        return DG.backward(x, g_xa, a, seed, p, gx, True)

    return {"rank": r, "products_no_dropout_ms": round(_time(no_dropout), 3),
            "products_two_step_ms": round(_time(two_step), 3),
            "products_mask_inside_ms": round(_time(inside), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--width", type=int, default=18944)
    ap.add_argument("--p", type=float, default=0.05)
    ap.add_argument("--out")
    args = ap.parse_args()
    x = torch.randn(args.tokens, args.width, device="cuda", dtype=torch.bfloat16)
    t, gx = torch.randn_like(x), torch.randn_like(x)
    p = args.p

    def torch_way():
        xd, mask = torch.native_dropout(x, p, True)
        gx.add_(torch.ops.aten.native_dropout_backward(t, mask, 1.0 / (1.0 - p)))
        return xd

    def seeded_way():
        seed = DR.new_seed(x.device)
        DR.dropout(x, seed, p)
        return DR.dropout(x, seed, p, t=t, add=gx)

    res = {"shape": [args.tokens, args.width], "p": p, "gpu": torch.cuda.get_device_name(0),
           "torch": torch.__version__,
           "torch_ms": round(_time(torch_way), 3), "seeded_ms": round(_time(seeded_way), 3),
           "torch_kept_bytes": x.numel() * 3, "seeded_kept_bytes": 8}
    seed = DR.new_seed(x.device)
    kept = (DR.dropout(torch.ones_like(x), seed, p) != 0).float().mean().item()
    res["seeded_kept_fraction"] = round(kept, 5)
    res.update(_rank_products(x, gx, p))
    print(json.dumps(res))
    if args.out:
        open(args.out, "w").write(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
