"""Experiment: one QLoRA SFT step (7B shape, micro-batch 1, checkpointing) replayed as a CUDA graph.

    python bench/graph_step.py [--model-dir DIR] [--layers 28] [--kernels torch|auto]

Loads bench/train_gpu.py's random-weight model with datakit's loader and fused LoRA layers, then
times, in one process: the eager step, a cProfile of it (where the CPU time goes), and the forward
and backward captured once with ``torch.cuda.graph`` and replayed, with paged 8-bit AdamW and with
PyTorch's fused AdamW. Checks the replayed loss and gradients against the eager ones first.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--kernels", default="torch")
    ap.add_argument("--dropout", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default="bench/out/graph_step.json")
    args = ap.parse_args()
    import bitsandbytes as bnb
    import torch

    import train_gpu as TG
    from datakit.train import data as D
    from datakit.train.model import Fp32Master
    from datakit.train.trainer import batch_tensors, forward_nll

    mdir = Path(args.model_dir or f"/tmp/qwen7b-shaped-{args.layers}L")
    dev = torch.device("cuda", 0)
    model, kernels, _ = TG.load_datakit(mdir, args.layers, args.dropout, args.kernels)
    res: dict = {"kernels": kernels, "dropout": args.dropout}
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        g0 = torch.Generator(device="cuda").manual_seed(0)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01, generator=g0)
    master = Fp32Master(params)
    vocab = model.config.vocab_size
    exs = [D.Example(torch.randint(0, vocab, (TG.SEQ,)).tolist(), [True] * TG.SEQ)]
    t = batch_tensors(D.make_batch(exs), dev)
    n = t["targets"].numel()

    def fwd_bwd():
        loss = forward_nll(model, t).sum() / n
        loss.backward()
        return loss

    def timed(step):
        times = TG._time_steps(step, 3, args.steps)
        med = statistics.median(times)
        return {"step_s": round(med, 4), "tokens_per_s": round(TG.SEQ / med, 1),
                "times": [round(x, 4) for x in times], "peak_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)}

    def eager_step(opt):
        def step():
            fwd_bwd()
            master.pull_grads()
            opt.step()
            master.push()
            opt.zero_grad(set_to_none=True)
        return step

    paged = bnb.optim.PagedAdamW8bit(master.params, lr=1e-5)
    fused = torch.optim.AdamW(master.params, lr=1e-5, fused=True)
    model.train()
    torch.cuda.reset_peak_memory_stats()
    res["eager_paged8"] = timed(eager_step(paged))
    print("eager paged8", res["eager_paged8"], flush=True)
    res["eager_adamw"] = timed(eager_step(fused))
    print("eager adamw", res["eager_adamw"], flush=True)

    # where the CPU time of an eager step goes
    prof = cProfile.Profile()
    torch.cuda.synchronize()
    prof.enable()
    eager_step(fused)()
    torch.cuda.synchronize()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
    print(s.getvalue()[:6000], flush=True)

    # eager reference gradients without dropout
    model.eval()
    for p in params:
        p.grad = None
    ref_loss = float(fwd_bwd())
    ref = torch.cat([p.grad.float().flatten() for p in params])
    for p in params:
        p.grad = None

    def capture():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fwd_bwd()
                for p in params:
                    p.grad = None
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss = fwd_bwd()
        return graph, loss, [p.grad for p in params]

    try:
        t0 = time.perf_counter()
        graph, sloss, grads = capture()
        res["capture_eval_s"] = round(time.perf_counter() - t0, 2)
        graph.replay()
        torch.cuda.synchronize()
        got = torch.cat([g.float().flatten() for g in grads])
        res["graph_vs_eager"] = {"loss_ref": ref_loss, "loss_graph": float(sloss),
                                 "grad_rel_err": float((got - ref).norm() / ref.norm())}
        print("graph vs eager (eval):", res["graph_vs_eager"], flush=True)
        del graph, sloss, grads, got
        for p in params:
            p.grad = None
        torch.cuda.empty_cache()
        model.train()
        t0 = time.perf_counter()
        graph, sloss, grads = capture()
        res["capture_train_s"] = round(time.perf_counter() - t0, 2)

        def graph_step(opt):
            def step():
                graph.replay()
                for m, g in zip(master.params, grads):
                    m.grad = g.float()
                opt.step()
                master.push()
                opt.zero_grad(set_to_none=True)
            return step

        torch.cuda.reset_peak_memory_stats()
        res["graph_paged8"] = timed(graph_step(paged))
        print("graph paged8", res["graph_paged8"], flush=True)
        res["graph_adamw"] = timed(graph_step(fused))
        print("graph adamw", res["graph_adamw"], flush=True)
        res["replay_only"] = timed(graph.replay)
        print("replay only", res["replay_only"], flush=True)
        res["loss_train_graph"] = float(sloss)
    except Exception as e:  # noqa: BLE001 - the experiment reports what failed
        import traceback

        traceback.print_exc()
        res["graph_error"] = f"{type(e).__name__}: {e}"[:2000]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, dict)}, indent=1))


if __name__ == "__main__":
    main()
