"""datakit/train/fused_lora.py: the one-function LoRA layer computes what peft computes.

A tiny random Qwen2 with real peft adapters (B made non-zero so the adapter path counts), on
the CPU in float32: logits and every gradient, fused against peft's own modules; the 4-bit base
through bitsandbytes' CPU kernels; dropout against the same mask by hand and under checkpointing; layers the function
cannot take stay on peft's path."""

import pytest
import torch

from datakit.train import fused_lora as FL


def _model(quant=False, tmp_path=None, dropout=0.0, dora=False):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    conf = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2)
    base = Qwen2ForCausalLM(conf)
    if quant:
        from transformers import BitsAndBytesConfig

        pytest.importorskip("bitsandbytes")
        base.save_pretrained(str(tmp_path / "m"))
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
        base = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"), quantization_config=q,
                                                    device_map={"": "cpu"}, dtype=torch.float32)
    for p in base.parameters():
        p.requires_grad_(False)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear",
                                            use_dora=dora, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.train()  # (in eval mode bitsandbytes repacks 4-bit weights for a bf16 CPU kernel)
    return model


def _run(model, ids):
    for p in model.parameters():
        p.grad = None
    out = model(input_ids=ids).logits
    loss = out.float().pow(2).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.detach(), grads


@pytest.mark.parametrize("quant", [False, True])
def test_fused_equals_peft(tmp_path, quant):
    model = _model(quant, tmp_path)
    ids = torch.randint(0, 256, (2, 12))
    ref_out, ref_g = _run(model, ids)
    n = FL.fuse(model)
    assert n == 2 * 7  # q k v o gate up down in each layer
    out, g = _run(model, ids)
    assert torch.allclose(out, ref_out, atol=1e-5, rtol=1e-5)
    assert g.keys() == ref_g.keys() and len(g) == 2 * n
    for k in g:
        assert torch.allclose(g[k], ref_g[k], atol=1e-6, rtol=1e-4), k
    FL.unfuse(model)
    out2, _ = _run(model, ids)
    assert torch.equal(out2, ref_out)


def test_fused_with_reentrant_checkpointing_and_input_grads():
    model = _model()
    model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.base_model.model.enable_input_require_grads()
    model.train()
    ids = torch.randint(0, 256, (1, 10))
    ref_out, ref_g = _run(model, ids)
    FL.fuse(model)
    out, g = _run(model, ids)
    assert torch.allclose(out, ref_out, atol=1e-5)
    for k in g:
        assert torch.allclose(g[k], ref_g[k], atol=1e-6, rtol=1e-4), k


def test_dropout_matches_the_same_mask_by_hand(monkeypatch):
    """The mask is not kept: backward makes it again from the seed. The output and every
    gradient equal plain autograd through ``x * mask / (1 - p)`` with that mask."""
    from datakit.train import dropout as DR

    model = _model(dropout=0.3)
    model.train()
    layer = model.base_model.model.model.layers[0].mlp.up_proj
    FL.fuse(model)
    seeds = []
    real = DR.new_seed
    monkeypatch.setattr(DR, "new_seed", lambda device: seeds.append(real(device)) or seeds[-1])
    x = torch.randn(3, 5, 64, requires_grad=True)
    y = layer(x)
    gy = torch.randn_like(y)
    y.backward(gy)
    (seed,) = seeds
    mask = DR.dropout(torch.ones(15, 64), seed, 0.3) != 0
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    ga, gb, gx = a.grad.clone(), b.grad.clone(), x.grad.clone()
    a.grad = b.grad = None
    x2 = x.detach().clone().requires_grad_(True)
    xd = x2.reshape(15, 64) * mask / 0.7
    want = x2.reshape(15, 64) @ layer.get_base_layer().weight.t() + (xd @ a.t() @ b.t()) * layer.scaling["default"]
    assert torch.allclose(y.detach().reshape(15, -1), want.detach(), atol=1e-5)
    want.backward(gy.reshape(15, -1))
    assert torch.allclose(a.grad, ga, atol=1e-5) and torch.allclose(b.grad, gb, atol=1e-5)
    assert torch.allclose(x2.grad, gx, atol=1e-5)
    assert 0.15 < 1 - mask.float().mean() < 0.45
    model.eval()  # no dropout outside training: equal to the base + adapter without a mask
    y_eval = layer(x)
    FL.unfuse(model)
    assert torch.allclose(y_eval, layer(x), atol=1e-5)
    assert len(seeds) == 1


def test_dropout_under_checkpointing_recomputes_the_same_mask():
    """Gradient checkpointing runs each layer twice: first without gradients, then again in
    backward. Both passes must draw the same masks, or the gradients belong to a different
    forward than the loss: with checkpointing the loss and gradients equal a run without."""
    model = _model(dropout=0.3)
    FL.fuse(model)
    ids = torch.randint(0, 256, (2, 9))
    torch.manual_seed(5)
    ref_out, ref_g = _run(model, ids)
    model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.base_model.model.enable_input_require_grads()
    model.train()
    torch.manual_seed(5)
    out, g = _run(model, ids)
    assert torch.allclose(out, ref_out, atol=1e-6)
    for k in g:
        assert torch.allclose(g[k], ref_g[k], atol=1e-6, rtol=1e-5), k
    torch.manual_seed(6)  # another seed, other masks: the check above could fail
    out3, _ = _run(model, ids)
    assert not torch.allclose(out3, ref_out, atol=1e-4)


def test_without_gradients_peft_runs(monkeypatch):
    """Evaluation and generation (no gradients) take peft's path: bitsandbytes' one-token kernel
    multiplies by the 4-bit weights without dequantising them whole."""
    model = _model()
    FL.fuse(model)
    calls = []
    real = FL._QLoraLinear.apply
    monkeypatch.setattr(FL._QLoraLinear, "apply", lambda *a: calls.append(1) or real(*a))
    ids = torch.randint(0, 256, (1, 5))
    with torch.no_grad():
        model(input_ids=ids)
    assert calls == []
    model(input_ids=ids).logits.sum().backward()
    assert len(calls) == 14


def test_layers_it_cannot_take_stay_on_peft():
    model = _model(dora=True)
    assert FL.fuse(model) == 0
    model = _model()
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    FL.fuse(model)
    ids = torch.randint(0, 256, (1, 6))
    before = model(input_ids=ids).logits
    layer.merge()  # merged weights: the check runs again on every call and falls back
    assert not FL._plain(layer)
    assert torch.allclose(model(input_ids=ids).logits, before, atol=1e-5)
