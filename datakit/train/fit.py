"""Fit a step to the GPU: how many of its micro-batches run as one pass, and whether
gradient checkpointing is needed. Measured on the loaded model, not guessed from its size.

A step is ``grad_accum`` micro-batches, and its loss is normalised by the step's labelled tokens
(SFT) or pairs (DPO), so running two of them as one pass computes the same gradients (within
bf16 rounding); checkpointing changes memory, not maths. On a small model the defaults (one
2048-token row a pass, recomputed) leave an H100 mostly idle: the Qwen2.5-1.5B shape ran at 17%
of its FLOP bound by default and at 26-27% with the same step's rows in one pass and no
recompute. So on one CUDA GPU, before the first step, :func:`plan`

1. runs forward and backward on synthetic sequences of :data:`PROBE_TOKENS` tokens (random ids,
   every token labelled; a pair of half-length sequences for DPO) with checkpointing off, and
   again on, and fits peak memory over the model's resting memory as ``c + a * tokens``
   (a warm-up pass first, so one-time workspaces are not counted as per-token cost);
2. predicts a pass of ``join`` micro-batches as ``rest + c + SLOPE_MARGIN * a * tokens`` and keeps
   it under :data:`BUDGET` of the memory this process can have (free + what torch holds);
3. picks, without checkpointing if any ``join`` fits (it saves a quarter of the compute), else
   with it, the largest ``join`` that divides ``grad_accum`` and fits.

The probes leave no gradients and no random-number draws behind (the generators are restored),
so a run's numbers are those of the same run with the plan given by hand. A pass that still
runs out of memory is caught by the trainer, which halves ``join`` (then turns checkpointing
back on) and redoes the step: :func:`smaller`.

``gradient_checkpointing`` set by the user (true or false) is kept; ``fit = "off"``, several
processes, ``--shard`` or no CUDA keep the micro-batches as configured.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

GiB = 2 ** 30
PROBE_TOKENS = (512, 1024)  # measured pass sizes; small, so a probe itself fits next to a 72B model
BUDGET = 0.88  # of the memory this process can use: room for fragmentation and the graphs' inputs
SLOPE_MARGIN = 1.1  # per-token memory is measured at small passes; allocator rounding varies


@dataclass
class Plan:
    join: int = 1  # micro-batches of a step run as one pass
    checkpointing: bool = True
    reason: str = ""
    pass_tokens: int | None = None  # the largest planned pass (tokens)
    predicted_gib: float | None = None  # its predicted peak
    budget_gib: float | None = None
    rest_gib: float | None = None  # the model, adapters and optimiser masters
    per_1k_tokens_gib: dict[str, float] = field(default_factory=dict)  # "checkpointing"/"none" -> slope

    def summary(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self, per_step: int) -> str:
        ck = "on" if self.checkpointing else "off"
        if self.predicted_gib is None:
            return f"memory plan: {self.join} of {per_step} micro-batches a pass, checkpointing {ck} ({self.reason})"
        return (f"memory plan: {self.join} of {per_step} micro-batches a pass ({self.pass_tokens:,} tokens), "
                f"checkpointing {ck}: predicted peak {self.predicted_gib:.1f} of {self.budget_gib:.1f} GiB "
                f"(set --fit off to keep the micro-batches as given)")


def as_given(cfg, reason: str) -> Plan:
    return Plan(join=1, checkpointing=cfg.gradient_checkpointing is not False, reason=reason)


def joined(mbs: list[list[int]], join: int) -> list[list[int]]:
    """A step's micro-batches (lists of item indices) run ``join`` at a time."""
    if join <= 1:
        return mbs
    return [[i for mb in mbs[s: s + join] for i in mb] for s in range(0, len(mbs), join)]


def divisors_desc(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def set_checkpointing(model, on: bool) -> None:
    """Turn gradient checkpointing on or off on a loaded (peft-wrapped) model."""
    import warnings

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    with warnings.catch_warnings():  # transformers 5 renames these; the old names still work
        warnings.simplefilter("ignore", FutureWarning)
        if on == bool(getattr(inner, "is_gradient_checkpointing", False)):
            return
        if on:
            inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        else:
            inner.gradient_checkpointing_disable()


def _probe_items(method: str, tokens: int, vocab: int):
    from datakit.train import data as D

    rng = random.Random(tokens)

    def seq(n: int):
        return D.Example(ids=[rng.randrange(vocab) for _ in range(n)], trained=[True] * n)

    if method == "sft":
        return [seq(tokens)]
    return [D.Pair(chosen=seq(tokens // 2), rejected=seq(tokens - tokens // 2))]


def _peak_above_rest(run, tokens: int) -> int | None:
    """Peak bytes one forward+backward of ``tokens`` synthetic tokens adds over the resting
    memory; None when it runs out of memory."""
    import torch

    items = _probe_items(run.cfg.method, tokens, int(run.model.config.vocab_size))
    dev = run.device
    torch.cuda.synchronize(dev)
    rest = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    try:
        _, t, _ = run._tensors([0], items)
        t["denom"] = 1.0
        run._fwd_bwd(t)
        del t
        torch.cuda.synchronize(dev)
        return torch.cuda.max_memory_allocated(dev) - rest
    except torch.OutOfMemoryError:
        return None
    finally:
        for p in run.model.parameters():
            p.grad = None
        torch.cuda.empty_cache()


def measure(run, checkpointing: bool) -> tuple[float, float] | None:
    """(c, a): a pass of n tokens peaks at ``c + a * n`` bytes over the resting memory, with
    checkpointing on or off; None when even a probe does not fit."""
    set_checkpointing(run.model, checkpointing)
    if _peak_above_rest(run, PROBE_TOKENS[0]) is None:  # warm-up: kernels compiled, workspaces made
        return None
    small, large = (_peak_above_rest(run, n) for n in PROBE_TOKENS)
    if small is None or large is None:
        return None
    a = max(0.0, (large - small) / (PROBE_TOKENS[1] - PROBE_TOKENS[0]))
    return small - a * PROBE_TOKENS[0], a


def _pass_tokens(run) -> int:
    """Tokens in the largest micro-batch of the schedule (a packed row is max_len x batch_size)."""
    return max((sum(len(ex) for ex in run._seqs(mb, run.train_ex)) for mb in run.micro), default=1)


def plan(run) -> Plan:
    """The run's plan (see the module's text). Leaves the model's checkpointing as planned."""
    import torch

    cfg = run.cfg
    if cfg.fit == "off":
        return as_given(cfg, "--fit off")
    if run.device.type != "cuda":
        return as_given(cfg, "no CUDA GPU")
    if run.world > 1 or cfg.shard:
        return as_given(cfg, "several processes: each keeps the configured micro-batches")
    per_step = run.per_step
    choices = [False, True] if cfg.gradient_checkpointing is None else [bool(cfg.gradient_checkpointing)]
    cpu_rng, cuda_rng = torch.get_rng_state(), torch.cuda.get_rng_state(run.device)
    try:
        torch.cuda.synchronize(run.device)
        rest = torch.cuda.memory_allocated(run.device)
        free, _ = torch.cuda.mem_get_info(run.device)
        budget = BUDGET * (free + torch.cuda.memory_reserved(run.device))
        micro_tokens = _pass_tokens(run)
        found = Plan(join=1, checkpointing=choices[-1], reason="measured", rest_gib=round(rest / GiB, 2),
                     budget_gib=round(budget / GiB, 2))
        for ck in choices:
            fitted = measure(run, ck)
            if fitted is None:
                continue
            c, a = fitted
            found.per_1k_tokens_gib["checkpointing" if ck else "none"] = round(a * 1000 / GiB, 4)
            for join in divisors_desc(per_step):
                need = rest + c + SLOPE_MARGIN * a * join * micro_tokens
                if need <= budget:
                    found.join, found.checkpointing = join, ck
                    found.pass_tokens = join * micro_tokens
                    found.predicted_gib = round(need / GiB, 2)
                    set_checkpointing(run.model, ck)
                    return found
        found.reason = "no larger pass fits: the micro-batches as given"
        set_checkpointing(run.model, found.checkpointing)
        return found
    finally:
        torch.set_rng_state(cpu_rng)
        torch.cuda.set_rng_state(cuda_rng, run.device)


def smaller(p: Plan, cfg) -> Plan | None:
    """The next plan down after a pass ran out of memory: half the join, then checkpointing
    back on (when the user did not turn it off); None when there is nothing smaller."""
    if p.join > 1:
        join = p.join // 2
        while join > 1 and cfg.grad_accum % join:
            join -= 1
        return Plan(join=join, checkpointing=p.checkpointing, reason="a larger pass ran out of memory")
    if not p.checkpointing and cfg.gradient_checkpointing is None:
        return Plan(join=1, checkpointing=True, reason="a pass without checkpointing ran out of memory")
    return None
