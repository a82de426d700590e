"""Fused GPU kernels for the decoder's small operations: Liger's RMSNorm, RoPE and SwiGLU.

Profiled on one H100 (bench/profile_step.py, 7B shape, micro-batch 4 of 2048 tokens), about
40% of a QLoRA step's GPU time was element-wise kernels: RMSNorm in float32 as half a dozen
passes, rotary embeddings, SiLU times the up projection, LoRA's scaling, dropout and adds. The
LoRA part is :mod:`datakit.train.fused_lora`; the rest is what Liger Kernel (Triton) fuses.
Its fused linear cross-entropy is not used: datakit's chunked loss already never builds the
logits (:mod:`datakit.train.losses`).

``kernels = "auto"`` uses Liger when it is installed, the model runs on a CUDA GPU and Liger
knows the model type; ``"liger"`` insists (a one-line error otherwise); ``"torch"`` never.
Liger patches the model instance's modules, and the rotary function of the model's
transformers module for the whole process (its own design).
"""

from __future__ import annotations

import importlib.util
import logging

from datakit.errors import UserError

CHOICES = ("auto", "liger", "torch")


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def _unavailable(device) -> str | None:
    """Why Liger cannot run here (None: it can)."""
    if getattr(device, "type", str(device)) != "cuda":
        return "Liger's kernels need a CUDA GPU"
    if not liger_available():
        return "liger-kernel is not installed (pip install 'datakit[gpu]')"
    return None


def check(kernels: str, device) -> None:
    """Before anything heavy loads: a bad ``kernels`` value, or ``liger`` where it cannot run, is
    a one-line error (the model type is checked by :func:`apply`, once the model is loaded)."""
    if kernels not in CHOICES:
        raise UserError(f"unknown kernels {kernels!r} (use one of {', '.join(CHOICES)})", field="kernels")
    if kernels == "liger" and (why := _unavailable(device)):
        raise UserError(f"--kernels liger: {why}", field="kernels")


def apply(model, kernels: str, device) -> str:
    """Patch ``model`` (a transformers causal LM, before or after peft wrapping) per ``kernels``;
    returns what it runs with: ``"liger"`` or ``"torch"``."""
    check(kernels, device)
    if kernels == "torch":
        return "torch"
    why = _unavailable(device)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if why is None:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

        if getattr(base.config, "model_type", None) not in MODEL_TYPE_TO_APPLY_LIGER_FN:
            why = f"Liger has no kernels for model type {getattr(base.config, 'model_type', None)!r}"
    if why is not None:
        if kernels == "liger":
            raise UserError(f"--kernels liger: {why}", field="kernels")
        return "torch"
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    logging.getLogger("liger_kernel").setLevel(logging.WARNING)
    _apply_liger_kernel_to_instance(model=base, rope=True, rms_norm=True, swiglu=True,
                                    cross_entropy=False, fused_linear_cross_entropy=False)
    return "liger"
