"""The trainer on the CPU: labels, packing, losses, DPO, resume, bad input, and a real run on the
bundled SmolLM2-135M-Instruct GGUF.

Nothing is mocked. Most tests use a tiny random-weight Qwen2 built from a config (2 layers,
hidden 64) with SmolLM2's real tokenizer and chat template, so they take seconds; the end-to-end
test trains the real bundled model for a few steps.
"""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from datakit.errors import UserError  # noqa: E402
from datakit.train import data as D  # noqa: E402
from datakit.train.config import make_config  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    # two busy cores: BLAS threads spinning against each other are 50x slower than one thread
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tokenizer():
    from datakit.train.model import find_bundled_gguf, load_tokenizer, resolve_model

    try:
        find_bundled_gguf()
    except UserError as e:
        pytest.skip(str(e))
    tok, had = load_tokenizer(resolve_model("bundled"))
    assert had  # SmolLM2 ships a ChatML chat template
    return tok


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    d = tmp_path_factory.mktemp("tiny")
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(str(d))
    tokenizer.save_pretrained(str(d))
    return d


def _load_tiny(path):
    from datakit.train.model import ModelSpec, load_model

    return load_model(ModelSpec(str(path)), load_4bit=False, device=torch.device("cpu"), dtype=torch.float32)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sft_rows(n=40):
    words = ["cats", "rivers", "bread", "stars", "trains", "tea", "snow", "maps"]
    rows = []
    for i in range(n):
        w = words[i % len(words)]
        msgs = [{"role": "user", "content": f"Say {w} three times."},
                {"role": "assistant", "content": f"{w} {w} {w}."}]
        if i % 4 == 0:
            msgs = [{"role": "system", "content": "Be terse."}] + msgs + [
                {"role": "user", "content": "Once more?"}, {"role": "assistant", "content": f"{w}."}]
        rows.append({"messages": msgs, "id": f"r{i}"})
    return rows


def _dpo_rows(n=16):
    words = ["cats", "rivers", "bread", "stars"]
    return [{"prompt": [{"role": "user", "content": f"One fact about {words[i % 4]}?"}],
             "chosen": [{"role": "assistant", "content": f"{words[i % 4]} are real."}],
             "rejected": [{"role": "assistant", "content": "No."}]} for i in range(n)]


# --------------------------------------------------------------------------- labels

def test_only_assistant_tokens_are_trained_multi_turn(tokenizer):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "And 2+2?"},
            {"role": "assistant", "content": "4"}]
    ex = D.encode(tokenizer, msgs)
    trained = "".join(tokenizer.decode([i]) for i, t in zip(ex.ids, ex.trained) if t)
    assert trained == "Hello!<|im_end|>\n4<|im_end|>\n"
    untrained = "".join(tokenizer.decode([i]) for i, t in zip(ex.ids, ex.trained) if not t)
    for s in ("Be brief.", "Hi there", "And 2+2?", "<|im_start|>assistant\n"):
        assert s in untrained
    batch = D.make_batch([ex])
    # targets are the next token where that token is trained, and nothing else
    for t in range(len(ex) - 1):
        assert batch.targets[t] == (ex.ids[t + 1] if ex.trained[t + 1] else D.IGNORE)
    assert batch.targets[-1] == D.IGNORE


def test_dpo_trains_only_the_reply(tokenizer):
    row = _dpo_rows(1)[0]
    ex = D.encode(tokenizer, row["prompt"] + row["chosen"], first=len(row["prompt"]))
    trained = "".join(tokenizer.decode([i]) for i, t in zip(ex.ids, ex.trained) if t)
    assert trained == "cats are real.<|im_end|>\n"


def test_truncation_is_counted(tokenizer):
    convs = [r["messages"] for r in _sft_rows(8)]
    long = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    exs, stats = D.encode_sft(tokenizer, convs + [long], max_len=64)
    assert stats.examples == 9 and stats.truncated == 1 and stats.dropped_empty == 1
    assert stats.lost_tokens > 100 and len(exs) == 8


# --------------------------------------------------------------------------- packing

def transformers_nll(model, exs) -> "torch.Tensor":
    """Per-target losses from the plain transformers model (its own attention, one example at a
    time, full logits): the reference the trainer's packed, chunked loss must equal."""
    ref = []
    for e in exs:
        logits = model(input_ids=torch.tensor([e.ids])).logits[0].float()
        t = torch.tensor(D.make_batch([e]).targets)
        keep = t != D.IGNORE
        ref.append(torch.nn.functional.cross_entropy(logits[keep], t[keep], reduction="none"))
    return torch.cat(ref)


def test_packing_resets_positions_and_matches_unpacked(tokenizer, tiny_model_dir):
    from datakit.train.trainer import batch_tensors, forward_nll

    model = _load_tiny(tiny_model_dir).eval()
    exs = [D.encode(tokenizer, r["messages"]) for r in _sft_rows(5)]
    batch = D.make_batch(exs)
    starts = batch.cu_seqlens[:-1]
    assert all(batch.position_ids[s] == 0 for s in starts)
    for a, b in zip(batch.cu_seqlens, batch.cu_seqlens[1:]):
        assert batch.position_ids[a:b] == list(range(b - a))
        assert batch.targets[b - 1] == D.IGNORE  # no target across the boundary
    with torch.no_grad():
        packed = forward_nll(model, batch_tensors(batch, "cpu"))
        single = torch.cat([forward_nll(model, batch_tensors(D.make_batch([e]), "cpu")) for e in exs])
        ref = transformers_nll(model, exs)
    assert packed.shape == single.shape == ref.shape
    assert torch.allclose(packed, single, atol=1e-4, rtol=1e-4)
    assert torch.allclose(packed, ref, atol=1e-4, rtol=1e-4)
    # without the boundaries the examples would see each other: the losses must then differ
    t = batch_tensors(batch, "cpu")
    t["cu"] = torch.tensor([0, batch.n_tokens], dtype=torch.int32)
    t["max_len"] = batch.n_tokens
    with torch.no_grad():
        leaky = forward_nll(model, t)
    assert not torch.allclose(leaky, single, atol=1e-3)


def test_pack_fills_rows_without_overflow():
    exs = [D.Example([1] * n, [True] * n) for n in (90, 60, 40, 30, 20, 10, 100)]
    rows = D.pack(exs, 100)
    assert sorted(i for r in rows for i in r) == list(range(7))
    assert all(sum(len(exs[i]) for i in r) <= 100 for r in rows)
    assert len(rows) == 4  # 350 tokens need at least 4 rows of 100


def _qkv_packed():
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, 4, 10, 8, generator=g)
    k = torch.randn(1, 2, 10, 8, generator=g)
    v = torch.randn(1, 2, 10, 8, generator=g)
    return q, k, v, torch.tensor([0, 4, 10], dtype=torch.int32)


def test_varlen_falls_back_only_when_unsupported(monkeypatch):
    """The varlen flash kernel needs a CUDA GPU, which this machine lacks: the stand-ins below
    raise what the kernel raises (it is the only thing not real here)."""
    from datakit.train import attention as A

    q, k, v, cu = _qkv_packed()

    def raising(exc):
        def fn(*a, **kw):
            raise exc
        return (fn, False, True)

    # a refusal of this GPU/dtype/build: the masked path from now on, with the same result
    monkeypatch.setitem(A._state, "varlen", "untouched")
    monkeypatch.setitem(A._state, "warned", True)
    # (the dtype message is what torch 2.11's kernel said on an H100 given float32 inputs)
    for exc in (RuntimeError("FlashAttention only support fp16 and bf16 data type"),
                RuntimeError("FlashAttention only supports Ampere GPUs or newer."),
                NotImplementedError("Could not run 'aten::_flash_attention_forward' with arguments "
                                    "from the 'CUDA' backend")):
        A._state["varlen"] = "untouched"
        assert A._try_varlen(raising(exc), q, k, v, cu, 6, None) is None
        assert A._state["varlen"] is False
    # out of memory, or any other failure, is raised and the fast path stays on
    for exc in (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                RuntimeError("CUDA error: out of memory"),
                RuntimeError("shape '[10, 4, 8]' is invalid for input of size 300"),
                TypeError("varlen_attn() got an unexpected keyword argument 'window_size'")):
        A._state["varlen"] = "untouched"
        with pytest.raises(type(exc)):
            A._try_varlen(raising(exc), q, k, v, cu, 6, None)
        assert A._state["varlen"] == "untouched"
    # a kernel that runs: its [T, H, D] output comes back as [1, T, H, D]
    seen = {}

    def ok(qq, kk, vv, cq, ck, mq, mk, scale=None, **kw):
        seen.update(kw, shapes=(qq.shape, kk.shape))
        return torch.ones_like(qq)
    out = A._try_varlen((ok, False, True), q, k, v, cu, 6, None)
    assert out.shape == (1, 10, 4, 8) and seen["enable_gqa"] is True and seen["window_size"] == (-1, 0)
    assert seen["shapes"] == ((10, 4, 8), (10, 2, 8))


# --------------------------------------------------------------------------- losses

@pytest.mark.parametrize("with_bias,train_weight", [(False, False), (True, True)])
def test_chunked_nll_equals_full_logits(with_bias, train_weight):
    from datakit.train.losses import reference_nll, token_nll

    g = torch.Generator().manual_seed(3)
    n, h, v = 37, 16, 101
    x = torch.randn(n, h, generator=g, dtype=torch.float64)
    w = torch.randn(v, h, generator=g, dtype=torch.float64)
    b = torch.randn(v, generator=g, dtype=torch.float64) if with_bias else None
    tgt = torch.randint(0, v, (n,), generator=g)
    scale = torch.rand(n, generator=g, dtype=torch.float64)
    x1, w1 = x.clone().requires_grad_(), w.clone().requires_grad_(train_weight)
    b1 = b.clone().requires_grad_(train_weight) if b is not None else None
    got = token_nll(x1, w1, tgt, bias=b1, chunk=8)  # 5 chunks
    (got * scale.float()).sum().backward()
    x2, w2 = x.clone().requires_grad_(), w.clone().requires_grad_(train_weight)
    b2 = b.clone().requires_grad_(train_weight) if b is not None else None
    want = reference_nll(x2, w2, tgt, bias=b2)
    (want * scale.float()).sum().backward()
    assert torch.allclose(got, want.float(), atol=1e-5)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)
    if train_weight:
        assert torch.allclose(w1.grad, w2.grad, atol=1e-5)
        assert torch.allclose(b1.grad, b2.grad, atol=1e-5)


def test_dpo_loss_on_a_tiny_model_equals_the_formula(tokenizer, tiny_model_dir):
    from datakit.train.losses import dpo_loss
    from datakit.train.model import add_lora
    from datakit.train.trainer import batch_tensors, seq_logps

    model = add_lora(_load_tiny(tiny_model_dir), r=4, alpha=8, dropout=0.0, target_modules="all-linear",
                     gradient_checkpointing=False)
    with torch.no_grad():  # move the adapter off zero so policy != reference
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.eval()
    pairs, _ = D.encode_dpo(tokenizer, _dpo_rows(2), max_len=128)
    seqs = [s for p in pairs for s in (p.chosen, p.rejected)]
    t = batch_tensors(D.make_batch(seqs), "cpu")
    with torch.no_grad():
        pol, _ = seq_logps(model, t, len(seqs))
        with model.disable_adapter():
            ref, _ = seq_logps(model, t, len(seqs))

    def manual_logp(m, ex):  # plain full-vocabulary log-softmax, one sequence at a time
        with torch.no_grad():
            logp = torch.log_softmax(m(input_ids=torch.tensor([ex.ids])).logits[0].double(), -1)
        return sum(float(logp[t, ex.ids[t + 1]]) for t in range(len(ex) - 1) if ex.trained[t + 1])

    want_pol = [manual_logp(model, s) for s in seqs]
    with model.disable_adapter():
        want_ref = [manual_logp(model, s) for s in seqs]
    assert pol.tolist() == pytest.approx(want_pol, abs=1e-3)
    assert ref.tolist() == pytest.approx(want_ref, abs=1e-3)
    assert any(abs(a - b) > 1e-2 for a, b in zip(want_pol, want_ref))
    beta = 0.1
    losses, rewards = dpo_loss(pol[0::2], pol[1::2], ref[0::2], ref[1::2], beta)
    for k in range(2):
        z = beta * ((want_pol[2 * k] - want_ref[2 * k]) - (want_pol[2 * k + 1] - want_ref[2 * k + 1]))
        assert float(losses[k]) == pytest.approx(math.log1p(math.exp(-z)), abs=1e-4)
        assert float(rewards["chosen"][k]) == pytest.approx(beta * (want_pol[2 * k] - want_ref[2 * k]), abs=1e-4)


def test_a_4bit_checkpoint_loads_as_saved_without_a_warning(tmp_path):
    """A checkpoint saved in 4-bit (as bench/train_72b.py writes the 72B one) loads with its own
    quantization_config; passing ours too made transformers print a warning in the terminal.
    bitsandbytes quantises on the CPU here, so no GPU is needed."""
    import warnings

    bnb = pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Qwen2Config, Qwen2ForCausalLM

    from datakit.train.model import ModelSpec, load_model

    Qwen2ForCausalLM(Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(str(tmp_path / "bf16"))
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "bf16"), quantization_config=q,
                                         device_map={"": "cpu"}).save_pretrained(str(tmp_path / "nf4"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(ModelSpec(str(tmp_path / "nf4")), load_4bit=True, device=torch.device("cpu"),
                           dtype=torch.float32)
    assert not [w for w in caught if "quantization_config" in str(w.message)]
    assert isinstance(model.model.layers[1].mlp.down_proj, bnb.nn.Linear4bit)


# --------------------------------------------------------------------------- runs

def _cfg(tmp_path, data, model, **kw):
    base = dict(data=str(data), model=str(model), out=str(tmp_path / "out"), max_steps=4, eval_every=2,
                lr=3e-3, max_len=128, batch_size=2, grad_accum=2, samples=1, sample_tokens=4)
    base.update(kw)
    return make_config(None, **base)


def test_dpo_run_logs_rewards(tmp_path, tiny_model_dir):
    from datakit.train import train

    data = _write_jsonl(tmp_path / "dpo.jsonl", _dpo_rows(16))
    s = train(_cfg(tmp_path, data, tiny_model_dir, method="dpo", grad_accum=1, sft_weight=0.5))
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)  # adapter starts at zero
    for key in ("rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy"):
        assert key in rows[-1]
    assert rows[-1]["reward_margin"] > 0 and "eval_accuracy" in rows[-1]
    assert s["method"] == "dpo" and s["best_eval_loss"] is not None


def test_resume_after_interruption_continues_exactly(tmp_path, tiny_model_dir):
    from datakit.train import train

    data = _write_jsonl(tmp_path / "sft.jsonl", _sft_rows(40))
    full = train(_cfg(tmp_path / "a", data, tiny_model_dir, save_every=2))
    full_rows = (tmp_path / "a" / "out" / "metrics.jsonl").read_text().splitlines()

    class Stop(Exception):
        pass

    def stop_at_2(kind, d):
        if kind == "step" and d["step"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train(_cfg(tmp_path / "b", data, tiny_model_dir, save_every=2), stop_at_2)
    assert (tmp_path / "b" / "out" / "checkpoint-last" / "state.json").exists()
    resumed = train(_cfg(tmp_path / "b", data, tiny_model_dir, save_every=2))
    assert resumed["resumed_from"] == 2
    rows = [json.loads(x) for x in (tmp_path / "b" / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    want = [json.loads(x) for x in full_rows]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in want], abs=1e-5)
    assert resumed["best_eval_loss"] == pytest.approx(full["best_eval_loss"], abs=1e-5)
    # other settings in the same folder are refused, not mixed in
    with pytest.raises(UserError, match="other settings"):
        train(_cfg(tmp_path / "b", data, tiny_model_dir, lr=1e-3))


# --------------------------------------------------------------------------- bad input

def _cli(argv, capsys):
    from datakit.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err


def test_missing_file_exits_2_with_one_line(tmp_path, capsys):
    code, err = _cli(["train", "--data", str(tmp_path / "nope.jsonl"), "--model", "x", "--out",
                      str(tmp_path / "o")], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "nope.jsonl: file not found" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("row,needle", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "sft.jsonl:2: messages: no assistant message"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "sft.jsonl:2: messages[0].role: role must be"),
    ({"messages": [{"role": "user", "content": 5}]}, "sft.jsonl:2: messages[0].content: content must be text"),
    ({"chosen": [], "rejected": [], "prompt": []}, "sft.jsonl:2: messages: missing 'messages' (this looks like a DPO"),
])
def test_bad_row_exits_2_naming_file_line_field(tmp_path, capsys, row, needle):
    data = _write_jsonl(tmp_path / "sft.jsonl", _sft_rows(1) + [row])
    code, err = _cli(["train", "--data", str(data), "--model", "x", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and needle in err and err.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()


def test_bad_json_and_bad_options_exit_2(tmp_path, capsys):
    data = tmp_path / "sft.jsonl"
    data.write_text('{"messages": [}\n')
    code, err = _cli(["train", "--data", str(data), "--model", "x", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "sft.jsonl:1: not valid JSON" in err
    good = _write_jsonl(tmp_path / "ok.jsonl", _sft_rows(2))
    code, err = _cli(["train", "--data", str(good), "--model", "x", "--out", str(tmp_path / "o"), "--lr", "5"],
                     capsys)
    assert code == 2 and "lr: must be between 0 and 1" in err
    code, err = _cli(["train", "--data", str(good), "--model", str(tmp_path / "nomodel"), "--out",
                      str(tmp_path / "o")], capsys)
    assert code == 2 and "model folder not found" in err
    cfg = tmp_path / "c.toml"
    cfg.write_text("lora_r = 8\nbogus = 1\n")
    code, err = _cli(["train", "--config", str(cfg), "--data", str(good), "--model", "x", "--out", "o"], capsys)
    assert code == 2 and "unknown setting(s): bogus" in err


def test_config_file_and_flags(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nlora_r = 8\nlr = 1e-4\nmethod = 'dpo'\n")
    c = make_config(str(cfg), data="d", model="m", out="o", lr=3e-4)
    assert (c.lora_r, c.lr, c.method, c.lora_alpha) == (8, 3e-4, "dpo", 32)


# --------------------------------------------------------------------------- the real small model

@pytest.mark.slow
def test_sft_on_bundled_smollm2_gguf_end_to_end(tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from datakit.train.model import find_bundled_gguf

    gguf = find_bundled_gguf()
    data = _write_jsonl(tmp_path / "sft.jsonl", _sft_rows(24))
    out = tmp_path / "run"
    from datakit.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(data), "--model", str(gguf), "--out", str(out), "--max-steps", "6",
              "--eval-every", "3", "--lr", "1e-3", "--max-len", "96", "--batch-size", "2", "--grad-accum", "1",
              "--samples", "1", "--sample-tokens", "6", "--eval-fraction", "0.1", "--no-validate"])
    assert e.value.code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "plain LoRA" in err  # the CPU notice
    s = json.loads((out / "summary.json").read_text())
    assert s["load_4bit"] is False and s["steps"] == 6
    assert s["last_loss"] < s["first_loss"]
    for name in ("adapter/adapter_model.safetensors", "best/adapter_model.safetensors", "loss.png", "samples.md",
                 "metrics.jsonl", "checkpoint-last/trainer_state.pt"):
        assert (out / name).is_file(), name
    assert "| base model | tuned model |" in (out / "samples.md").read_text()
    base = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
        after = tuned(input_ids=ids).logits
    assert (after - before).abs().max() > 1e-3
