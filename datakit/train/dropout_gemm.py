"""A LoRA layer's rank-r products with the seeded dropout inside them (CUDA, Triton).

With dropout on, :mod:`datakit.train.fused_lora` used to make ``drop(x)`` as a tensor of ``x``'s
size before each product that needs it, and ``g_xa A`` as another before masking it into
``g_x``: per adapted layer three more passes over ``tokens x in_features`` in forward and seven
in backward than without dropout, about 45 ms of a 7B step at micro-batch 6. The products are
thin (r = 16 columns), so they are bound by reading ``x`` anyway; here the mask is made where
``x`` is read, from the same seed and element index as :func:`datakit.train.dropout.dropout`
(the same elements are dropped), and nothing of ``x``'s size is written:

``down``      ``xa = s * drop(x) A^T``                  one read of ``x``
``backward``  ``g_A = g_xa^T drop(x)`` and ``g_x += drop(g_xa A)``, one read of ``x`` and one
              read and write of ``g_x``: the memory traffic the layer has without dropout

Philox's arithmetic comes on top: on an H100 at 12,288 tokens the pair takes 0.88 ms on an 18,944
wide input (0.93 ms without dropout, cuBLAS) and 0.27 ms on a 3,584 wide one (0.18 ms);
``bench/seeded_dropout.py`` prints the three ways side by side.

Products accumulate in fp32 (``drop(x)`` is not rounded to bf16 before the product, as it is
when made as a tensor; the difference is within bf16 rounding). Used when :func:`usable` says so:
CUDA, Triton, a power-of-two rank of at least 16, ``in_features`` a multiple of 8, fewer than
2^35 elements; otherwise the layer keeps the two-step path.
"""

from __future__ import annotations

import functools

import torch

from datakit.train import dropout as DR


@functools.lru_cache(maxsize=1)
def _kernels():
    import triton
    import triton.language as tl

    bits16 = DR.triton_parts()[0]

    @triton.jit
    def keep_mask(seed, rows, k0, K, thr, BM: tl.constexpr, BK: tl.constexpr):
        # element e = row * K + col takes number e % 8 of Philox counter e // 8, as in
        # datakit.train.dropout's kernel, so both drop the same elements for one seed
        counters = (rows[:, None] * K + k0) // 8 + tl.arange(0, BK // 8)[None, :]
        return tl.reshape(bits16(seed, counters), [BM, BK]) >= thr

    @triton.jit
    def down(x_ptr, a_ptr, out_ptr, seed_ptr, M, K, cols_per, thr, mult,
             R: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
        # rows by program_id(0); the columns split into runs of cols_per by program_id(1), each run
        # writing its own partial product (out is splits x M x R: float32 when split, else the result)
        rows = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
        first = tl.program_id(1) * cols_per
        ranks = tl.arange(0, R)
        seed = tl.load(seed_ptr)
        acc = tl.zeros((BM, R), dtype=tl.float32)
        for k0 in range(first, first + cols_per, BK):
            cols = k0 + tl.arange(0, BK)
            x = tl.load(x_ptr + rows[:, None] * K + cols[None, :],
                        mask=(rows[:, None] < M) & (cols[None, :] < K), other=0.0)
            x = tl.where(keep_mask(seed, rows, k0, K, thr, BM, BK), x, 0.0).to(x_ptr.dtype.element_ty)
            a = tl.load(a_ptr + ranks[None, :] * K + cols[:, None], mask=cols[:, None] < K, other=0.0)
            acc = tl.dot(x, a, acc)
        out = out_ptr + tl.program_id(1).to(tl.int64) * M * R + rows[:, None] * R + ranks[None, :]
        tl.store(out, (acc * mult).to(out_ptr.dtype.element_ty), mask=rows[:, None] < M)

    @triton.jit
    def back(x_ptr, gxa_ptr, a_ptr, gx_ptr, part_ptr, seed_ptr, M, K, rows_per, thr, scale,
             HAS_A: tl.constexpr, HAS_X: tl.constexpr, R: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
        cols = tl.program_id(0) * BK + tl.arange(0, BK)
        first = tl.program_id(1).to(tl.int64) * rows_per
        ranks = tl.arange(0, R)
        seed = tl.load(seed_ptr)
        inside_k = cols < K
        a = tl.load(a_ptr + ranks[:, None] * K + cols[None, :], mask=inside_k[None, :], other=0.0)
        acc = tl.zeros((R, BK), dtype=tl.float32)
        for m0 in range(0, rows_per, BM):
            rows = first + m0 + tl.arange(0, BM)
            inside = (rows[:, None] < M) & inside_k[None, :]
            keep = keep_mask(seed, rows, tl.program_id(0) * BK, K, thr, BM, BK)
            gxa = tl.load(gxa_ptr + rows[:, None] * R + ranks[None, :], mask=rows[:, None] < M, other=0.0)
            if HAS_A:
                x = tl.load(x_ptr + rows[:, None] * K + cols[None, :], mask=inside, other=0.0)
                x = tl.where(keep, x, 0.0).to(x_ptr.dtype.element_ty)
                acc = tl.dot(tl.trans(gxa), x, acc)
            if HAS_X:
                t = tl.dot(gxa, a)
                g = gx_ptr + rows[:, None] * K + cols[None, :]
                gx = tl.load(g, mask=inside, other=0.0).to(tl.float32)
                tl.store(g, (gx + tl.where(keep, t * scale, 0.0)).to(gx_ptr.dtype.element_ty), mask=inside)
        if HAS_A:
            out = part_ptr + tl.program_id(1) * R * K + ranks[:, None] * K + cols[None, :]
            tl.store(out, acc * scale, mask=inside_k[None, :])

    return down, back


def usable(x: torch.Tensor, a: torch.Tensor) -> bool:
    """True when the fused kernels can take ``x`` (tokens, in) and ``a`` (r, in)."""
    r, k = a.shape
    return (DR.uses_triton(x) and r >= 16 and r & (r - 1) == 0 and r <= 128 and k % 8 == 0
            and x.numel() < 2 ** 35 and x.dtype in (torch.bfloat16, torch.float16) and a.dtype == x.dtype)


# tiles measured on an H100 at 12,288 tokens x 3,584 and x 18,944 (bench/seeded_dropout.py)
_BM_DOWN, _BK_DOWN = 32, 128
_BM_BACK, _BK_BACK = 64, 128
_SPLIT_FILL, _BACK_FILL = 4, 8


def down(x2: torch.Tensor, a: torch.Tensor, seed: torch.Tensor, p: float, scaling: float) -> torch.Tensor:
    """``scaling * drop(x2) @ a.T`` for ``x2`` (M, K) contiguous and ``a`` (r, K)."""
    m, k = x2.shape
    r = a.shape[0]
    row_blocks, col_blocks = -(-m // _BM_DOWN), -(-k // _BK_DOWN)
    # split the columns when there are too few row blocks to fill the GPU about four times over
    splits = max(1, min(col_blocks, -(-_SPLIT_FILL * _sms(x2.device.index or 0) // row_blocks)))
    cols_per = -(-col_blocks // splits) * _BK_DOWN
    splits = -(-k // cols_per)
    part = torch.empty(splits, m, r, device=x2.device, dtype=torch.float32 if splits > 1 else x2.dtype)
    _kernels()[0][(row_blocks, splits)](
        x2, a.contiguous(), part, seed, m, k, cols_per, DR.threshold(p), scaling / (1.0 - DR.rounded_p(p)),
        R=r, BM=_BM_DOWN, BK=_BK_DOWN, num_warps=4, num_stages=3)
    return part[0] if splits == 1 else part.sum(0).to(x2.dtype)


@functools.lru_cache(maxsize=8)
def _sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def backward(x2: torch.Tensor, g_xa: torch.Tensor, a: torch.Tensor, seed: torch.Tensor, p: float,
             g_x: torch.Tensor | None, need_a: bool) -> torch.Tensor | None:
    """``g_x += drop(g_xa @ a)`` in place (when ``g_x`` is given, contiguous (M, K)), and returns
    ``g_xa.T @ drop(x2)`` (r, K) when ``need_a``. ``g_xa`` is the gradient of the layer's output
    with respect to ``s * drop(x) A^T``, already multiplied by ``s``."""
    m, k = x2.shape
    r = a.shape[0]
    col_blocks = -(-k // _BK_BACK)
    row_blocks = -(-m // _BM_BACK)
    # enough programs to fill the GPU about eight times over, each over a run of whole row blocks
    splits = max(1, min(row_blocks, -(-_BACK_FILL * _sms(x2.device.index or 0) // col_blocks)))
    rows_per = -(-row_blocks // splits) * _BM_BACK
    splits = -(-m // rows_per)
    part = torch.empty(splits, r, k, device=x2.device, dtype=torch.float32) if need_a else x2
    _kernels()[1][(col_blocks, splits)](
        x2, g_xa.contiguous(), a.contiguous(), g_x if g_x is not None else x2, part, seed, m, k, rows_per,
        DR.threshold(p), 1.0 / (1.0 - DR.rounded_p(p)), HAS_A=need_a, HAS_X=g_x is not None, R=r, BM=_BM_BACK, BK=_BK_BACK,
        num_warps=4, num_stages=2)
    return part.sum(0).to(a.dtype) if need_a else None
