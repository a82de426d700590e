"""``datakit train --shard``: the FSDP wrapping plan, and two sharded processes on the CPU.

The plan tests build tiny random-weight Llama and Qwen2 models from a config and apply real PEFT
LoRA. On a GPU the decoder's linear layers are bitsandbytes 4-bit modules; bitsandbytes' 4-bit
path cannot run on this CPU, so the plan is checked on the same module tree with ordinary
``nn.Linear`` layers in their place (the plan is chosen by module names and classes, the same
with either). The two-process test runs FSDP2 over gloo on the CPU with float32 weights (no
4-bit: that needs CUDA) under a hard timeout, and compares it with one unsharded process.

This file is also the worker of that test: ``python tests/test_train_shard.py SPEC.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HARD_TIMEOUT_S = 300  # both processes together; a healthy run takes well under a minute here


def _worker(spec_path: str) -> int:
    """One rank: train as the spec says; write the run's summary (rank 0) and exit 2 with the
    one line of a UserError, like the CLI."""
    import torch

    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ["RANK"])
    from datakit.errors import UserError
    from datakit.train.config import make_config
    from datakit.train.trainer import Run

    cfg = make_config(None, **{**spec["config"], "out": spec["out_by_rank"][rank]})
    try:
        summary = Run(cfg).execute()
    except UserError as e:
        print(e, file=sys.stderr)
        return 2
    Path(spec["result"].format(rank=rank)).write_text(json.dumps(summary))
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(_worker(sys.argv[1]))


import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
if not torch.distributed.is_available():
    pytest.skip("this torch build has no torch.distributed", allow_module_level=True)

from datakit.errors import UserError  # noqa: E402
from datakit.train.config import make_config  # noqa: E402
from test_train import _sft_rows, _write_jsonl, tiny_model_dir, tokenizer  # noqa: E402,F401 - fixtures


# --------------------------------------------------------------------------- the wrapping plan

def _tiny_lora(kind: str, tied: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    conf, cls = (LlamaConfig, LlamaForCausalLM) if kind == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    model = cls(conf(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied))
    for p in model.parameters():
        p.requires_grad_(False)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))


def _owner(name: str, units: list[str]) -> str:
    """The innermost unit holding parameter ``name`` (``""``: the root)."""
    inside = [u for u in units if u and name.startswith(u + ".")]
    return max(inside, key=len) if inside else ""


@pytest.mark.parametrize("kind,tied", [("llama", False), ("qwen2", True), ("qwen2", False)])
def test_wrap_plan_puts_every_decoder_layer_in_a_unit_of_its_own(kind, tied):
    from datakit.train.shard import wrap_plan

    model = _tiny_lora(kind, tied)
    units = wrap_plan(model)
    layers = model.get_base_model().model.layers
    assert units[-1] == "" and len(units) == len(layers) + 1  # one unit per layer, then the root
    by_name = dict(model.named_modules())
    assert [by_name[u] for u in units[:-1]] == list(layers)
    # every linear layer the base model quantises to 4-bit on a GPU (all but the output layer),
    # with its LoRA A and B, lives in a layer's unit: nothing quantised is left to the root
    head = model.get_base_model().get_output_embeddings()
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and mod is not head:
            assert _owner(name + ".weight", units) != "", name
    # the root keeps only the embeddings, the final norm and the (untied) output layer
    root = {n for n, _ in model.named_parameters() if _owner(n, units) == ""}
    want = {"base_model.model.model.embed_tokens.weight", "base_model.model.model.norm.weight"}
    if not tied:
        want.add("base_model.model.lm_head.weight")
    assert root == want
    # and every trainable (LoRA) parameter is in a layer's unit
    assert all(_owner(n, units) for n, p in model.named_parameters() if p.requires_grad)


def test_wrap_plan_refuses_a_model_without_layer_classes():
    from datakit.train.shard import wrap_plan

    model = _tiny_lora("qwen2", True)
    model.get_base_model()._no_split_modules = []
    with pytest.raises(UserError, match="no decoder layer class"):
        wrap_plan(model)


def test_share_gives_every_rank_the_same_number_of_batches():
    from datakit.train.shard import share

    batches = ["a", "b", "c"]
    assert share(batches, 2, 0) == [("a", True), ("c", True)]
    assert share(batches, 2, 1) == [("b", True), ("b", False)]
    assert share(["a"], 2, 1) == [("a", False)]  # no batch of its own: it repeats the step's first
    assert share([], 2, 0) == []


def test_shard_with_one_process_is_refused_in_one_line(tmp_path):
    from datakit.train.trainer import Run

    cfg = make_config(None, data="d.jsonl", model="m", out=str(tmp_path / "o"), shard=True)
    with pytest.raises(UserError, match="several processes and this run has one") as e:
        Run(cfg)
    assert "\n" not in str(e.value)
    cfg = make_config(None, data="d.jsonl", model="m", out=str(tmp_path / "o"), shard=True,
                      optimizer="paged_adamw_8bit")
    os.environ["WORLD_SIZE"] = "2"
    try:
        with pytest.raises(UserError, match="paged 8-bit AdamW cannot step sharded"):
            Run(cfg)
    finally:
        del os.environ["WORLD_SIZE"]


def test_cli_shard_with_one_process_exits_2_with_one_line(tmp_path):
    data = _write_jsonl(tmp_path / "sft.jsonl", _sft_rows(4))
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    p = subprocess.run([sys.executable, "-m", "datakit", "train", "--data", str(data), "--model", "bundled",
                        "--out", str(tmp_path / "o"), "--shard", "--no-validate"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--shard" in lines[0] and "Traceback" not in p.stderr, p.stderr


# --------------------------------------------------------------------------- two sharded processes

def _launch(tmp_path: Path, config: dict, outs: list[str]) -> list[subprocess.CompletedProcess]:
    """Start the ranks as torchrun would, under one hard deadline; kill them all if it passes."""
    from helpers import run_ranks

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"config": config, "out_by_rank": outs, "result": str(tmp_path / "rank{rank}.json")}))
    done = run_ranks(Path(__file__), spec, len(outs), HARD_TIMEOUT_S, "sharded ranks")
    failed = [(rank, p) for rank, p in enumerate(done) if p.returncode != 0]
    assert not failed, "\n".join(f"rank {r} exited {p.returncode}:\n{p.stderr[-3000:]}" for r, p in failed)
    return done


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_two_sharded_ranks_train_like_one_unsharded_process_and_resume(tmp_path, tiny_model_dir):
    from datakit.train.trainer import Run

    # 5 micro-batches of 2 examples (counted, not by tokens): steps of 2, so in the last step
    # rank 1 has none of its own, and the one eval batch is rank 0's: rank 1 runs padding
    config = dict(data=str(_write_jsonl(tmp_path / "sft.jsonl", _sft_rows(10))),
                  eval_data=str(_write_jsonl(tmp_path / "eval.jsonl", _sft_rows(1))),
                  model=str(tiny_model_dir), pack=False, batch_size=2, batch_tokens=0, grad_accum=1,
                  epochs=1.0, eval_every=2, save_every=1, max_steps=2, lr=3e-3, warmup_ratio=0.0, max_len=128,
                  lora_dropout=0.0, samples=1, sample_tokens=4, shard=True)
    outs = [str(tmp_path / "out"), str(tmp_path / "out-rank1")]
    _launch(tmp_path, config, outs)
    out = Path(outs[0])
    assert not Path(outs[1]).exists()  # only rank 0 writes
    s = json.loads((out / "summary.json").read_text())
    assert s["world_size"] == 2 and s["steps"] == 2 and s["config"]["shard"] is True
    assert json.loads((tmp_path / "rank1.json").read_text()) == {}
    # then on to the end of the epoch (3 steps), resuming from checkpoint-last at step 2; as
    # under torchrun, every rank is given the same --out now (each reads checkpoint-last)
    _launch(tmp_path, {**config, "max_steps": None}, [outs[0], outs[0]])
    s = json.loads((out / "summary.json").read_text())
    assert s["resumed_from"] == 2 and s["steps"] == 3

    # one unsharded process, same global batch (2 micro-batches a step), same stop and resume
    single = {**config, "shard": False, "grad_accum": 2, "out": str(tmp_path / "single")}
    Run(make_config(None, **single)).execute()
    Run(make_config(None, **{**single, "max_steps": None})).execute()
    got, want = _metrics(out), _metrics(tmp_path / "single")
    assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2, 3]
    # float32 on both sides; the sharded run sums gradients across ranks in another order, so
    # losses are compared to 1e-4 relative, not to the bit
    for key in ("loss", "tokens", "eval_loss"):
        assert [r[key] for r in got if key in r] == pytest.approx([r[key] for r in want if key in r], rel=1e-4), key
    a, b = _adapter(out / "adapter"), _adapter(tmp_path / "single" / "adapter")
    assert a.keys() == b.keys() and a
    for k in a:
        assert a[k].shape == b[k].shape and torch.allclose(a[k], b[k], atol=1e-5), k
    assert (out / "best" / "adapter_model.safetensors").is_file()
