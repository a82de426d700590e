"""datakit/train/dropout_gemm.py: the rank-r products with the dropout mask made inside them.

The kernels are Triton on CUDA: tested on a GPU through the device tool (skipped here). Each is
compared with the two-step path it replaces (``datakit.train.dropout`` makes ``drop(x)`` as a
tensor, then a matmul): the same seed must drop the same elements, so a wrong mask shows as a
difference far above bf16 rounding at p = 0.3."""

import pytest
import torch

from datakit.train import dropout as DR
from datakit.train import dropout_gemm as DG

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_not_used_on_the_cpu_or_for_shapes_it_cannot_take():
    x, a = torch.zeros(8, 64, dtype=torch.bfloat16), torch.zeros(16, 64, dtype=torch.bfloat16)
    assert not DG.usable(x, a)
    if torch.cuda.is_available():
        assert DG.usable(x.cuda(), a.cuda())
        assert not DG.usable(x.cuda(), a[:8].cuda())  # rank under 16
        assert not DG.usable(x[:, :60].cuda(), a[:, :60].cuda())  # in_features not a multiple of 8
        assert not DG.usable(x.float().cuda(), a.float().cuda())


def _close(got, want, what):
    err = (got.float() - want.float()).abs().max().item()
    scale = want.float().abs().max().item()
    assert err <= 0.02 * scale + 1e-3, f"{what}: max error {err} against max {scale}"


@cuda
@pytest.mark.parametrize("m,k,r", [(300, 1000, 16), (64, 128, 32), (1, 3584, 16), (777, 4104, 64)])
def test_down_equals_the_two_step_path(m, k, r):
    torch.manual_seed(0)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    a = torch.randn(r, k, device="cuda", dtype=torch.bfloat16) / k ** 0.5
    seed = DR.new_seed(x.device)
    want = (DR.dropout(x, seed, 0.3).float() @ a.float().t()) * 2.0
    _close(DG.down(x, a, seed, 0.3, 2.0), want, "xa")
    other = DG.down(x, a, DR.new_seed(x.device), 0.3, 2.0)
    assert (other.float() - want).abs().max() > 0.1  # another seed, another mask: the check can fail


@cuda
@pytest.mark.parametrize("m,k,r", [(300, 1000, 16), (4096, 3584, 16), (257, 512, 32)])
@pytest.mark.parametrize("need_x,need_a", [(True, True), (True, False), (False, True)])
def test_backward_equals_the_two_step_path(m, k, r, need_x, need_a):
    torch.manual_seed(1)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    a = torch.randn(r, k, device="cuda", dtype=torch.bfloat16) / k ** 0.5
    g_xa = torch.randn(m, r, device="cuda", dtype=torch.bfloat16)
    g_x0 = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    seed = DR.new_seed(x.device)
    kept = DR.dropout(torch.ones_like(x), seed, 0.3) != 0
    want_x = g_x0.float() + torch.where(kept, (g_xa.float() @ a.float()) / 0.7, 0.0)
    want_a = g_xa.float().t() @ DR.dropout(x, seed, 0.3).float()
    g_x = g_x0.clone() if need_x else None
    g_a = DG.backward(x, g_xa, a, seed, 0.3, g_x, need_a)
    if need_x:
        _close(g_x, want_x, "g_x")
    if need_a:
        assert g_a.shape == a.shape and g_a.dtype == a.dtype
        _close(g_a, want_a, "g_A")
    else:
        assert g_a is None


@cuda
def test_a_lora_layer_trains_the_same_with_the_mask_inside_the_products(monkeypatch):
    from peft import LoraConfig, get_peft_model

    from datakit.train import fused_lora

    def grads(fused_kernels: bool):
        monkeypatch.setattr(DG, "usable", DG.usable if fused_kernels else (lambda x, a: False))
        torch.manual_seed(0)
        base = torch.nn.Sequential(torch.nn.Linear(512, 768, bias=False)).cuda().to(torch.bfloat16)
        model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.3, target_modules=["0"]))
        for n, prm in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(prm, std=0.05)
        model = model.to(torch.bfloat16)
        assert fused_lora.fuse(model) == 1
        model.train()
        x = torch.randn(3, 100, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        torch.manual_seed(5)  # the same seed for the layer's mask in both runs
        y = model(x)
        (y.float() ** 2).mean().backward()
        out = {n: prm.grad.clone() for n, prm in model.named_parameters() if prm.grad is not None}
        return y.detach(), x.grad.clone(), out

    y1, gx1, g1 = grads(True)
    y2, gx2, g2 = grads(False)
    _close(y1, y2, "output")
    _close(gx1, gx2, "input gradient")
    assert g1.keys() == g2.keys() and len(g1) == 2
    for n in g1:
        _close(g1[n], g2[n], n)
