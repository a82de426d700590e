"""What a run leaves for a person to look at: ``loss.png`` and ``samples.md``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from datakit.records import atomic_write_bytes, atomic_write_text


def plot_losses(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Train loss per step and eval loss where measured, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps = [r["step"] for r in rows if r.get("loss") is not None]
    ax.plot(steps, [r["loss"] for r in rows if r.get("loss") is not None], label="train loss", lw=1.2)
    ev = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
    if ev:
        ax.plot([s for s, _ in ev], [v for _, v in ev], "o-", label="eval loss", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title[:90])
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def prompt_of(row: Any) -> tuple[list[dict], str]:
    """The conversation up to its last assistant turn, and that turn (the reference)."""
    if isinstance(row, dict) and "prompt" in row:  # DPO pair
        return row["prompt"], row["chosen"][0]["content"]
    msgs = row
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    return msgs[:last], msgs[last]["content"]


def _tick(on_step):
    """A stopping criterion that never stops: it reports each generated token to ``on_step``."""
    import torch
    from transformers import StoppingCriteria

    class Tick(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            on_step()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return Tick()


def generate_answers(tok, model, device, conversations: list[list[dict]], max_new: int,
                     adapter_names: list[str] | None = None, on_step=None) -> list[str]:
    """Greedy answers to several conversations in one left-padded batch (a CPU spends about as
    long on a batch of 8 as on one answer). The batch runs on PyTorch's SDPA attention, which
    honours the padding mask; the model's own attention is put back afterwards. ``adapter_names``
    (peft's mixed batches): per conversation, the adapter to answer with, ``"__base__"`` for none.
    ``on_step()`` is called after each generated token (for a progress bar)."""
    import torch

    if not conversations:
        return []
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    attn, side = base.config._attn_implementation, tok.padding_side
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    try:
        base.set_attn_implementation("sdpa")
        tok.padding_side = "left"
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            extra = {"adapter_names": adapter_names} if adapter_names else {}
            if on_step is not None:
                extra["stopping_criteria"] = [_tick(on_step)]
            out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, use_cache=True,
                                 pad_token_id=tok.pad_token_id, **extra)
    finally:
        tok.padding_side = side
        base.set_attn_implementation(attn)
    width = enc["input_ids"].shape[1]
    return [tok.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def write_samples(run, rows: list, path: Path) -> int:
    """Held-out prompts answered by the base model (adapter off) and the tuned one."""
    n = min(run.cfg.samples, len(rows))
    if n == 0:
        atomic_write_text(path, "# Samples\n\n(none: --samples 0. When the run was validated, validation.json "
                                "holds held-out prompts answered by the base and the tuned model.)\n")
        return 0
    model = run.model
    model.eval()
    parts = ["# Samples: base model vs tuned model\n",
             f"Model `{run.spec.label}`, method {run.cfg.method}, greedy decoding, "
             f"at most {run.cfg.sample_tokens} new tokens. Prompts are held-out rows where there are any.\n"]
    prompts = [prompt_of(row) for row in rows[:n]]
    with model.disable_adapter():
        bases = generate_answers(run.tok, model, run.device, [p for p, _ in prompts], run.cfg.sample_tokens)
    tuneds = generate_answers(run.tok, model, run.device, [p for p, _ in prompts], run.cfg.sample_tokens)
    for i, ((prompt, ref), base, tuned) in enumerate(zip(prompts, bases, tuneds), 1):
        user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
        parts.append(f"\n## {i}. {_one_line(user, 100)}\n")
        parts.append(f"\n**Prompt (last user turn)**\n\n{_quote(user)}\n")
        parts.append(f"\n**Reference**\n\n{_quote(ref)}\n")
        parts.append("\n| base model | tuned model |\n| --- | --- |\n")
        parts.append(f"| {_cell(base)} | {_cell(tuned)} |\n")
    model.train()
    atomic_write_text(path, "".join(parts))
    return n


def _one_line(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _quote(s: str) -> str:
    return "\n".join("> " + line for line in (s or "(empty)").splitlines() or ["(empty)"])


def _cell(s: str) -> str:
    return (s or "(empty)").replace("|", "\\|").replace("\n", "<br>")
