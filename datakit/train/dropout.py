"""Dropout whose mask is a function of a seed, so that backward can make it again instead of
keeping it.

``torch.native_dropout`` returns the dropped input and a boolean mask; a LoRA layer's backward
needs both (the dropped input for ``g_A``, the mask for ``g_x``), so each adapted linear layer
kept 3 bytes per input element until its backward: on a 7B model at 12k tokens a micro-batch
that is ~35 GiB, and it is why micro-batch 6 did not fit with dropout on. Here the forward draws
one random 64-bit seed on the device (``torch.randint`` on the default generator: fixed by
``torch.manual_seed``, restored by gradient checkpointing, and safe inside a CUDA graph, where
it is drawn again on every replay) and the mask is ``rand(seed, element index) > p``, so the
layer keeps only its input (which other layers keep anyway) and an 8-byte seed.

On CUDA the mask is Triton's counter-based Philox generator (``tl.rand``): one kernel that reads
``x`` and writes the scaled, dropped values (optionally added into another tensor, which is how
backward applies the mask to ``g_x``). Elsewhere (the CPU, or CUDA without Triton) the same
contract is kept with a ``torch.Generator`` seeded from the seed's value, which costs a host
sync and so cannot be captured in a graph (the graph runner then falls back to eager steps).
Both are exact dropout: each element is kept with probability ``1 - p`` and scaled by
``1 / (1 - p)``; the two draw different masks for the same seed, which nothing relies on.
"""

from __future__ import annotations

import functools

import torch

_SEED_HIGH = 2 ** 62


def new_seed(device: torch.device) -> torch.Tensor:
    """A fresh seed for one dropout call: a one-element int64 tensor on ``device``."""
    return torch.randint(0, _SEED_HIGH, (1,), device=device, dtype=torch.int64)


@functools.lru_cache(maxsize=1)
def _kernel():
    """The Triton kernel, or None where Triton cannot be imported."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def seeded_dropout(x_ptr, add_ptr, out_ptr, seed_ptr, n, p, scale,
                       HAS_ADD: tl.constexpr, BLOCK: tl.constexpr):
        start = tl.program_id(0).to(tl.int64) * BLOCK
        offs = start + tl.arange(0, BLOCK)
        inside = offs < n
        seed = tl.load(seed_ptr)
        keep = tl.rand(seed, offs.to(tl.uint32)) > p  # Philox: a counter per element, no state
        x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        y = tl.where(keep, x * scale, 0.0)
        if HAS_ADD:
            y += tl.load(add_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=inside)

    return seeded_dropout


def uses_triton(x: torch.Tensor) -> bool:
    return x.is_cuda and _kernel() is not None


def _mask_torch(shape, seed: torch.Tensor, p: float, device) -> torch.Tensor:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed.item()))
    return torch.rand(shape, generator=gen, device=device) > p


def dropout(x: torch.Tensor, seed: torch.Tensor, p: float, add: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` with the elements that ``seed`` drops set to 0 and the rest scaled by 1/(1-p);
    ``add``: a tensor of ``x``'s shape to add the result into (in place, and returned). The same
    ``seed`` and ``p`` always drop the same elements of a tensor of the same shape."""
    scale = 1.0 / (1.0 - p)
    if uses_triton(x) and x.numel() < 2 ** 32:  # the element index is Philox's 32-bit counter
        x = x.contiguous()
        out = add if add is not None else torch.empty_like(x)
        n = x.numel()
        block = 2048
        _kernel()[(triton_cdiv(n, block),)](x, add if add is not None else x, out, seed, n, float(p), scale,
                                            HAS_ADD=add is not None, BLOCK=block, num_warps=8)
        return out
    kept = _mask_torch(x.shape, seed, p, x.device)
    y = torch.where(kept, x * scale, torch.zeros((), dtype=x.dtype, device=x.device))
    if add is None:
        return y
    return add.add_(y)


def triton_cdiv(n: int, block: int) -> int:
    return (n + block - 1) // block
