"""Qwen2.5-72B QLoRA on one GPU, through the real ``datakit train`` command.

1. Build a Qwen2.5-72B-shaped model (hidden 8192, intermediate 29568, 80 layers, 64 heads,
   8 KV heads, vocab 152064, untied) with random weights **straight into 4-bit**: one decoder
   layer at a time is made in bf16 on the GPU, its linear weights are quantised to NF4 with
   double quantisation (bitsandbytes, as transformers does when it loads in 4-bit), and the
   packed 4-bit tensors with their quantisation state go to safetensors shards on disk, a few
   layers a shard. The whole model never exists in bf16, on the GPU or on disk (that would be
   145 GB); the folder (~40 GB) has a config with ``quantization_config``, so ``from_pretrained``
   loads it as a 4-bit checkpoint. SmolLM2's tokenizer is copied in (its ids fit the vocabulary).
2. Write a synthetic SFT export (two-turn conversations of ~1,000 tokens: packed rows of 2048).
3. Run ``python -m datakit train --model THAT_FOLDER --data EXPORT --max-steps N`` in its own
   process (micro-batch 1, rows of 2048 tokens, LoRA r=16 on all linear layers, gradient
   checkpointing, paged 8-bit AdamW: the trainer's defaults) and read back its summary.json and
   metrics.jsonl: peak GPU memory, tokens/s against the 6·N-FLOP bound (forward, backward to
   the activations, and the recomputed forward; the bf16 matmul peak is measured in the same
   process before the build), loading time, the size of what the trainer saved.
4. Remove the model folder (``--keep`` keeps it).

    python bench/train_72b.py --tokenizer DIR --out OUTDIR [--layers 80] [--steps 10]

Prints one summary and writes OUTDIR/train_72b_<layers>L.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHAPE = dict(hidden_size=8192, intermediate_size=29568, num_hidden_layers=80, num_attention_heads=64,
             num_key_value_heads=8, vocab_size=152064, max_position_embeddings=32768, rope_theta=1e6,
             rms_norm_eps=1e-6, tie_word_embeddings=False)
LAYERS_PER_SHARD = 4  # ~1.8 GB of 4-bit weights a shard


def quant_config():
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.uint8)


def _random_(module) -> None:
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)


def _quantize_into(out: dict, prefix: str, linear) -> None:
    """``linear``'s weight as bitsandbytes serialises a 4-bit Linear: the packed NF4 bytes under
    ``.weight`` and the quantisation state (absmax, quant map, nested statistics) beside it."""
    import bitsandbytes as bnb
    import torch

    packed, state = bnb.functional.quantize_4bit(linear.weight.data, blocksize=64, compress_statistics=True,
                                                 quant_type="nf4", quant_storage=torch.uint8)
    out[f"{prefix}.weight"] = packed.cpu()
    for k, v in state.as_dict(packed=True).items():
        out[f"{prefix}.weight.{k}"] = v.cpu()
    if linear.bias is not None:
        out[f"{prefix}.bias"] = linear.bias.data.cpu()


def _layer_tensors(cfg, i: int, device) -> dict:
    """Decoder layer ``i``: made in bf16 on ``device``, linear weights quantised, all on the CPU."""
    import torch
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            layer = Qwen2DecoderLayer(cfg, i)
    finally:
        torch.set_default_dtype(torch.float32)
    _random_(layer)
    out: dict = {}
    prefix = f"model.layers.{i}"
    for name, mod in layer.named_modules():
        if isinstance(mod, torch.nn.Linear):
            _quantize_into(out, f"{prefix}.{name}", mod)
        elif name and not any(True for _ in mod.children()):
            for pname, p in mod.named_parameters(recurse=False):
                out[f"{prefix}.{name}.{pname}"] = p.data.cpu()
    del layer
    return out


def _dense(shape, device, norm: bool = False):
    import torch

    t = torch.empty(shape, dtype=torch.bfloat16, device=device)
    return (t.fill_(1.0) if norm else t.normal_(0.0, 0.02)).cpu()


def build_4bit(path: Path, layers: int, device: str = "cuda") -> dict:
    """Write the 4-bit checkpoint shard by shard; returns sizes and times."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config

    t0 = time.time()
    torch.manual_seed(0)
    path.mkdir(parents=True, exist_ok=True)
    cfg = Qwen2Config(**{**SHAPE, "num_hidden_layers": layers})
    h, v = cfg.hidden_size, cfg.vocab_size
    groups = [("embed", None), ("head", None)] + [
        ("layers", list(range(s, min(layers, s + LAYERS_PER_SHARD)))) for s in range(0, layers, LAYERS_PER_SHARD)]
    weight_map: dict[str, str] = {}
    total = 0
    params = 0
    for k, (kind, idx) in enumerate(groups, 1):
        if kind == "embed":
            tensors = {"model.embed_tokens.weight": _dense((v, h), device)}
        elif kind == "head":
            tensors = {"lm_head.weight": _dense((v, h), device), "model.norm.weight": _dense((h,), device, norm=True)}
        else:
            tensors = {}
            for i in idx:
                tensors.update(_layer_tensors(cfg, i, device))
        name = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        save_file(tensors, str(path / name), metadata={"format": "pt"})
        for key, t in tensors.items():
            weight_map[key] = name
            total += t.numel() * t.element_size()
            if not any(s in key for s in (".absmax", ".quant_map", ".nested_", ".quant_state")):
                params += t.numel() * (2 if t.dtype == torch.uint8 else 1)  # two 4-bit weights a byte
        del tensors
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    cfg.quantization_config = quant_config().to_dict()
    cfg.dtype = torch.bfloat16
    cfg.save_pretrained(str(path))
    return {"params": params, "checkpoint_gb": round(total / 1e9, 2), "shards": len(groups),
            "build_s": round(time.time() - t0, 1),
            "build_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)}


def measure_bf16_tflops(seconds: float = 2.0) -> float:
    """Dense bf16 matmul throughput of this GPU (8192^3 products), TFLOP/s."""
    import torch

    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        n += 10
    dt = time.perf_counter() - t
    del a, b
    torch.cuda.empty_cache()
    return 2 * 8192 ** 3 * n / dt / 1e12


def synthetic_sft(path: Path, rows: int = 60) -> Path:
    rng = random.Random(0)
    words = "the of and to in is was for on that with as by at from his her it an are were this".split()
    out = []
    for _ in range(rows):
        q = " ".join(rng.choice(words) for _ in range(200))
        a = " ".join(rng.choice(words) for _ in range(700))
        out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


def _dir_gb(p: Path) -> float:
    return round(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e9, 3) if p.exists() else 0.0


def _watch_rss(proc) -> dict:
    """Wait for ``proc``, sampling its resident memory from /proc every 0.2 s: the peaks of the
    anonymous part (its own allocations) and of the file-backed part (mapped checkpoint pages,
    which the kernel can drop)."""
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                key, _, val = line.partition(":")
                if key in peaks:
                    peaks[key] = max(peaks[key], int(val.split()[0]))
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return {k: round(v / 2 ** 20, 2) for k, v in peaks.items()}


def run_train(mdir: Path, data: Path, eval_data: Path, run_out: Path, steps: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "datakit", "train", "--model", str(mdir), "--data", str(data),
           "--eval-data", str(eval_data), "--out", str(run_out), "--max-steps", str(steps),
           "--max-len", "2048", "--batch-size", "1", "--samples", "0", "--no-validate", "--no-resume", *extra]
    print("$", " ".join(cmd), flush=True)
    t = time.time()
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"})
    rss = _watch_rss(proc)
    rc = proc.returncode
    wall = time.time() - t
    res = {"rc": rc, "command": " ".join(cmd[1:]), "wall_s": round(wall, 1), "rss_peaks_gib": rss,
           "child_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20, 2)}
    if rc == 0:
        res["summary"] = json.loads((run_out / "summary.json").read_text())
        res["metrics"] = [json.loads(x) for x in (run_out / "metrics.jsonl").read_text().splitlines()]
        res["saved_gb"] = {p.name: _dir_gb(p) for p in run_out.iterdir() if p.is_dir()}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="a tokenizer folder (SmolLM2's)")
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--model-dir", default=None, help="[/tmp/qwen72b-4bit-<layers>L]")
    ap.add_argument("--layers", type=int, default=80)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the model folder")
    args = ap.parse_args()

    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mdir = Path(args.model_dir or f"/tmp/qwen72b-4bit-{args.layers}L")
    rep: dict = {"date": time.strftime("%Y-%m-%d"), "gpu": torch.cuda.get_device_name(0),
                 "shape": {**SHAPE, "num_hidden_layers": args.layers}, "seq_len": 2048, "versions": _versions()}
    rep["bf16_tflops"] = round(measure_bf16_tflops(), 1)
    print(f"bf16 matmul: {rep['bf16_tflops']} TFLOP/s", flush=True)
    shutil.rmtree(mdir, ignore_errors=True)
    rep["build"] = build_4bit(mdir, args.layers)
    rep["disk_free_gb_after_build"] = round(shutil.disk_usage(mdir).free / 1e9, 1)
    print("built:", rep["build"], flush=True)
    torch.cuda.empty_cache()
    for f in Path(args.tokenizer).iterdir():
        if f.is_file():
            shutil.copy(f, mdir / f.name)
    data = synthetic_sft(Path("/tmp/sft72.jsonl"))
    eval_data = synthetic_sft(Path("/tmp/sft72_eval.jsonl"), rows=2)
    run_out = Path(f"/tmp/train72-{args.layers}L")
    shutil.rmtree(run_out, ignore_errors=True)
    rep["train"] = tr = run_train(mdir, data, eval_data, run_out, args.steps, ["--grad-accum", str(args.grad_accum)])
    if not args.keep:
        shutil.rmtree(mdir, ignore_errors=True)
        shutil.rmtree(run_out, ignore_errors=True)
    if tr["rc"] == 0:
        rep["result"] = _result(rep)
    (out / f"train_72b_{args.layers}L.json").write_text(json.dumps(rep, indent=1))
    print(json.dumps(rep.get("result", {"failed": tr["rc"]}), indent=1))


def _result(rep: dict) -> dict:
    s, m = rep["train"]["summary"], rep["train"]["metrics"]
    tps = [r["tokens_per_s"] for r in m[1:] if r.get("tokens_per_s")] or [m[0]["tokens_per_s"]]
    n_matmul = rep["build"]["params"] - SHAPE["vocab_size"] * SHAPE["hidden_size"]  # the input embedding is a lookup
    bound = rep["bf16_tflops"] * 1e12 / (6 * n_matmul)
    med = statistics.median(tps)
    return {"params": rep["build"]["params"], "peak_gpu_gib": s["peak_mem_gib"], "goal_gib": 48,
            "tokens_per_s_median_after_step1": round(med, 1), "bound_6N_tokens_per_s": round(bound, 1),
            "fraction_of_bound": round(med / bound, 3), "load_s": s.get("load_s"),
            "train_process_peak_rss_gib": rep["train"]["child_peak_rss_gib"],
            "train_process_rss_peaks_gib": rep["train"]["rss_peaks_gib"], "losses": [r["loss"] for r in m],
            "saved_gb": rep["train"]["saved_gb"], "build_s": rep["build"]["build_s"],
            "checkpoint_gb": rep["build"]["checkpoint_gb"], "train_wall_s": rep["train"]["wall_s"]}


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


if __name__ == "__main__":
    main()
