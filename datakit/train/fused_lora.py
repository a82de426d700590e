"""One autograd function for a LoRA linear layer over a frozen (4-bit or plain) base.

peft computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling`` as separate modules: for a
4-bit base, bitsandbytes' own autograd function, then the dropout, two small matmuls, a scaling
and an add, each a kernel over the layer's whole output in the forward pass and again in the
backward pass, plus Python dispatch per module. At micro-batch 1 the step is bound by those
launches; at large micro-batches the extra passes over ``tokens x out_features`` tensors cost
memory bandwidth. :class:`_QLoraLinear` does the same maths in one function:

forward   ``y = x W^T (+ bias);  y += (s * drop(x) A^T) B^T``   (the add inside the GEMM: addmm)
backward  ``g_x = g_y W + ((s * g_y B) A) [* mask]``             (W dequantised again, not kept)
          ``g_B = g_y^T (s * drop(x) A^T);  g_A = (s * g_y B)^T drop(x)``

It saves only ``x`` and the r-wide ``s * drop(x) A^T``, and never keeps the dequantised weight.
With dropout on, the mask is not kept either: it is a function of an 8-byte seed drawn in the
forward pass (:mod:`datakit.train.dropout`), and backward makes ``drop(x)`` and the masked
``g_x`` term again from ``x`` and the seed instead of 3 bytes an input element held from forward
to backward. On a GPU the mask is made inside the rank-r products (:mod:`datakit.train.dropout_gemm`),
so dropout adds no pass over ``x``'s size; elsewhere it is a tensor made just before its use. It is used when gradients are on
(training); without them (evaluation, generation) the layer takes peft's path. The adapter stays peft's: the
same parameters, names and saved files; :func:`fuse` only replaces ``forward`` on the layers it
can take (one active adapter, no DoRA, no adapter bias, not merged, base ``nn.Linear`` or
bitsandbytes ``Linear4bit``) and leaves any other layer on peft's path.
"""

from __future__ import annotations

import types

import torch

from datakit.train import dropout as DR
from datakit.train import dropout_gemm as DG


def _weight(base: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """The base layer's weight (out, in) in ``dtype``: dequantised when it is 4-bit."""
    w = base.weight
    state = getattr(w, "quant_state", None)
    if state is not None:
        import bitsandbytes.functional as bnbf

        if getattr(state, "packing_format_for_cpu", False):  # bitsandbytes repacks for CPU inference
            from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse

            w.data, w.quant_state = _convert_weight_packed_for_cpu_inverse(w.data, state)
            state = w.quant_state
        w = bnbf.dequantize_4bit(w.data, state)
    return w if w.dtype == dtype else w.to(dtype)


class _QLoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, b, base, scaling, p):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        w = _weight(base, x.dtype)
        bias = None if base.bias is None else base.bias.to(x.dtype)
        y = torch.nn.functional.linear(x2, w, bias)  # the bias inside the GEMM: rounded once, as bitsandbytes does
        del w
        seed = None
        if p > 0:  # the dropped x lives only until xa is made; backward makes it again
            seed = DR.new_seed(x.device)
            if DG.usable(x2, a):
                xa = DG.down(x2.contiguous(), a, seed, p, scaling)
            else:
                xa = (DR.dropout(x2, seed, p) @ a.t()).mul_(scaling)
        else:
            xa = (x2 @ a.t()).mul_(scaling)
        y.addmm_(xa, b.t())
        ctx.base, ctx.scaling, ctx.p, ctx.shape = base, scaling, p, shape
        ctx.save_for_backward(x2, xa, a, b, seed)
        return y.view(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, gy):
        x2, xa, a, b, seed = ctx.saved_tensors
        gy2 = gy.reshape(-1, gy.shape[-1])
        need_x, need_a, need_b = ctx.needs_input_grad[:3]
        g_a = g_b = g_x = None
        g_xa = (gy2 @ b).mul_(ctx.scaling)  # d loss / d (drop(x) A^T), r wide
        if need_b:
            g_b = gy2.t() @ xa
        if need_x:
            w = _weight(ctx.base, gy.dtype)
            g_x = gy2 @ w
            del w
        if seed is None:
            if need_x:
                g_x.addmm_(g_xa, a)
            if need_a:
                g_a = g_xa.t() @ x2
        elif DG.usable(x2, a):  # both uses of the mask inside the rank-r products
            g_a = DG.backward(x2.contiguous(), g_xa, a, seed, ctx.p, g_x, need_a)
        else:  # one pass under the same mask: drop(x) again for g_A, and the masked term into g_x
            xd = DR.dropout(x2 if need_a else None, seed, ctx.p, t=g_xa @ a, add=g_x) if need_x else None
            if need_a:
                g_a = g_xa.t() @ (xd if xd is not None else DR.dropout(x2, seed, ctx.p))
        return (None if g_x is None else g_x.view(ctx.shape)), g_a, g_b, None, None, None


def _plain(layer) -> bool:
    """True when ``layer`` is a peft LoRA layer this function computes exactly."""
    active = layer.active_adapters
    if len(active) != 1 or getattr(layer, "merged", False) or getattr(layer, "disable_adapters", False):
        return False
    name = active[0]
    if name not in layer.lora_A or layer.use_dora.get(name, False):
        return False
    if getattr(layer.lora_B[name], "bias", None) is not None or layer.lora_A[name].bias is not None:
        return False
    drop = layer.lora_dropout[name]
    if not isinstance(drop, (torch.nn.Dropout, torch.nn.Identity)):
        return False
    base = layer.get_base_layer()
    w = base.weight
    if isinstance(base, torch.nn.Linear) and getattr(w, "quant_state", None) is None:
        return not getattr(layer, "fan_in_fan_out", False)
    return type(base).__name__ == "Linear4bit" and getattr(w, "quant_state", None) is not None


def _forward(self, x, *args, **kwargs):
    # without gradients and without dropout (eval loss, sampling, validation answers) peft's
    # path: for one token at a time bitsandbytes multiplies by the 4-bit weights directly, never
    # dequantising them whole. Training without gradients (gradient checkpointing's first pass)
    # stays here, so that its recompute draws the same dropout mask from the same seed.
    if args or kwargs or not _plain(self):
        return type(self).forward(self, x, *args, **kwargs)
    name = self.active_adapters[0]
    drop = self.lora_dropout[name]
    p = drop.p if isinstance(drop, torch.nn.Dropout) and drop.training else 0.0
    if not torch.is_grad_enabled() and p == 0:
        return type(self).forward(self, x, *args, **kwargs)
    a, b = self.lora_A[name].weight, self.lora_B[name].weight
    if x.dtype != a.dtype:
        x = x.to(a.dtype)
    return _QLoraLinear.apply(x, a, b, self.get_base_layer(), float(self.scaling[name]), p)


def fuse(model) -> int:
    """Route every peft LoRA layer over a plain or 4-bit linear base through
    :class:`_QLoraLinear`; returns how many layers were fused. The check is repeated on each
    call, so a layer that later gets a second adapter, DoRA or a merge falls back to peft."""
    from peft.tuners.lora import LoraLayer

    n = 0
    for m in model.modules():
        if isinstance(m, LoraLayer) and isinstance(m, torch.nn.Module) and _plain(m):
            m.forward = types.MethodType(_forward, m)
            n += 1
    return n


def unfuse(model) -> None:
    for m in model.modules():
        if "forward" in vars(m) and getattr(m.forward, "__func__", None) is _forward:
            del m.forward

