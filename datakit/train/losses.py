"""Losses that never hold the full vocabulary's logits.

:func:`token_nll` takes the last hidden states of the labelled positions and the output
embedding matrix, and returns each position's negative log-likelihood of its target. It walks
the rows in chunks: per chunk one matmul in the model's dtype, a float32 log-sum-exp, and (when
a gradient is needed and the output layer is frozen, as under LoRA) the gradient with respect to
the hidden states right away, ``(softmax - onehot) @ W``, so the backward pass only scales it.
Peak extra memory is one chunk of logits, not ``tokens x vocab`` in float32. On CUDA (with
Triton) a chunk's log-sum-exp, loss and ``softmax - onehot`` are one kernel over its logits in the
model's dtype (read twice, the gradient written over them), where torch's ops make a float32
copy and pass over it seven times: about 25 ms of a 7B step at 8,192 tokens; the numbers are the
same up to float32 summation order.

:func:`dpo_loss` is the sigmoid DPO loss (Rafailov et al. 2023) from summed log-probabilities.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# elements of one chunk of logits (rows x vocab); 2**26 -> 256 MiB in float32
CHUNK_ELEMENTS = 2 ** 26


def _rows_per_chunk(vocab: int) -> int:
    return max(16, CHUNK_ELEMENTS // max(1, vocab))


def _chunk_logits(h: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """float32 logits of one chunk of hidden states (the only place a chunk's logits exist)."""
    logits = h @ w.t()
    if bias is not None:
        logits = logits + bias.to(logits.dtype)
    return logits.float()


@functools.lru_cache(maxsize=1)
def _row_kernel():
    """The Triton kernel for one chunk's rows, or None where Triton cannot be imported."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def nll_rows(logits_ptr, targets_ptr, nll_ptr, V, stride, GRAD: tl.constexpr, BLOCK: tl.constexpr):
        # one row a program: a running (max, sum of exp) per lane over the vocabulary, then the
        # row's log-sum-exp; with GRAD a second pass writes softmax - onehot over the logits
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * stride
        m = tl.full([BLOCK], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK], tl.float32)
        for v0 in range(0, V, BLOCK):
            cols = v0 + tl.arange(0, BLOCK)
            x = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
            new = tl.maximum(m, x)
            s = s * tl.where(m == new, 1.0, tl.exp(m - new)) + tl.where(x == float("-inf"), 0.0, tl.exp(x - new))
            m = new
        top = tl.max(m, axis=0)
        lse = top + tl.log(tl.sum(s * tl.where(m == float("-inf"), 0.0, tl.exp(m - top)), axis=0))
        target = tl.load(targets_ptr + row)
        tl.store(nll_ptr + row, lse - tl.load(base + target).to(tl.float32))
        if GRAD:
            for v0 in range(0, V, BLOCK):
                cols = v0 + tl.arange(0, BLOCK)
                x = tl.load(base + cols, mask=cols < V, other=0.0).to(tl.float32)
                g = tl.exp(x - lse) - tl.where(cols == target, 1.0, 0.0)
                tl.store(base + cols, g.to(logits_ptr.dtype.element_ty), mask=cols < V)

    return nll_rows


def _fused_rows(h: torch.Tensor) -> bool:
    return h.is_cuda and h.dtype in (torch.bfloat16, torch.float16, torch.float32) and _row_kernel() is not None


def _chunk_nll_fused(h, w, bias, tgt, out, grad_out) -> None:
    """One chunk on the GPU: ``out`` = the rows' NLL; with ``grad_out``, also
    ``grad_out = (softmax - onehot) @ w``."""
    logits = h @ w.t()
    if bias is not None:
        logits += bias.to(logits.dtype)
    _row_kernel()[(h.shape[0],)](logits, tgt.contiguous(), out, logits.shape[1], logits.stride(0),
                                 GRAD=grad_out is not None, BLOCK=4096, num_warps=8)
    if grad_out is not None:
        torch.matmul(logits, w, out=grad_out)


class _ChunkedNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):
        n = hidden.shape[0]
        want_h = ctx.needs_input_grad[0]
        want_w = ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2])
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if want_h and not want_w else None
        w = weight if weight.dtype == hidden.dtype else weight.to(hidden.dtype)
        fused = _fused_rows(hidden)
        for s in range(0, n, chunk):
            h = hidden[s: s + chunk]
            if fused:
                _chunk_nll_fused(h, w, bias, targets[s: s + chunk], out[s: s + chunk],
                                 grad_h[s: s + chunk] if grad_h is not None else None)
                continue
            logits = _chunk_logits(h, w, bias)
            lse = torch.logsumexp(logits, dim=-1)
            tgt = targets[s: s + chunk]
            out[s: s + chunk] = lse - logits.gather(1, tgt[:, None]).squeeze(1)
            if grad_h is not None:
                # d nll / d logits = softmax - onehot, formed in place on the chunk's logits
                logits.sub_(lse[:, None]).exp_()
                logits.scatter_add_(1, tgt[:, None], torch.full_like(lse[:, None], -1.0))
                grad_h[s: s + chunk] = logits.to(h.dtype) @ w
            del logits
        ctx.chunk = chunk
        ctx.want_w = want_w
        if want_w:
            ctx.save_for_backward(hidden, weight, bias, targets)
        else:
            ctx.save_for_backward(grad_h)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if not ctx.want_w:
            (grad_h,) = ctx.saved_tensors
            if grad_h is None:
                return None, None, None, None, None
            return grad_h * grad_out[:, None].to(grad_h.dtype), None, None, None, None
        hidden, weight, bias, targets = ctx.saved_tensors
        chunk = ctx.chunk
        w = weight if weight.dtype == hidden.dtype else weight.to(hidden.dtype)
        gh = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        gw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        gb = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if bias is not None else None
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s: s + chunk]
            p = torch.softmax(_chunk_logits(h, w, bias), dim=-1)
            p.scatter_add_(1, targets[s: s + chunk, None], torch.full_like(p[:, :1], -1.0))
            p.mul_(grad_out[s: s + chunk, None])
            if gh is not None:
                gh[s: s + chunk] = p.to(h.dtype) @ w
            gw += p.t() @ h.float()
            if gb is not None:
                gb += p.sum(0)
        return (gh, gw.to(weight.dtype), gb.to(bias.dtype) if gb is not None else None, None, None)


def token_nll(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
              bias: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """Per-row negative log-likelihood of ``targets`` under ``softmax(hidden @ weight.T + bias)``.

    ``hidden``: [N, H] (only labelled rows); ``weight``: [V, H]; ``targets``: [N] in [0, V).
    Returns float32 [N]. Differentiable with respect to ``hidden`` (and ``weight``/``bias`` when
    they require grad).
    """
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32) + 0.0 * hidden.sum()
    chunk = chunk or _rows_per_chunk(weight.shape[0])
    return _ChunkedNLL.apply(hidden, weight, bias, targets, chunk)


def reference_nll(hidden, weight, targets, bias=None):
    """The plain version (full logits in float32), for tests."""
    logits = (hidden.float() @ weight.float().t())
    if bias is not None:
        logits = logits + bias.float()
    return F.cross_entropy(logits, targets, reduction="none")


def dpo_loss(pol_chosen: torch.Tensor, pol_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sigmoid DPO: ``-log sigmoid(beta * ((pc - rc) - (pr - rr)))`` per pair (summed log-probs).

    Returns the per-pair losses and the implicit rewards ``beta * (policy - reference)``.
    """
    chosen_reward = beta * (pol_chosen - ref_chosen)
    rejected_reward = beta * (pol_rejected - ref_rejected)
    losses = -F.logsigmoid(chosen_reward - rejected_reward)
    return losses, {"chosen": chosen_reward.detach(), "rejected": rejected_reward.detach()}
