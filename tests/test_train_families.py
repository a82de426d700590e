"""The trainer beyond Qwen2: tiny random-weight Llama 3, Qwen3, Mistral and GLM-4 models.

For each family, built from a config (2 layers, hidden 64) with SmolLM2's tokenizer: the
all-linear LoRA targets are that family's projection layers and nothing else; a packed row gives
the same per-token losses as its examples one by one and as the plain transformers model; and
one SFT step and one DPO step run through the real ``datakit train`` command on the CPU.
(ChatGLM2, the GLM generation the seed runs used, needs ``trust_remote_code`` and cannot load
here; GLM-4 is its successor native in transformers.)
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from helpers import run_cli  # noqa: E402
from test_train import (_dpo_rows, _one_thread, _sft_rows, _write_jsonl, tokenizer,  # noqa: E402,F401
                        transformers_nll)

from datakit.train import data as D  # noqa: E402

pytestmark = pytest.mark.slow

ATTN_MLP = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
FAMILIES = {
    # name: (config class, model class, extra config, the linear layers LoRA must wrap)
    "llama3": ("LlamaConfig", "LlamaForCausalLM", {"rope_theta": 500000.0}, ATTN_MLP),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}, ATTN_MLP),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}, ATTN_MLP),
    "glm4": ("Glm4Config", "Glm4ForCausalLM", {"head_dim": 16, "pad_token_id": 0, "eos_token_id": 2,
                                               "bos_token_id": 1}, {"q_proj", "k_proj", "v_proj", "o_proj",
                                                                     "gate_up_proj", "down_proj"}),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory, tokenizer):  # noqa: F811
    conf_cls, model_cls, extra, targets = FAMILIES[request.param]
    conf = getattr(transformers, conf_cls)(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                          max_position_embeddings=512, tie_word_embeddings=False, **extra)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp(request.param)
    getattr(transformers, model_cls)(conf).save_pretrained(str(d))
    tokenizer.save_pretrained(str(d))
    return request.param, d, targets


def _load(path):
    from datakit.train.model import ModelSpec, load_model

    return load_model(ModelSpec(str(path)), load_4bit=False, device=torch.device("cpu"), dtype=torch.float32)


def test_all_linear_targets_are_the_projections(family):
    from datakit.train.model import add_lora

    name, path, targets = family
    model = add_lora(_load(path), r=4, alpha=8, dropout=0.0, target_modules="all-linear",
                     gradient_checkpointing=False)
    wrapped = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}
    assert wrapped == targets, name
    per_layer = sum(1 for n, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)
                    and ".layers.0." in n)
    assert per_layer == len(targets)
    assert not any("lm_head" in n and hasattr(m, "lora_A") for n, m in model.named_modules())


def test_packed_equals_one_by_one_and_transformers(family, tokenizer):  # noqa: F811
    from datakit.train.trainer import batch_tensors, forward_nll

    name, path, _ = family
    model = _load(path).eval()
    exs = [D.encode(tokenizer, r["messages"]) for r in _sft_rows(4)]
    with torch.no_grad():
        packed = forward_nll(model, batch_tensors(D.make_batch(exs), "cpu"))
        single = torch.cat([forward_nll(model, batch_tensors(D.make_batch([e]), "cpu")) for e in exs])
        ref = transformers_nll(model, exs)
    assert torch.allclose(packed, single, atol=1e-4, rtol=1e-4), name
    assert torch.allclose(packed, ref, atol=1e-4, rtol=1e-4), name


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_one_step_through_datakit_train(family, tmp_path, method):
    name, path, _ = family
    rows = _sft_rows(12) if method == "sft" else _dpo_rows(12)
    data = _write_jsonl(tmp_path / f"{method}.jsonl", rows)
    out = tmp_path / "out"
    proc = run_cli("train", "--model", str(path), "--data", str(data), "--method", method, "--out", str(out),
                   "--max-steps", "1", "--samples", "0", "--no-validate", "--max-len", "128",
                   "--eval-fraction", "0.2", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1, name
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["step"] == 1 and metrics[0]["loss"] == metrics[0]["loss"]  # a number, not NaN
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
