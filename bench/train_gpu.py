"""QLoRA training throughput and memory: plain transformers+peft+bitsandbytes vs datakit's trainer.

One run on one GPU, one model: a Qwen2.5-7B-shaped Qwen2 (hidden 3584, intermediate 18944,
28 layers, 28 heads, 4 KV heads, vocab 152064) with random weights, built from the config,
saved as safetensors and loaded back 4-bit as a user would. Sequences of 2048 tokens, LoRA r=16
alpha=32 on all linear layers, paged 8-bit AdamW for both.

* baseline: ``prepare_model_for_kbit_training`` (gradient checkpointing), SDPA, the model's own
  loss (``labels=``), rows of 2048 tokens, micro-batch 1, 2, 4 … until out of memory;
* datakit: :func:`datakit.train.model.load_model` + :func:`add_lora` and the trainer's own
  :func:`forward_nll` (chunked linear cross-entropy, no fp32 upcast, packed rows through varlen
  flash attention), with and without gradient checkpointing, micro-batch 1, 2, 4 …;
* DPO: datakit's DPO step (policy + adapter-disabled reference) on pairs of 2 × 1024 tokens.

datakit's rows run as the trainer runs them on a GPU: each micro-batch in its CUDA graph's fixed
shapes, forward and backward replayed by :class:`datakit.train.graphs.GraphRunner` (its first call
eager, then captured and checked); ``DK_GRAPHS=0`` or ``--variants datakit:eager`` for eager steps.

Each side runs in its own process so peak memory is its own. Before timing, the script checks on
the GPU that the chunked loss equals the full-logits loss and that a packed row gives the same
per-example losses as the examples run one by one.

    python bench/train_gpu.py --out OUTDIR [--layers 28] [--steps 5]

Prints one table (tokens/s, peak memory, ratios) and writes OUTDIR/train_gpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SEQ = 2048
REENTRANT = os.environ.get("DK_REENTRANT", "1") == "1"  # the trainer's default; DK_REENTRANT=0 for non-reentrant
LORA_DROPOUT = float(os.environ.get("DK_LORA_DROPOUT", "0.05"))  # datakit side only: the trainer's default
FUSED = os.environ.get("DK_FUSED", "1") == "1"  # datakit's one-function LoRA layers (DK_FUSED=0: peft's modules)
KERNELS = os.environ.get("DK_KERNELS", "auto")  # datakit side: Liger's RMSNorm/RoPE/SwiGLU when installed
OPT = os.environ.get("DK_OPT", "paged8")  # datakit side: paged8 (the trainer's default) or adamw (torch, fused)
GRAPHS = os.environ.get("DK_GRAPHS", "1") == "1"  # datakit side: CUDA graphs (the trainer's default on a GPU)
BASE_LIGER = os.environ.get("DK_BASE_LIGER", "0") == "1"  # baseline side: apply_liger_kernel_to_qwen2() as documented
SHAPE = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
             num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rope_theta=1e6,
             rms_norm_eps=1e-6, tie_word_embeddings=False)


# a 7B-class shape of a second family (--family llama3-8b): Llama-3-8B
LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                 rms_norm_eps=1e-5, tie_word_embeddings=False)
FAMILIES = {"qwen2.5-7b": ("Qwen2Config", "Qwen2ForCausalLM", SHAPE),
            "llama3-8b": ("LlamaConfig", "LlamaForCausalLM", LLAMA3_8B)}


def build(path: Path, layers: int, family: str = "qwen2.5-7b") -> dict:
    import torch
    import transformers

    conf_cls, model_cls, shape = FAMILIES[family]
    Qwen2ForCausalLM = getattr(transformers, model_cls)  # noqa: N806 - the family's model class
    cfg = getattr(transformers, conf_cls)(**{**shape, "num_hidden_layers": layers})
    t = time.time()
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(str(path), max_shard_size="5GB")
    del model
    torch.cuda.empty_cache()
    return {"params": n, "build_save_s": round(time.time() - t, 1)}


def _mem():
    import torch

    return (round(torch.cuda.max_memory_allocated() / 2 ** 30, 2), round(torch.cuda.max_memory_reserved() / 2 ** 30, 2))


def _reset():
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def _time_steps(step, warmup: int, steps: int) -> list[float]:
    import torch

    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def _sweep(name: str, make_step, batches: list[int], warmup: int, steps: int, tokens_per_row: int = SEQ) -> list[dict]:
    import torch

    rows = []
    for mb in batches:
        _reset()
        step = None
        try:
            step = make_step(mb)
            times = _time_steps(step, warmup, steps)
            runner = getattr(step, "graphs", None)
        except torch.cuda.OutOfMemoryError:
            rows.append({"config": name, "micro_batch": mb, "oom": True})
            print(f"  {name} mb={mb}: out of memory", flush=True)
            step = None
            _reset()
            break
        med = statistics.median(times)
        alloc, reserved = _mem()
        r = {"config": name, "micro_batch": mb, "step_s": round(med, 4),
             "tokens_per_s": round(mb * tokens_per_row / med, 1), "peak_alloc_gib": alloc,
             "peak_reserved_gib": reserved, "step_times": [round(x, 4) for x in times]}
        if runner is not None:
            r["cuda_graphs"] = runner.summary()
            if runner.failed:
                print(runner.failed_trace, flush=True)
        rows.append(r)
        print(f"  {name} mb={mb}: {r['tokens_per_s']:.0f} tok/s, {alloc} GiB alloc, {reserved} GiB reserved",
              flush=True)
        step = runner = None  # its graphs' memory pool goes with it, before the next micro-batch size
    return rows


def run_baseline(path: str, batches: list[int], warmup: int, steps: int) -> dict:
    import bitsandbytes as bnb
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if BASE_LIGER:  # Liger's documented use: patch the model classes before loading (fused linear CE too)
        from liger_kernel.transformers import apply_liger_kernel_to_qwen2

        apply_liger_kernel_to_qwen2()
    t = time.time()
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=q, dtype=torch.bfloat16,
                                                 attn_implementation="sdpa", device_map={"": 0})
    load_s = time.time() - t
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    model.config.use_cache = False
    opt = bnb.optim.PagedAdamW8bit([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    model.train()

    def make_step(mb):
        ids = torch.randint(0, vocab, (mb, SEQ), device="cuda")

        def step():
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    rows = _sweep("baseline+liger" if BASE_LIGER else "baseline", make_step, batches, warmup, steps)
    return {"load_s": round(load_s, 1), "rows": rows}


def load_datakit(model_dir: Path, layers: int, dropout: float, kernels: str, fused: bool = True,
                 reentrant: bool = True):
    """(model, kernels used, loading seconds): the random-weight model (built first if missing)
    loaded 4-bit with datakit's loader, LoRA r=16 all-linear, checkpointing, as the trainer does."""
    import torch

    from datakit.train import kernels as K
    from datakit.train.model import ModelSpec, add_lora, load_model

    if not (model_dir / "config.json").exists():
        print("build:", build(model_dir, layers), flush=True)
    dev = torch.device("cuda", 0)
    t = time.time()
    model = load_model(ModelSpec(str(model_dir)), load_4bit=True, device=dev, dtype=torch.bfloat16)
    load_s = time.time() - t
    model = add_lora(model, r=16, alpha=32, dropout=dropout, target_modules="all-linear", gradient_checkpointing=True,
                     lora_dtype=torch.bfloat16, reentrant=reentrant, fused=fused)
    return model, K.apply(model, kernels, dev), load_s


def fwd_bwd_step(master, opt, batch, dev, objective, denom: float, n_pairs: int | None = None):
    """One optimiser step as the trainer runs it: forward, loss (``objective(t, denom) -> (loss,
    stats)``, one of the trainer's objectives) and backward, then the optimiser. With CUDA graphs
    (DK_GRAPHS, default on) the batch goes in its graph's fixed shapes through a GraphRunner (the
    first call runs eagerly and captures), the gradients pulled and zeroed in place; else eagerly.
    The step's runner is ``step.graphs`` (None when eager)."""
    import torch

    from datakit.train import graphs as G
    from datakit.train.trainer import batch_tensors

    runner = None
    if GRAPHS:
        runner = G.GraphRunner(master.model_params, lambda msg: print("  notice:", msg, flush=True))
        key, t = G.static_tensors(batch, dev, n_pairs)
        t["denom"] = torch.full((), float(denom), device=dev)
    else:
        t = batch_tensors(batch, dev)
        t["denom"] = denom

    def fwd_bwd(tt):
        loss, stats = objective(tt, tt["denom"])
        loss.backward()
        return stats

    def step():
        if runner is not None:
            runner.run(key, t, fwd_bwd)
        else:
            fwd_bwd(t)
        master.pull_grads(keep=runner is not None)
        opt.step()
        master.push()
        opt.zero_grad(set_to_none=True)
    step.graphs = runner
    return step


def sft_step(model, master, opt, dev, mb: int):
    """One optimiser step of datakit's SFT loss on ``mb`` random rows of ``SEQ`` tokens (a closure
    over the batch, built once)."""
    import torch

    from datakit.train import data as D
    from datakit.train.trainer import sft_objective

    vocab = model.config.vocab_size
    batch = D.make_batch([D.Example(torch.randint(0, vocab, (SEQ,)).tolist(), [True] * SEQ) for _ in range(mb)])
    return fwd_bwd_step(master, opt, batch, dev, lambda t, d: sft_objective(model, t, d), batch.n_targets)


def run_datakit(path: str, batches: list[int], warmup: int, steps: int, no_ckpt_batches: list[int],
                dpo: bool = True) -> dict:
    import bitsandbytes as bnb
    import torch

    from datakit.train import data as D
    from datakit.train.losses import reference_nll, token_nll
    from datakit.train.model import Fp32Master, decoder_and_head
    from datakit.train.trainer import batch_tensors, forward_nll

    dev = torch.device("cuda", 0)
    model, kernels, load_s = load_datakit(Path(path), 0, LORA_DROPOUT, KERNELS, fused=FUSED,
                                          reentrant=REENTRANT)  # built by the parent already
    master = Fp32Master(p for p in model.parameters() if p.requires_grad)
    opt = (torch.optim.AdamW(master.params, lr=1e-4, fused=True) if OPT == "adamw"
           else bnb.optim.PagedAdamW8bit(master.params, lr=1e-4))
    vocab = model.config.vocab_size
    res: dict = {"load_s": round(load_s, 1), "checks": {}, "kernels": kernels, "fused": FUSED,
                 "lora_dropout": LORA_DROPOUT, "optimizer": OPT, "cuda_graphs": GRAPHS}

    # ---- correctness on the GPU: chunked loss vs full logits; packed vs one by one
    g = torch.Generator(device="cuda").manual_seed(1)
    _, head = decoder_and_head(model)
    h = torch.randn(3000, head.weight.shape[1], device=dev, dtype=torch.bfloat16, generator=g)
    tg = torch.randint(0, vocab, (3000,), device=dev, generator=g)
    hr = h.clone().requires_grad_(True)
    a = token_nll(hr, head.weight, tg)
    a.sum().backward()
    hf = h.clone().float().requires_grad_(True)
    b = reference_nll(hf, head.weight, tg)
    b.sum().backward()
    a, b = a.detach(), b.detach()
    res["checks"]["chunked_ce_rel_err"] = float((a - b).norm() / b.norm())
    res["checks"]["chunked_ce_grad_rel_err"] = float((hr.grad.float() - hf.grad).norm() / hf.grad.norm())
    del h, hr, hf, a, b
    model.eval()
    exs = [D.Example(torch.randint(0, vocab, (n,)).tolist(), [True] * n) for n in (300, 517, 1100)]
    with torch.no_grad():
        packed = forward_nll(model, batch_tensors(D.make_batch(exs), dev))
        single = torch.cat([forward_nll(model, batch_tensors(D.make_batch([e]), dev)) for e in exs])
    res["checks"]["packed_vs_single_rel_err"] = float((packed - single).norm() / single.norm())
    res["checks"]["packed_vs_single_max_abs"] = float((packed - single).abs().max())
    from datakit.train import attention as A
    from datakit.train import fused_lora as FL

    res["checks"]["varlen_kernel"] = bool(A._state["varlen"])
    # fused LoRA layers against peft's modules: loss and adapter gradients (B made non-zero)
    with torch.no_grad():
        saved = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01, generator=g)
    model.eval()  # no LoRA dropout in the comparison (the two paths draw different masks)
    one = batch_tensors(D.make_batch(exs), dev)
    got = {}
    for fused in (True, False, "again"):  # peft twice: the run-to-run floor (flash attention's backward accumulates atomically)
        (FL.fuse if fused is True else FL.unfuse)(model)
        for p in model.parameters():
            p.grad = None
        torch.manual_seed(3)
        loss = forward_nll(model, one).sum()
        loss.backward()
        got[fused] = (float(loss), torch.cat([p.grad.float().flatten() for p in model.parameters() if p.requires_grad]))
    (FL.fuse if FUSED else FL.unfuse)(model)
    del loss  # its autograd graph would keep AccumulateGrad nodes of the default stream alive (no capture then)
    gf, gp = got[True][1], got[False][1]
    res["checks"]["fused_vs_peft_loss_rel_err"] = abs(got[True][0] - got[False][0]) / abs(got[False][0])
    res["checks"]["fused_vs_peft_grad_rel_err"] = float((gf - gp).norm() / gp.norm())
    res["checks"]["peft_vs_peft_grad_rel_err"] = float((got["again"][1] - gp).norm() / gp.norm())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in saved:
                p.copy_(saved[n])
            p.grad = None
    del got, gf, gp, saved
    model.train()
    print("  checks:", res["checks"], flush=True)

    def sft_step_factory(mb):
        return sft_step(model, master, opt, dev, mb)

    base = model.get_base_model()
    rows = _sweep("datakit", sft_step_factory, batches, warmup, steps)
    if no_ckpt_batches:
        base.gradient_checkpointing_disable()
        rows += _sweep("datakit-no-ckpt", sft_step_factory, no_ckpt_batches, warmup, steps)
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": REENTRANT})
    res["rows"] = rows
    if not dpo:
        return res

    # ---- DPO: pairs of (prompt 512 + reply 512) tokens, chosen and rejected
    def dpo_step_factory(mb):
        from datakit.train.trainer import dpo_objective

        seqs = []
        for _ in range(mb):
            prompt = torch.randint(0, vocab, (512,)).tolist()
            for _ in range(2):
                seqs.append(D.Example(prompt + torch.randint(0, vocab, (512,)).tolist(), [False] * 512 + [True] * 512))
        return fwd_bwd_step(master, opt, D.make_batch(seqs), dev,
                            lambda t, d: dpo_objective(model, t, d, 0.1, 0.0), mb, n_pairs=mb)

    dpo_rows = _sweep("datakit-dpo", dpo_step_factory, [1, 4], warmup, steps, tokens_per_row=2048)
    for r in dpo_rows:
        if not r.get("oom"):
            r["pairs_per_s"] = round(r["micro_batch"] / r["step_s"], 2)
    res["dpo_rows"] = dpo_rows
    return res


def child(args) -> None:
    import torch

    if args.child in ("trl-sft", "trl-dpo"):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import trl_rows

        if args.child == "trl-sft":
            res = {"rows": trl_rows.sft_rows(args.model_dir, args.tokenizer, args.batches, args.warmup, args.steps, SEQ)}
        else:
            res = {"rows": [], "dpo_rows": trl_rows.dpo_rows(args.model_dir, args.tokenizer, [1, 4], args.warmup,
                                                             args.steps)}
    elif args.child == "baseline":
        res = run_baseline(args.model_dir, args.batches, args.warmup, args.steps)
    else:
        res = run_datakit(args.model_dir, args.batches, args.warmup, args.steps, args.no_ckpt_batches,
                          dpo=not args.no_dpo)
    res["gpu"] = torch.cuda.get_device_name(0)
    Path(args.result).write_text(json.dumps(res, indent=1))


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--model-dir", default=None, help="[/tmp/qwen7b-shaped-<layers>L]")
    ap.add_argument("--layers", type=int, default=None, help="[the family's own: 28 for Qwen2.5-7B, 32 for Llama-3-8B]")
    ap.add_argument("--family", choices=sorted(FAMILIES), default="qwen2.5-7b")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--no-ckpt-batches", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--runs", type=int, default=1, help="baseline and datakit runs, interleaved (medians printed)")
    ap.add_argument("--unfused", action="store_true", help="one more datakit run with peft's LoRA modules (DK_FUSED=0)")
    ap.add_argument("--variants", nargs="*", default=[],
                    help="more runs after those: SIDE[:OPT,...], SIDE baseline or datakit, OPT liger (baseline), "
                         "torch (datakit without Liger), peft (datakit without fused LoRA), drop0 (LoRA dropout 0), "
                         "adamw (datakit with torch's fused AdamW instead of paged 8-bit), eager (datakit without CUDA graphs)")
    ap.add_argument("--child", choices=["baseline", "datakit", "trl-sft", "trl-dpo"])
    ap.add_argument("--trl", action="store_true", help="also TRL's SFTTrainer and DPOTrainer (bench/trl_rows.py)")
    ap.add_argument("--tokenizer", default=None, help="a tokenizer folder for the TRL rows (DPOTrainer tokenizes text)")
    ap.add_argument("--result")
    ap.add_argument("--no-dpo", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child(args)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = FAMILIES[args.family][2]
    args.layers = args.layers or shape["num_hidden_layers"]
    mdir = Path(args.model_dir or (f"/tmp/qwen7b-shaped-{args.layers}L" if args.family == "qwen2.5-7b"
                                   else f"/tmp/{args.family}-shaped-{args.layers}L"))
    if (mdir / "config.json").exists():
        have = json.loads((mdir / "config.json").read_text()).get("num_hidden_layers")
        if have != args.layers:
            raise SystemExit(f"{mdir} holds a {have}-layer model, not {args.layers}: use another --model-dir")
    report: dict = {"date": time.strftime("%Y-%m-%d"), "versions": _versions(), "seq_len": SEQ,
                    "reentrant": REENTRANT, "lora_dropout": LORA_DROPOUT,
                    "family": args.family, "shape": {**shape, "num_hidden_layers": args.layers}}
    if not (mdir / "config.json").exists():
        print(f"building the random-weight model ({args.layers} layers) …", flush=True)
        report["build"] = build(mdir, args.layers, args.family)
        print("  ", report["build"], flush=True)
    sides = []
    for k in range(args.runs):
        sides += ([] if args.skip_baseline else [("baseline", k, FUSED)]) + [("datakit", k, FUSED)]
    if args.unfused:
        sides.append(("datakit", "peft", False))
    if args.trl:
        if not args.tokenizer:
            raise SystemExit("--trl needs --tokenizer DIR")
        sides += [("trl-sft", "trl-sft", FUSED), ("trl-dpo", "trl-dpo", FUSED)]
    for v in args.variants:
        side, _, opts = v.partition(":")
        sides.append((side, v.replace(":", "_").replace(",", "_"), opts))
    for side, k, fused in sides:
        key = side if k == 0 else (k if isinstance(k, str) and k.startswith(side) else f"{side}_{k}")
        n = 1
        while key in report:  # the same variant twice
            key, n = f"{key.rsplit('-run', 1)[0]}-run{n + 1}", n + 1
        extra = {}
        if isinstance(fused, str):  # a variant's options
            opts = set(filter(None, fused.split(",")))
            extra = {"DK_BASE_LIGER": "1" if "liger" in opts else "0",
                     "DK_GRAPHS": "0" if "eager" in opts else ("1" if GRAPHS else "0"),
                     "DK_KERNELS": "torch" if "torch" in opts else KERNELS,
                     "DK_LORA_DROPOUT": "0" if "drop0" in opts else str(LORA_DROPOUT),
                     "DK_OPT": "adamw" if "adamw" in opts else OPT}
            fused = "peft" not in opts
        print(f"{key} …", flush=True)
        res_file = out / f"{key}.json"
        cmd = [sys.executable, __file__, "--child", side, "--model-dir", str(mdir), "--result", str(res_file),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batches", *map(str, args.batches),
               "--no-ckpt-batches", *map(str, args.no_ckpt_batches)] + (["--no-dpo"] if args.no_dpo else []) \
            + (["--tokenizer", args.tokenizer] if args.tokenizer else [])
        t = time.time()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DK_FUSED": "1" if fused else "0", **extra}
        rc = subprocess.call(cmd, env=env)
        report[key] = json.loads(res_file.read_text()) if res_file.exists() else {"failed": rc}
        report[key]["wall_s"] = round(time.time() - t, 1)
        report[key]["fused"] = fused
        (out / "train_gpu.json").write_text(json.dumps(report, indent=1))
    if args.runs > 1 or args.unfused or args.variants or args.trl:
        print_runs(report)
    (out / "train_gpu.json").write_text(json.dumps(report, indent=1))
    print_table(report)


def print_runs(rep: dict) -> None:
    """Each run's rows, and the median micro-batch-1 ratio over the interleaved runs."""
    ratios = []
    for key, res in rep.items():
        if not isinstance(res, dict) or "rows" not in res:
            continue
        for r in res["rows"] + res.get("dpo_rows", []):
            if not r.get("oom"):
                print(f"{key:<14}{r['config']:<18}{r['micro_batch']:>4}{r['tokens_per_s']:>10.0f}"
                      f"{r['peak_alloc_gib']:>8.2f} GiB  steps {r.get('step_times', '')}")
    k = 0
    while (b := rep.get("baseline" if k == 0 else f"baseline_{k}")) and (d := rep.get("datakit" if k == 0 else f"datakit_{k}")):
        b1 = next((r for r in b.get("rows", []) if r["micro_batch"] == 1 and not r.get("oom")), None)
        d1 = next((r for r in d.get("rows", []) if r["micro_batch"] == 1 and r["config"] == "datakit"
                   and not r.get("oom")), None)
        if b1 and d1:
            ratios.append(d1["tokens_per_s"] / b1["tokens_per_s"])
        k += 1
    if ratios:
        print(f"micro-batch 1 with checkpointing, datakit / baseline per run: {[round(x, 2) for x in ratios]}, "
              f"median {statistics.median(ratios):.2f}x (goal >= 2.5)")


def print_table(rep: dict) -> None:
    base = [r for r in rep.get("baseline", {}).get("rows", []) if not r.get("oom")]
    dk = [r for r in rep.get("datakit", {}).get("rows", []) if not r.get("oom")]
    b1 = next((r for r in base if r["micro_batch"] == 1), None)
    bbest = max(base, key=lambda r: r["tokens_per_s"], default=None)
    print(f"\nQLoRA, {rep['shape']['num_hidden_layers']}-layer {rep.get('family', 'qwen2.5-7b')} shape, seq {SEQ}, "
          f"{rep.get('datakit', {}).get('gpu', '?')}, {rep['versions']}")
    print(f"{'config':<18}{'mb':>4}{'tok/s':>10}{'alloc GiB':>11}{'resv GiB':>10}{'x speed':>9}{'mem ratio':>11}")
    for r in base + dk:
        sp = f"{r['tokens_per_s'] / b1['tokens_per_s']:.2f}" if b1 else "-"
        mr = f"{r['peak_alloc_gib'] / b1['peak_alloc_gib']:.2f}" if b1 else "-"
        print(f"{r['config']:<18}{r['micro_batch']:>4}{r['tokens_per_s']:>10.0f}{r['peak_alloc_gib']:>11.2f}"
              f"{r['peak_reserved_gib']:>10.2f}{sp:>9}{mr:>11}")
    for r in rep.get("datakit", {}).get("dpo_rows", []):
        if not r.get("oom"):
            print(f"{'dpo pairs 2x1024':<18}{r['micro_batch']:>4}{r['tokens_per_s']:>10.0f}{r['peak_alloc_gib']:>11.2f}"
                  f"{r['peak_reserved_gib']:>10.2f}   {r['pairs_per_s']} pairs/s")
    d1 = next((r for r in dk if r["micro_batch"] == 1 and r["config"] == "datakit"), None)
    dbest = max(dk, key=lambda r: r["tokens_per_s"], default=None)
    if b1 and d1:
        print(f"\nsame micro-batch (1): {d1['tokens_per_s'] / b1['tokens_per_s']:.2f}x tokens/s (goal >= 1.8), "
              f"memory {d1['peak_alloc_gib'] / b1['peak_alloc_gib']:.2f} of baseline (goal <= 0.33)")
    if bbest and dbest:
        print(f"best vs best: datakit {dbest['config']} mb={dbest['micro_batch']} vs baseline mb={bbest['micro_batch']}: "
              f"{dbest['tokens_per_s'] / bbest['tokens_per_s']:.2f}x (goal >= 3)")
    print("checks:", rep.get("datakit", {}).get("checks"))


if __name__ == "__main__":
    main()
