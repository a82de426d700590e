"""Losses that never hold the full vocabulary's logits.

:func:`token_nll` takes the last hidden states of the labelled positions and the output
embedding matrix, and returns each position's negative log-likelihood of its target. It walks
the rows in chunks: per chunk one matmul in the model's dtype, a float32 log-sum-exp, and (when
a gradient is needed and the output layer is frozen, as under LoRA) the gradient with respect to
the hidden states right away, ``(softmax - onehot) @ W``, so the backward pass only scales it.
Peak extra memory is one chunk of logits, not ``tokens x vocab`` in float32.

:func:`dpo_loss` is the sigmoid DPO loss (Rafailov et al. 2023) from summed log-probabilities.
"""

from __future__ import annotations

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


class _ChunkedNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):
        n = hidden.shape[0]
        want_h = ctx.needs_input_grad[0]
        want_w = ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2])
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if want_h and not want_w else None
        w = weight if weight.dtype == hidden.dtype else weight.to(hidden.dtype)
        for s in range(0, n, chunk):
            h = hidden[s: s + chunk]
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
