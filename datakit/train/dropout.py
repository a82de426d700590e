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

On CUDA the mask is Triton's counter-based Philox generator, 16 bits an element (so one call
covers eight elements, and p is rounded to a multiple of 2^-16): one kernel that reads ``x`` and
writes the scaled, dropped values; in backward the same kernel makes ``drop(x)`` again and adds
the masked ``g_x`` term in one pass (and :mod:`datakit.train.dropout_gemm` makes the same mask
inside the LoRA products). Elsewhere (the CPU, or CUDA without Triton) the same
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


# Philox-4x32 with this many rounds (Random123's default, and torch's and Triton's) gives 128 random
# bits a call; each element takes 16 of them, so one call covers 8 elements and the keep test is
# ``u >= round(p * 2^16)`` for a 16-bit ``u``: p is rounded to a multiple of 2^-16 (0.05 becomes
# 0.0500031), and the scale is 1 / (1 - that p), so the dropped values stay unbiased.
ROUNDS = 10


def threshold(p: float) -> int:
    return round(p * 65536)


def rounded_p(p: float) -> float:
    """The drop probability the CUDA kernels use for ``p``."""
    return threshold(p) / 65536


@functools.lru_cache(maxsize=1)
def triton_parts():
    """``(bits16, kernel)``, or None where Triton cannot be imported. ``bits16(seed, counters)``
    gives the eight 16-bit numbers of each Philox counter as a tensor of shape
    ``counters.shape + [2, 2, 2]``: flattened row-major, element ``8c + j`` of a run of elements
    takes number ``j`` of counter ``c``. Both this module's kernel and
    :mod:`datakit.train.dropout_gemm`'s use it, so they drop the same elements."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    rounds = tl.constexpr(ROUNDS)

    @triton.jit
    def bits16(seed, counters):
        r0, r1, r2, r3 = tl.randint4x(seed, counters.to(tl.uint32), rounds)
        r0, r1, r2, r3 = r0.to(tl.uint32), r1.to(tl.uint32), r2.to(tl.uint32), r3.to(tl.uint32)
        halves = tl.join(tl.join(r0 & 0xFFFF, r0 >> 16), tl.join(r1 & 0xFFFF, r1 >> 16))
        return tl.join(halves, tl.join(tl.join(r2 & 0xFFFF, r2 >> 16), tl.join(r3 & 0xFFFF, r3 >> 16)))

    @triton.jit
    def seeded_dropout(x_ptr, out_ptr, t_ptr, add_ptr, seed_ptr, n, thr, scale,
                       HAS_X: tl.constexpr, HAS_T: tl.constexpr, BLOCK: tl.constexpr):
        start = tl.program_id(0).to(tl.int64) * BLOCK
        offs = start + tl.arange(0, BLOCK)
        inside = offs < n
        counters = start // 8 + tl.arange(0, BLOCK // 8)  # element e: counter e // 8, number e % 8
        keep = tl.reshape(bits16(tl.load(seed_ptr), counters), [BLOCK]) >= thr
        if HAS_X:
            x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.float32)
            tl.store(out_ptr + offs, tl.where(keep, x * scale, 0.0).to(out_ptr.dtype.element_ty), mask=inside)
        if HAS_T:
            t = tl.load(t_ptr + offs, mask=inside, other=0.0).to(tl.float32)
            acc = tl.load(add_ptr + offs, mask=inside, other=0.0).to(tl.float32)
            tl.store(add_ptr + offs, (acc + tl.where(keep, t * scale, 0.0)).to(add_ptr.dtype.element_ty),
                     mask=inside)

    return bits16, seeded_dropout


def uses_triton(x: torch.Tensor) -> bool:
    return x.is_cuda and triton_parts() is not None


def _mask_torch(shape, seed: torch.Tensor, p: float, device) -> torch.Tensor:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed.item()))
    return torch.rand(shape, generator=gen, device=device) > p


def dropout(x: torch.Tensor | None, seed: torch.Tensor, p: float, t: torch.Tensor | None = None,
            add: torch.Tensor | None = None) -> torch.Tensor | None:
    """``x`` with the elements that ``seed`` drops set to 0 and the rest scaled by 1/(1-p)
    (None when ``x`` is None); with ``t`` and ``add`` (same shape), also ``add += drop(t)`` in
    place under the same mask, in the same pass: backward's two uses of one mask. The same
    ``seed`` and ``p`` always drop the same elements of a tensor of the same shape."""
    ref = x if x is not None else t
    if uses_triton(ref) and ref.numel() < 2 ** 35:  # Philox's 32-bit counter covers 8 x 2^32 elements
        assert add is None or add.is_contiguous()
        x = x.contiguous() if x is not None else None
        t = t.contiguous() if t is not None else None
        out = torch.empty_like(x) if x is not None else None
        n = ref.numel()
        block = 2048
        triton_parts()[1][(-(-n // block),)](
            x if x is not None else t, out if out is not None else add, t if t is not None else x,
            add if add is not None else out, seed, n, threshold(p), 1.0 / (1.0 - rounded_p(p)),
            HAS_X=x is not None, HAS_T=t is not None, BLOCK=block, num_warps=8)
        return out
    scale = 1.0 / (1.0 - p)
    kept = _mask_torch(ref.shape, seed, p, ref.device)
    zero = torch.zeros((), dtype=ref.dtype, device=ref.device)
    if t is not None:
        add.add_(torch.where(kept, t * scale, zero))
    return torch.where(kept, x * scale, zero) if x is not None else None
