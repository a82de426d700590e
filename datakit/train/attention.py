"""Attention for packed rows: every sequence attends only to itself.

Registered with transformers as the attention implementation ``"datakit_varlen"``. The trainer
passes the sequence boundaries (``cu_seq_lens_q`` / ``max_length_q``, transformers' own names for
them) with each forward; the layers hand them on to this function.

* On CUDA it runs PyTorch's variable-length flash attention (``torch.nn.attention.varlen``):
  no mask tensor, no padding, and the cost of each sequence's own causal triangle only.
* Elsewhere (CPU tests), or when that kernel is missing or refuses the inputs as unsupported
  (GPU generation, dtype, head size, torch build), it builds the block-diagonal causal mask and
  calls ``scaled_dot_product_attention``: same result, O(T^2) memory. Any other error, out of
  memory above all, is raised: falling back to the bigger path would only hide it.
* With no boundaries given (generation, plain batches) it is ordinary causal SDPA.

Because transformers finds no mask builder for this name it passes ``attention_mask=None``
and builds no [T, T] mask of its own.
"""

from __future__ import annotations

import inspect
import logging
import re
from typing import Any

import torch
import torch.nn.functional as F

NAME = "datakit_varlen"
log = logging.getLogger(__name__)

_state: dict[str, Any] = {"varlen": None, "warned": False}


def _varlen_fn():
    """PyTorch's varlen flash attention and how to call it (its signature moved between
    releases: ``is_causal`` became ``window_size``; ``enable_gqa`` came later)."""
    if _state["varlen"] is None:
        try:
            from torch.nn.attention.varlen import varlen_attn

            params = inspect.signature(varlen_attn).parameters
            _state["varlen"] = (varlen_attn, "is_causal" in params, "enable_gqa" in params)
        except Exception:  # noqa: BLE001 - absent in this torch build
            _state["varlen"] = False
    return _state["varlen"]


def block_causal_mask(cu_seqlens: torch.Tensor, total: int, device: torch.device) -> torch.Tensor:
    """[total, total] bool: True where query i may attend key j (same sequence, j <= i)."""
    seq = torch.zeros(total, dtype=torch.long, device=device)
    starts = cu_seqlens[1:-1].long()
    seq[starts[starts < total]] = 1  # empty sequences (a graph's padding) repeat a start or end at total
    seq = seq.cumsum(0)
    idx = torch.arange(total, device=device)
    return (seq[:, None] == seq[None, :]) & (idx[None, :] <= idx[:, None])


def _sdpa(q, k, v, scaling, mask=None, causal=False):
    # q: [B, H, T, D]; k, v: [B, Hkv, T, D]
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                          scale=scaling)


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                             **kwargs):
    """transformers attention interface: inputs [B, H, T, D]; returns ([B, T, H, D], None)."""
    cu = kwargs.get("cu_seq_lens_q")
    b, h, t, d = query.shape
    if cu is None or b != 1:
        causal = query.shape[2] > 1 and query.shape[2] == key.shape[2]
        out = _sdpa(query, key, value, scaling, mask=attention_mask if attention_mask is not None and
                    attention_mask.dim() == 4 else None, causal=causal)
        return out.transpose(1, 2).contiguous(), None
    max_len = int(kwargs.get("max_length_q") or t)
    fn = _varlen_fn() if query.is_cuda else False
    if fn:
        out = _try_varlen(fn, query, key, value, cu, max_len, scaling)
        if out is not None:
            return out, None
    mask = block_causal_mask(cu, t, query.device)
    out = _sdpa(query, key, value, scaling, mask=mask[None, None])
    return out.transpose(1, 2).contiguous(), None


# what the flash kernels and their dispatch say when this GPU, dtype, head size or torch build
# cannot run them; any other error (out of memory, a wrong shape) is a real failure
_UNSUPPORTED = re.compile(r"not supported|unsupported|only supports?|not compiled|no kernel image|"
                          r"could not run|not implemented", re.IGNORECASE)


def unsupported(e: BaseException) -> bool:
    """True when ``e`` says the varlen kernel cannot run these inputs here (fall back to the
    masked path); False for everything else, out-of-memory first of all (re-raise)."""
    if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower():
        return False
    if isinstance(e, NotImplementedError):
        return True
    return isinstance(e, RuntimeError) and bool(_UNSUPPORTED.search(str(e)))


def _try_varlen(fn, query, key, value, cu, max_len: int, scaling):
    """[1, T, H, D] from varlen flash attention, or None when the kernel refuses these inputs as
    unsupported (from then on the masked path is used: the next layer would be refused alike).
    Any other error is raised."""
    varlen_attn, old_api, has_gqa = fn
    h = query.shape[1]
    q = query[0].transpose(0, 1)  # [T, H, D]
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    if not has_gqa and k.shape[1] != h:
        k = k.repeat_interleave(h // k.shape[1], dim=1)
        v = v.repeat_interleave(h // v.shape[1], dim=1)
    cu32 = cu.to(torch.int32)
    extra = {"is_causal": True} if old_api else {"window_size": (-1, 0)}
    if has_gqa and k.shape[1] != h:
        extra["enable_gqa"] = True
    try:
        return varlen_attn(q, k, v, cu32, cu32, max_len, max_len, scale=scaling, **extra).unsqueeze(0)
    except Exception as e:
        if not unsupported(e):
            raise
        if not _state["warned"]:
            log.warning("varlen flash attention is not supported here (%s); using SDPA with a block mask",
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
            _state["warned"] = True
        _state["varlen"] = False
        return None


def register() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention_forward)
    return NAME
