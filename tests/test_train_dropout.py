"""datakit/train/dropout.py: a dropout mask made again from its seed.

On the CPU the torch path; the Triton kernel is tested on a CUDA GPU (skipped here; run
through the device tool): the same contract, and drawn afresh on each CUDA-graph replay."""

import pytest
import torch

from datakit.train import dropout as DR

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _check_contract(device):
    torch.manual_seed(0)
    x = torch.randn(64, 300, device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    seed = DR.new_seed(torch.device(device))
    y = DR.dropout(x, seed, 0.25)
    again = DR.dropout(x, seed, 0.25)
    assert torch.equal(y, again)  # the same seed, the same mask
    kept = y != 0
    assert 0.70 < kept.float().mean().item() < 0.80
    assert torch.allclose(y[kept].float(), (x[kept].float() / 0.75), rtol=1e-2)
    other = DR.dropout(x, DR.new_seed(torch.device(device)), 0.25)
    assert not torch.equal(other != 0, kept)
    base, t = torch.randn_like(x), torch.randn_like(x)
    total = base.clone()
    again = DR.dropout(x, seed, 0.25, t=t, add=total)  # backward's pass: drop(x), and add += drop(t)
    assert torch.equal(again, y)
    want = base.float() + torch.where(kept, t.float() / 0.75, torch.zeros((), device=device))
    assert torch.allclose(total.float(), want, rtol=1e-2, atol=1e-2)  # bf16
    total2 = base.clone()
    assert DR.dropout(None, seed, 0.25, t=t, add=total2) is None and torch.equal(total2, total)
    # the mask depends on the element, not on the values: the same seed on ones gives the same mask
    assert torch.equal(DR.dropout(torch.ones_like(x), seed, 0.25) != 0, kept | (x == 0))


def test_contract_on_the_cpu():
    assert not DR.uses_triton(torch.zeros(1))
    _check_contract("cpu")


def test_seed_follows_manual_seed():
    torch.manual_seed(3)
    a = DR.new_seed(torch.device("cpu"))
    torch.manual_seed(3)
    assert torch.equal(a, DR.new_seed(torch.device("cpu")))


@cuda
def test_contract_with_triton_on_cuda():
    assert DR.uses_triton(torch.zeros(1, device="cuda"))
    _check_contract("cuda")


@cuda
def test_graph_replays_draw_new_masks():
    x = torch.randn(128, 512, device="cuda", dtype=torch.bfloat16)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up (compiles the kernel) outside the capture
        DR.dropout(x, DR.new_seed(x.device), 0.5)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        seed = DR.new_seed(x.device)
        y = DR.dropout(x, seed, 0.5)
    g.replay()
    first, first_seed = y.clone(), seed.clone()
    g.replay()
    assert not torch.equal(first, y)
    assert torch.equal(DR.dropout(x, first_seed, 0.5), first)  # eager with the replay's seed: its mask
