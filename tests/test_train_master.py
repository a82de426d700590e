"""datakit/train/model.py Fp32Master: bf16 adapter weights, float32 copies for the optimiser."""

import torch

from datakit.train.model import Fp32Master


def test_pull_push_round_trip_with_a_missing_gradient():
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(5, 3, dtype=torch.bfloat16)) for _ in range(4)]
    master = Fp32Master(ps)
    opt = torch.optim.SGD(master.params, lr=0.5)
    for step in range(3):
        for i, p in enumerate(ps):
            p.grad = None if i == 2 else torch.randn_like(p)
        want = [None if p.grad is None else p.grad.float().clone() for p in ps]
        before = [m.detach().clone() for m in master.params]
        master.pull_grads()
        assert all(p.grad is None for p in ps)
        for m, w in zip(master.params, want):
            assert (m.grad is None) == (w is None)
            if w is not None:
                assert m.grad.dtype == torch.float32 and torch.equal(m.grad, w)
        opt.step()
        master.push()
        opt.zero_grad(set_to_none=True)
        for i, (m, b, w) in enumerate(zip(master.params, before, want)):
            expect = b if w is None else b - 0.5 * w
            assert torch.allclose(m, expect)
            assert torch.equal(ps[i], m.to(torch.bfloat16))
