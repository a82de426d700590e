"""datakit/train/graphs.py: the fixed-shape layout CUDA graphs replay, and where graphs run.

On the CPU (here, and in CI) the layout is checked where it matters: a micro-batch padded to its
graph's shape (pad tokens as one extra sequence, empty pad sequences, every position a target
with weight 0 or 1, pad pairs for DPO) gives the same loss, counters and gradients as the plain
layout, through the trainer's own objectives and the tiny random-weight Qwen2 in float32.
Capture and replay themselves need a CUDA GPU: the last test runs there only (skipped here; it
ran on an H100 through the device tool, see BENCHMARKS.md).
"""

from __future__ import annotations


import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from datakit.errors import UserError  # noqa: E402
from datakit.train import data as D  # noqa: E402
from datakit.train import graphs as G  # noqa: E402
from datakit.train.config import make_config  # noqa: E402
from test_train import _sft_rows, tiny_model_dir, tokenizer  # noqa: E402,F401 - fixtures
from test_train_batching import _run_with_model, _varied_dpo_rows  # noqa: E402


def test_padded_shape_rounds_tokens_and_sequences_up():
    assert G.padded_shape(1, 1) == (512, 4)
    assert G.padded_shape(512, 3) == (512, 4)  # full: no pad sequence
    assert G.padded_shape(511, 3) == (512, 4)  # 3 + the pad sequence
    assert G.padded_shape(511, 4) == (512, 8)
    assert G.padded_shape(2047, 26) == (2048, 32)
    assert G.padded_shape(2049, 1) == (2560, 4)
    assert G.padded_shape(2048, 3, 700) == (2048, 4, 1024)
    assert G.padded_shape(600, 3, 600) == (1024, 4, 1024)
    # many batch sizes map to few shapes
    shapes = {G.padded_shape(n, s) for n in range(1500, 2049, 7) for s in range(1, 15)}
    assert len(shapes) == 6  # 1536 or 2048 tokens x 4, 8 or 16 sequences


def test_static_tensors_layout():
    exs = [D.Example([5, 6, 7, 8], [False, False, True, True]), D.Example([9, 10, 11], [False, True, True])]
    batch = D.make_batch(exs)
    key, t = G.static_tensors(batch, "cpu", n_pairs=1)
    assert key == (512, 4, 512) and t["max_len"] == 512 and t["n_seqs"] == 4
    assert t["input_ids"].shape == (1, 512) and t["sel"].shape == (512,)
    assert t["cu"].tolist() == [0, 4, 7, 512, 512]
    assert t["position_ids"][0, :9].tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1]
    assert t["sel"][:5].tolist() == [1, 2, 4, 5, 0]
    w = t["weight"].tolist()
    assert w[:5] == [1.0, 1.0, 1.0, 1.0, 0.0] and sum(w) == batch.n_targets == 4
    assert t["targets"][:5].tolist() == [7, 8, 10, 11, 0]
    assert t["seq_of_target"][:5].tolist() == [0, 0, 1, 1, 0]
    assert t["pair_weight"].tolist() == [1.0, 0.0]


def _grads(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.requires_grad])


def _both_layouts(run, micro, items, denom):
    out = {}
    for padded in (False, True):
        run.model.zero_grad(set_to_none=True)
        key, t, counts = run._tensors(micro, items, padded=padded)
        loss, stats = run._objective(t, denom)
        loss.backward()
        out[padded] = (float(loss.detach()), {k: float(v) for k, v in stats.items()}, _grads(run.model), key)
    return out


def test_padded_sft_equals_plain(tmp_path, tokenizer, tiny_model_dir):
    run = _run_with_model(tmp_path, tiny_model_dir, method="sft")
    exs, _ = D.encode_sft(tokenizer, [r["messages"] for r in _sft_rows(7)], max_len=256)
    micro = list(range(len(exs)))
    denom = run._targets_in(micro, exs)
    out = _both_layouts(run, micro, exs, denom)
    (l0, s0, g0, _), (l1, s1, g1, key) = out[False], out[True]
    assert key[0] > sum(len(e) for e in exs)  # there were pad tokens
    assert l1 == pytest.approx(l0, rel=1e-5) and s1["nll_sum"] == pytest.approx(s0["nll_sum"], rel=1e-5)
    assert float((g1 - g0).norm() / g0.norm()) < 1e-5 and float(g0.norm()) > 0


def test_padded_dpo_equals_plain(tmp_path, tokenizer, tiny_model_dir):
    run = _run_with_model(tmp_path, tiny_model_dir, method="dpo", sft_weight=0.3)
    pairs, _ = D.encode_dpo(tokenizer, _varied_dpo_rows(5), max_len=256)
    micro = list(range(len(pairs)))  # 5 pairs = 10 sequences: 16 in the graph's shape, 3 empty pad pairs
    out = _both_layouts(run, micro, pairs, len(micro))
    (l0, s0, g0, _), (l1, s1, g1, key) = out[False], out[True]
    assert key[1] == 16
    assert l1 == pytest.approx(l0, rel=1e-5)
    for k in ("nll_sum", "dpo_sum", "chosen_sum", "rejected_sum", "margin_sum", "acc_sum"):
        assert s1[k] == pytest.approx(s0[k], rel=1e-4, abs=1e-6), k
    assert float((g1 - g0).norm() / g0.norm()) < 1e-5 and float(g0.norm()) > 0


def test_eager_micro_step_without_graphs_is_the_plain_loss(tmp_path, tokenizer, tiny_model_dir):
    run = _run_with_model(tmp_path, tiny_model_dir, method="sft")
    run.train_ex, _ = D.encode_sft(tokenizer, [r["messages"] for r in _sft_rows(4)], max_len=256)
    micro = [0, 1, 2, 3]
    denom = run._targets_in(micro, run.train_ex)
    run.model.zero_grad(set_to_none=True)
    info = run._micro_step(micro, denom, True)
    g = _grads(run.model)
    run.model.zero_grad(set_to_none=True)
    loss, ref = run._loss(micro, run.train_ex, denom)
    loss.backward()
    assert info == pytest.approx(ref) and torch.allclose(g, _grads(run.model))
    assert run._micro_step(micro, denom, False) == {}  # padding: no counters


def test_keep_pulls_and_zeroes_in_place():
    from datakit.train.model import Fp32Master

    ps = [torch.nn.Parameter(torch.randn(4, 2, dtype=torch.bfloat16)) for _ in range(3)]
    for p in ps:
        p.grad = torch.randn_like(p)
    held = [p.grad for p in ps]
    want = [g.float().clone() for g in held]
    master = Fp32Master(ps)
    master.pull_grads(keep=True)
    assert all(p.grad is h for p, h in zip(ps, held)) and all(float(h.abs().sum()) == 0 for h in held)
    assert all(torch.equal(m.grad, w) for m, w in zip(master.params, want))


def test_settings_checked_and_not_in_the_resume_key(tmp_path):
    from datakit.train.trainer import _fingerprint

    with pytest.raises(UserError, match="cuda_graphs"):
        make_config(None, data="d", model="m", out="o", cuda_graphs="fast")
    a = make_config(None, data="d", model="m", out="o", cuda_graphs="off")
    b = make_config(None, data="d", model="m", out="o")
    assert _fingerprint(a, "sha") == _fingerprint(b, "sha")
    with pytest.raises(UserError, match="shard"):
        G.check("on", torch.device("cuda"), shard=True)
    cpu = torch.device("cpu")
    assert G.make_runner("auto", cpu, False, None) is None and G.make_runner("off", cpu, False, None) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cli_graphs_on_without_a_gpu_is_one_line_before_the_model_loads(tmp_path):
    from helpers import assert_train_refused_before_loading

    assert_train_refused_before_loading(tmp_path, ["--cuda-graphs", "on"], "--cuda-graphs on", "CUDA")


def _random_examples(n, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(8, 120, (1,), generator=g))
        p = int(torch.randint(1, k // 2, (1,), generator=g))
        out.append(D.Example(torch.randint(0, vocab, (k,), generator=g).tolist(), [False] * p + [True] * (k - p)))
    return out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("method,dropout", [("sft", 0.0), ("dpo", 0.0), ("sft", 0.1)])
def test_replayed_steps_train_like_eager_ones(tmp_path, method, dropout):
    """On a GPU: a tiny Qwen2 in bf16 with fused LoRA layers and checkpointing; four micro-batches
    of two shapes through the runner (one eager run, two captures, the check replay, three replays) give the
    counters and gradients of the same four run eagerly. No tokenizer: random token ids."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from datakit.train.model import Fp32Master, ModelSpec, add_lora, load_model
    from datakit.train.trainer import Run

    dev = torch.device("cuda")
    cfg = Qwen2Config(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(str(tmp_path / "m"))
    run = Run(make_config(None, data="d", model=str(tmp_path / "m"), out=str(tmp_path), lora_dropout=dropout,
                          method=method, sft_weight=0.2 if method == "dpo" else 0.0))
    base = load_model(ModelSpec(str(tmp_path / "m")), load_4bit=False, device=dev, dtype=torch.bfloat16)
    run.model = add_lora(base, r=4, alpha=8, dropout=dropout, target_modules="all-linear",
                         gradient_checkpointing=True, lora_dtype=torch.bfloat16, reentrant=True, fused=True)
    with torch.no_grad():
        for n, p in run.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    run.device = dev
    run.model.train()
    exs = _random_examples(48, 512, 1)
    if method == "sft":
        run.train_ex = exs
    else:
        run.train_ex = [D.Pair(chosen=exs[2 * i], rejected=exs[2 * i + 1]) for i in range(24)]
    mbs = [[0, 1], [2, 3, 4], list(range(5, 24)), [5, 6]]  # shapes: small, small, large, small
    denom = sum(len(mb) for mb in mbs) if method == "dpo" else sum(run._targets_in(mb, run.train_ex) for mb in mbs)
    master = Fp32Master(p for p in run.model.parameters() if p.requires_grad)

    def add(acc, info):
        return {k: acc.get(k, 0.0) + v for k, v in info.items()}

    eager: dict = {}
    for mb in mbs:
        eager = add(eager, run._micro_step(mb, denom, True))
    master.pull_grads()
    want = torch.cat([m.grad.reshape(-1) for m in master.params])
    run.graphs = G.make_runner("on", dev, False, master)
    got_info: dict = {}
    for mb in mbs:
        got_info = add(got_info, run._micro_step(mb, denom, True))
    master.pull_grads(keep=True)
    got = torch.cat([m.grad.reshape(-1) for m in master.params])
    s = run.graphs.summary()
    # the first micro-batch eager (then captured and checked); the large shape captured and replayed
    assert s["graphs"] == 2 and s["replays"] == 3 and s["eager"] == 1 and "failed" not in s, \
        (s, run.graphs.failed_trace)
    run.graphs.close()  # end of training: memory back, the summary kept
    assert run.graphs.summary()["graphs"] == 2 and not run.graphs.graphs
    assert s["check_rel_diff"] < 1e-3  # the check replay draws the eager run's dropout masks
    assert s["check_grad_rel_diff"] < 1e-2  # ... in the forward and in checkpointing's recompute
    if dropout:  # other masks than the eager run's: the same scale, not the same numbers
        assert got_info["nll_sum"] == pytest.approx(eager["nll_sum"], rel=5e-2)
        assert 0.5 < float(got.norm() / want.norm()) < 2
        return
    for k, v in eager.items():
        assert got_info[k] == pytest.approx(v, rel=2e-2, abs=1e-3), k
    assert float((got - want).norm() / want.norm()) < 2e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_a_failed_capture_falls_back_to_eager_and_random_ops_still_work():
    """A function that cannot be captured (a host sync after a random op): the runner says so
    once, the micro-batch's eager result stands, and later calls, random ones too, run eagerly."""
    w = torch.nn.Parameter(torch.randn(64, 64, device="cuda"))
    said = []
    runner = G.GraphRunner([w], said.append)
    x = torch.randn(8, 64, device="cuda")

    def fn(t):
        y = torch.nn.functional.dropout(t["x"] @ w, 0.1, True)
        if float(y.sum()) > 1e30:  # a host sync: not capturable
            y = y * 2
        loss = y.square().sum()
        loss.backward()
        return {"nll_sum": loss.detach()}

    first = runner.run("k", {"x": x}, fn)
    assert runner.failed and len(said) == 1 and "capture failed" in said[0]
    g1 = w.grad.clone()
    assert float(first["nll_sum"]) > 0 and float(g1.abs().sum()) > 0  # the eager run counted, once
    again = runner.run("k", {"x": x}, fn)  # eager now; dropout must work outside a graph
    assert float(again["nll_sum"]) > 0 and len(said) == 1
    assert runner.summary()["eager"] == 2 and runner.summary()["graphs"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_more_shapes_than_allowed_turn_graphs_off_and_free_them():
    w = torch.nn.Parameter(torch.randn(64, 64, device="cuda"))
    said = []
    runner = G.GraphRunner([w], said.append, max_graphs=1)

    def fn(t):
        loss = (t["x"] @ w).square().sum()
        loss.backward()
        return {"nll_sum": loss.detach()}

    ref = []
    for n in (8, 8, 16):
        x = torch.randn(n, 64, device="cuda")
        w.grad.zero_()
        out = float(runner.run(n, {"x": x}, fn)["nll_sum"])
        g = w.grad.clone()
        w.grad.zero_()
        fn({"x": x})
        ref.append((out, float((x @ w).square().sum())))
        assert torch.allclose(g, w.grad, rtol=1e-3, atol=1e-3)
    assert all(a == pytest.approx(b, rel=1e-4) for a, b in ref)
    s = runner.summary()
    assert s["graphs"] == 0 and "more than 1" in s["failed"] and len(said) == 1
