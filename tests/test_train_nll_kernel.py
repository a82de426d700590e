"""datakit/train/losses.py on CUDA: a chunk's loss and ``softmax - onehot`` in one Triton kernel.

Skipped without a GPU (run through the device tool); compared with the torch path of the same
function and with full float32 logits."""

import pytest
import torch

from datakit.train import losses as L

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_the_cpu_takes_the_torch_path():
    assert not L._fused_rows(torch.zeros(2, 2))


@cuda
@pytest.mark.parametrize("n,h,v,with_bias", [(300, 64, 5000, False), (37, 128, 152064, True), (5, 32, 4096, False)])
def test_kernel_equals_the_torch_path(monkeypatch, n, h, v, with_bias):
    torch.manual_seed(0)
    x = torch.randn(n, h, device="cuda", dtype=torch.bfloat16) * 2
    w = torch.randn(v, h, device="cuda", dtype=torch.bfloat16) / h ** 0.5
    b = torch.randn(v, device="cuda", dtype=torch.bfloat16) if with_bias else None
    tgt = torch.randint(0, v, (n,), device="cuda")
    tgt[0], tgt[-1] = v - 1, 0  # the last and the first column
    scale = torch.rand(n, device="cuda")

    def run(fused: bool):
        monkeypatch.setattr(L, "_fused_rows", lambda t: fused)
        x1 = x.clone().requires_grad_()
        nll = L.token_nll(x1, w, tgt, bias=b, chunk=64)
        (nll * scale).sum().backward()
        return nll.detach(), x1.grad

    nll_k, g_k = run(True)
    nll_t, g_t = run(False)
    assert torch.allclose(nll_k, nll_t, rtol=1e-4, atol=1e-4)
    assert torch.allclose(g_k.float(), g_t.float(), rtol=2e-2, atol=2e-3)
    full = L.reference_nll(x, w, tgt, bias=b)
    assert torch.allclose(nll_k, full, rtol=1e-2, atol=5e-2)  # bf16 logits against float32 ones
    wrong = tgt.clone()
    wrong[0] = (wrong[0] + 1) % v
    monkeypatch.setattr(L, "_fused_rows", lambda t: True)
    assert not torch.allclose(L.token_nll(x, w, wrong, bias=b, chunk=64)[0], nll_k[0])
