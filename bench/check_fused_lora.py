"""How close the fused LoRA layers' gradients are to a float32 reference, against peft's modules.

    python bench/check_fused_lora.py MODEL_DIR [--tokens 1024] [--seeds 0 1 2] [--build TOKENIZER_DIR]

(``--build``: first write bench/train_small.py's random Qwen2.5-1.5B-shaped model to MODEL_DIR.)

On a CUDA GPU, the model loaded 4-bit with datakit's loader and LoRA r=16 on all linear layers
(B drawn non-zero so that every adapter gradient counts), SDPA attention, one sequence: the
loss and the concatenated adapter gradients of

* peft's modules in bf16, twice (the run-to-run floor of the GPU kernels);
* datakit's fused layers (:mod:`datakit.train.fused_lora`) in bf16;
* the fused layers in float32 (every parameter but the 4-bit weights in float32, the 4-bit
  weights dequantised as in bf16, then widened): the reference.

Prints each one's relative error against the reference (||g - g_ref|| / ||g_ref||).
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--build", default=None)
    args = ap.parse_args()
    import sys
    from pathlib import Path

    import torch

    if args.build:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import train_small

        train_small.build(Path(args.model_dir), Path(args.build))

    from datakit.train import data as D
    from datakit.train import fused_lora as FL
    from datakit.train.model import ModelSpec, add_lora, load_model
    from datakit.train.trainer import batch_tensors, forward_nll

    dev = torch.device("cuda", 0)
    model = load_model(ModelSpec(args.model_dir), load_4bit=True, device=dev, dtype=torch.bfloat16, attn="sdpa")
    model = add_lora(model, r=16, alpha=32, dropout=0.0, target_modules="all-linear", gradient_checkpointing=False,
                     lora_dtype=torch.bfloat16, fused=False)
    model.eval()
    vocab = model.config.vocab_size
    half = [p for p in model.parameters() if p.dtype == torch.bfloat16]

    def run(t) -> tuple[float, torch.Tensor]:
        for p in model.parameters():
            p.grad = None
        loss = forward_nll(model, t).float().mean()
        loss.backward()
        return float(loss), torch.cat([p.grad.double().flatten() for p in model.parameters() if p.requires_grad])

    for seed in args.seeds:
        g = torch.Generator(device="cuda").manual_seed(seed)
        FL.unfuse(model)
        for p in half:
            p.data = p.data.to(torch.bfloat16)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.01, generator=g)
        torch.manual_seed(seed)
        ex = D.Example(torch.randint(0, vocab, (args.tokens,)).tolist(), [True] * args.tokens)
        t = batch_tensors(D.make_batch([ex]), dev)
        res = {"peft": run(t), "peft_again": run(t)}
        FL.fuse(model)
        res["fused"] = run(t)
        for p in half:
            p.data = p.data.float()
        res["reference_fp32"] = run(t)
        ref_loss, ref = res["reference_fp32"]
        out = {k: {"loss_rel_err": abs(v[0] - ref_loss) / abs(ref_loss),
                   "grad_rel_err": float((v[1] - ref).norm() / ref.norm())}
               for k, v in res.items() if k != "reference_fp32"}
        out["peft_vs_peft_again_grad_rel"] = float((res["peft"][1] - res["peft_again"][1]).norm() / res["peft"][1].norm())
        out["fused_vs_peft_grad_rel"] = float((res["fused"][1] - res["peft"][1]).norm() / res["peft"][1].norm())
        print(f"seed {seed}:", json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
