"""Small model, short pairs: micro-batches sized by tokens vs counted, through `datakit train`.

The Qwen2.5-1.5B shape (hidden 1536, intermediate 8960, 28 layers, 12 heads, 2 KV heads, vocab
151936, tied embeddings) with random weights, SmolLM2's tokenizer, synthetic arithmetic SFT rows
and DPO pairs of ~65 tokens a side. QLoRA r=16 on all linear layers, gradient checkpointing,
paged 8-bit AdamW (the trainer's defaults). Each run is the real command in its own process
(``python -m datakit train``); tokens/s and pairs/s are medians over the steps after the first two.

Rows: DPO with the default token budget (as many pairs as fit 2048 tokens a micro-batch) against
the old default (``batch_tokens = 0``: one pair a micro-batch); unpacked SFT likewise; packed SFT
at micro-batch 1 and 4 for reference. Before that, in this process, the bf16 tolerance: one
micro-batch of many pairs (or unpacked examples) against the same items one by one, through the
trainer's own loss functions on the 4-bit model: relative difference of the loss and of the LoRA
gradients.

    python bench/train_small.py --tokenizer DIR --out OUTDIR [--steps 12]
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
import time
from pathlib import Path

SHAPE = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
             num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
             rms_norm_eps=1e-6, tie_word_embeddings=True)


def build(path: Path, tokenizer: Path) -> int:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(Qwen2Config(**SHAPE))
    torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if "norm" in name else p.normal_(0.0, 0.02)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(str(path))
    del model
    torch.cuda.empty_cache()
    for f in tokenizer.iterdir():
        shutil.copy(f, path / f.name)
    return n


def _steps(a: int, b: int) -> str:
    return f"{a} + {b}: add the ones, carry, then the tens. The answer is {a + b}."


def synthetic(out: Path, n_sft: int = 800, n_dpo: int = 800) -> tuple[Path, Path]:
    rng = random.Random(0)
    sft, dpo = [], []
    for _ in range(n_sft):
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        sft.append({"messages": [{"role": "user", "content": f"What is {a} + {b}? Show the steps."},
                                 {"role": "assistant", "content": _steps(a, b)}]})
    for _ in range(n_dpo):
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        wrong = a + b + rng.choice([-10, -1, 1, 10])
        dpo.append({"prompt": [{"role": "user", "content": f"What is {a} + {b}? Show the steps."}],
                    "chosen": [{"role": "assistant", "content": _steps(a, b)}],
                    "rejected": [{"role": "assistant", "content": _steps(a, b).replace(str(a + b), str(wrong))}]})
    ps, pd = out / "small_sft.jsonl", out / "small_dpo.jsonl"
    ps.write_text("".join(json.dumps(r) + "\n" for r in sft))
    pd.write_text("".join(json.dumps(r) + "\n" for r in dpo))
    return ps, pd


def tolerance(model_dir: Path, sft: Path, dpo: Path) -> dict:
    """bf16 on the GPU: many items in one micro-batch vs one by one, the trainer's own losses."""
    import torch

    from datakit.train import data as D
    from datakit.train.config import make_config
    from datakit.train.model import add_lora, load_model, load_tokenizer, resolve_model
    from datakit.train.trainer import Run

    spec = resolve_model(str(model_dir))
    tok, _ = load_tokenizer(spec)
    dev = torch.device("cuda", 0)
    base = load_model(spec, load_4bit=True, device=dev, dtype=torch.bfloat16)
    model = add_lora(base, r=16, alpha=32, dropout=0.0, target_modules="all-linear", gradient_checkpointing=True,
                     lora_dtype=torch.bfloat16, reentrant=True)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    res = {}
    for method, path in (("dpo", dpo), ("sft", sft)):
        run = Run(make_config(None, data=str(path), model=str(model_dir), out="/tmp/unused", method=method,
                              pack=False, lora_dropout=0.0))
        run.model, run.device = model, dev
        model.train()
        rows = (D.read_dpo_rows if method == "dpo" else D.read_sft_rows)(str(path))[:16]
        items, _ = run._encode(tok, rows)
        loss_fn = run._loss
        idx = list(range(len(items)))
        denom = len(idx) if method == "dpo" else sum(run._targets_in([i], items) for i in idx)

        def grads():
            return torch.cat([p.grad.float().reshape(-1) for p in model.parameters() if p.requires_grad])

        def one_micro_batch():
            model.zero_grad(set_to_none=True)
            loss, _ = loss_fn(idx, items, denom)
            loss.backward()
            return float(loss.detach()), grads()

        # reference: one item at a time, gradients summed in float32 (no bf16 accumulation)
        ref_loss, ref_g = 0.0, None
        for i in idx:
            model.zero_grad(set_to_none=True)
            loss, _ = loss_fn([i], items, denom)
            loss.backward()
            ref_loss += float(loss.detach())
            ref_g = grads() if ref_g is None else ref_g + grads()
        # one at a time accumulated in the bf16 .grad, as grad-accum micro-batches are
        model.zero_grad(set_to_none=True)
        for i in idx:
            loss, _ = loss_fn([i], items, denom)
            loss.backward()
        acc_g = grads()
        l1, g1 = one_micro_batch()
        _, g2 = one_micro_batch()  # the same again: the run-to-run noise floor (atomics in attention)

        def rel(a, b):
            return float((a - b).norm() / b.norm())

        res[method] = {"items": len(idx), "loss_one_by_one": ref_loss, "loss_one_micro_batch": l1,
                       "loss_rel_diff": abs(l1 - ref_loss) / abs(ref_loss),
                       "grad_rel_diff_one_micro_batch_vs_fp32_sum": rel(g1, ref_g),
                       "grad_rel_diff_one_by_one_bf16_accumulated_vs_fp32_sum": rel(acc_g, ref_g),
                       "grad_rel_diff_same_micro_batch_twice": rel(g2, g1)}
        print(f"  tolerance {method}: {res[method]}", flush=True)
    del model, base
    torch.cuda.empty_cache()
    return res


RUNS = [  # name, method, flags, config-file settings
    ("dpo-counted-1-pair (old default)", "dpo", [], {"batch_tokens": 0}),
    ("dpo-token-budget (default)", "dpo", [], {}),
    ("sft-unpacked-counted-1", "sft", ["--no-pack"], {"batch_tokens": 0}),
    ("sft-unpacked-token-budget", "sft", ["--no-pack"], {}),
    ("sft-packed-mb1 (default)", "sft", [], {}),
    ("sft-packed-mb1 --fit off", "sft", ["--fit", "off"], {}),
    ("sft-packed-mb4", "sft", ["--batch-size", "4"], {}),
    ("sft-packed-mb4-accum1", "sft", ["--batch-size", "4", "--grad-accum", "1"], {}),
    ("sft-packed-mb4-accum1-no-ckpt", "sft", ["--batch-size", "4", "--grad-accum", "1",
                                               "--no-gradient-checkpointing"], {}),
    ("sft-packed-mb8-accum1-no-ckpt", "sft", ["--batch-size", "8", "--grad-accum", "1",
                                               "--no-gradient-checkpointing"], {}),
    ("sft-packed-mb1 --kernels torch", "sft", ["--kernels", "torch"], {}),
    ("sft-packed-mb1 --cuda-graphs off", "sft", ["--cuda-graphs", "off"], {}),
    ("dpo-token-budget --cuda-graphs off", "dpo", ["--cuda-graphs", "off"], {}),
]


def run_one(name, method, flags, settings, model_dir: Path, data: Path, out: Path, steps: int) -> dict:
    run_out = Path("/tmp/small-run")
    shutil.rmtree(run_out, ignore_errors=True)
    cfg = Path("/tmp/small_cfg.json")
    cfg.write_text(json.dumps(settings))
    cmd = [sys.executable, "-m", "datakit", "train", "--model", str(model_dir), "--data", str(data), "--method",
           method, "--out", str(run_out), "--max-steps", str(steps), "--samples", "0", "--no-validate",
           "--eval-every", "1000", "--eval-fraction", "0.01", "--config", str(cfg), *flags]
    t = time.time()
    rc = subprocess.call(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL)
    r = {"run": name, "rc": rc, "wall_s": round(time.time() - t, 1), "settings": settings, "flags": flags}
    if rc == 0:
        m = [json.loads(x) for x in (run_out / "metrics.jsonl").read_text().splitlines()]
        s = json.loads((run_out / "summary.json").read_text())
        later = m[2:] or m
        r.update({"tokens_per_s": statistics.median(x["tokens_per_s"] for x in later),
                  "tokens_per_step": statistics.median(x["tokens"] for x in later),
                  "peak_gib": s["peak_mem_gib"], "first_loss": m[0]["loss"], "last_loss": m[-1]["loss"],
                  "cuda_graphs": s.get("cuda_graphs"), "fit": s.get("fit"), "steps_tokens_per_s": [x["tokens_per_s"] for x in m]})
        if method == "dpo":
            r["pairs_per_s"] = statistics.median(x["pairs_per_s"] for x in later)
            r["pairs_per_step"] = statistics.median(x["pairs"] for x in later)
    print(f"  {r}", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--tolerance-only", action="store_true")
    ap.add_argument("--only", nargs="*", default=None, help="run only the runs whose names start with these")
    args = ap.parse_args()
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mdir = Path("/tmp/qwen1.5b-shaped")
    shutil.rmtree(mdir, ignore_errors=True)
    rep: dict = {"date": time.strftime("%Y-%m-%d"), "gpu": torch.cuda.get_device_name(0), "shape": SHAPE}
    rep["params"] = build(mdir, Path(args.tokenizer))
    sft, dpo = synthetic(Path("/tmp"))
    rep["tolerance_bf16"] = tolerance(mdir, sft, dpo)
    if args.tolerance_only:
        (out / "train_small_tolerance.json").write_text(json.dumps(rep, indent=1))
        return
    runs = [r for r in RUNS if args.only is None or any(r[0].startswith(o) for o in args.only)]
    rep["runs"] = [run_one(*spec, mdir, dpo if spec[1] == "dpo" else sft, out, args.steps) for spec in runs]
    (out / "train_small.json").write_text(json.dumps(rep, indent=1))
    print(f"\n{'run':<36}{'tok/s':>10}{'pairs/s':>9}{'tok/step':>10}{'peak GiB':>9}")
    for r in rep["runs"]:
        print(f"{r['run']:<36}{r.get('tokens_per_s', 0):>10.0f}{r.get('pairs_per_s', 0) or 0:>9.2f}"
              f"{r.get('tokens_per_step', 0):>10.0f}{r.get('peak_gib', 0) or 0:>9.2f}")


if __name__ == "__main__":
    main()
