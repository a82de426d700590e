"""TRL anchor rows for bench/train_gpu.py: SFTTrainer and DPOTrainer with peft on the same model.

Used as the ``--child trl-sft`` / ``--child trl-dpo`` processes of bench/train_gpu.py (each side
in its own process, so peak memory is its own). TRL as its documentation shows it: the model
loaded 4-bit (NF4, double quantisation, bf16 compute) by transformers, ``peft_config`` LoRA r=16
alpha=32 dropout 0.05 on all linear layers, gradient checkpointing, bf16, paged 8-bit AdamW.

* SFT: rows of ``SEQ`` random token ids, given pre-tokenised (``input_ids``), micro-batch ``mb``.
* DPO: pairs of a 512-token prompt and two 512-token replies, as text: words that the tokenizer
  maps one to one onto tokens, so each side is 1,024 tokens (+ EOS) as in datakit's DPO rows.

Step times come from a callback (``torch.cuda.synchronize`` at each step's start and end); the
median of the steps after ``warmup``; peak memory is ``max_memory_allocated`` over the timed steps.
"""

from __future__ import annotations

import random
import statistics
import time


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timer(warmup: int):
    import torch
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.t = 0.0

        def on_step_begin(self, args, state, control, **kw):
            _sync()
            if state.global_step == warmup and torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            _sync()
            if state.global_step > warmup:
                self.times.append(time.perf_counter() - self.t)

    return Timer()


def _model(path: str):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if not _cuda():  # a smoke run of the code on a CPU: no 4-bit
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=q, dtype=torch.bfloat16,
                                                device_map={"": 0})


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")


def _common(mb: int, steps: int) -> dict:
    return dict(output_dir="/tmp/trl-bench", per_device_train_batch_size=mb, gradient_accumulation_steps=1,
                max_steps=steps, learning_rate=1e-4, bf16=_cuda(), use_cpu=not _cuda(),
                optim="paged_adamw_8bit" if _cuda() else "adamw_torch",
                gradient_checkpointing=True, logging_steps=1000, save_strategy="no", report_to=[],
                dataloader_num_workers=0, seed=0)


def _row(name: str, mb: int, tokens_per_item: int, timer) -> dict:
    import torch

    step = statistics.median(timer.times)
    return {"config": name, "micro_batch": mb, "step_s": round(step, 4),
            "tokens_per_s": round(mb * tokens_per_item / step, 1),
            "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if _cuda() else None,
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2 ** 30, 2) if _cuda() else None,
            "step_times": [round(x, 4) for x in timer.times]}


def _measure(name: str, mb: int, tokens_per_item: int, make_trainer, warmup: int) -> dict:
    """Train ``make_trainer(timer)`` and return its row (or an out-of-memory row), freeing the GPU."""
    import torch

    timer = _timer(warmup)
    try:
        trainer = make_trainer(timer)
        trainer.train()
        row = _row(name, mb, tokens_per_item, timer)
    except torch.cuda.OutOfMemoryError:
        row = {"config": name, "micro_batch": mb, "oom": True}
    print(f"  {row}", flush=True)
    trainer = None
    if _cuda():
        torch.cuda.empty_cache()
    return row


def sft_rows(path: str, tokenizer: str, batches: list[int], warmup: int, steps: int, seq: int) -> list[dict]:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    vocab = min(len(tok), 150_000)
    rows = []
    for mb in batches:
        rng = random.Random(mb)
        data = Dataset.from_list([{"input_ids": [rng.randrange(vocab) for _ in range(seq)]}
                                  for _ in range(mb * (warmup + steps + 1))])
        rows.append(_measure("trl-sft", mb, seq, lambda timer: SFTTrainer(
            model=_model(path), args=SFTConfig(**_common(mb, warmup + steps), max_length=seq, packing=False),
            train_dataset=data, processing_class=tok, peft_config=_lora(), callbacks=[timer]), warmup))
    return rows


def _words(tok) -> list[str]:
    """Words (with their leading space) that the tokenizer maps to exactly one token each."""
    out = []
    for t in range(len(tok)):
        s = tok.decode([t])
        if len(s) > 2 and s[0] == " " and s[1:].isascii() and s[1:].isalpha() and tok.encode(s, add_special_tokens=False) == [t]:
            out.append(s)
        if len(out) >= 4000:
            break
    return out


def dpo_rows(path: str, tokenizer: str, batches: list[int], warmup: int, steps: int, side: int = 512) -> list[dict]:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    words = _words(tok)
    rows = []
    for mb in batches:
        rng = random.Random(mb)
        text = lambda: "".join(rng.choice(words) for _ in range(side))  # noqa: E731
        data = Dataset.from_list([{"prompt": text(), "chosen": text(), "rejected": text()}
                                  for _ in range(mb * (warmup + steps + 1))])
        cfg = DPOConfig(**_common(mb, warmup + steps), max_length=4 * side, beta=0.1)
        # tokens: chosen and rejected, each prompt + reply
        r = _measure("trl-dpo", mb, 4 * side, lambda timer: DPOTrainer(
            model=_model(path), args=cfg, train_dataset=data, processing_class=tok, peft_config=_lora(),
            callbacks=[timer]), warmup)
        if not r.get("oom"):
            r["pairs_per_s"] = round(mb / r["step_s"], 2)
        rows.append(r)
    return rows
