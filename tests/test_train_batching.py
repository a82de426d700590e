"""Micro-batches sized by a token budget (DPO pairs and unpacked SFT examples).

Short DPO pairs used to go one pair per micro-batch by default, leaving a GPU mostly idle. Now a
micro-batch holds as many pairs (or unpacked examples) as fit in ``batch_size x max_len`` tokens
(``batch_tokens`` overrides; 0 restores counting). These tests check the schedule (budget kept,
every item once per epoch, order fixed by the seed, the multi-rank split intact) and that many
items in one micro-batch give the same loss and gradients as the same items one by one, in the
trainer's own code and through a whole training step. Nothing is mocked: the tiny random-weight
Qwen2 with SmolLM2's real tokenizer of test_train.py, in float32 on the CPU.
"""

from __future__ import annotations

import json
import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from datakit.errors import UserError  # noqa: E402
from datakit.train import data as D  # noqa: E402
from datakit.train.config import make_config  # noqa: E402
from test_train import _dpo_rows, _one_thread, _sft_rows, _write_jsonl, tiny_model_dir, tokenizer  # noqa: E402,F401 - fixtures


def _varied_dpo_rows(n=24):
    """Pairs of different lengths, so that budgets cut at different places."""
    rng = random.Random(3)
    words = "cats rivers bread stars trains tea snow maps".split()
    rows = []
    for i in range(n):
        q = " ".join(rng.choice(words) for _ in range(rng.randint(2, 12)))
        rows.append({"prompt": [{"role": "user", "content": f"Tell me about {q}."}],
                     "chosen": [{"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(rng.randint(1, 15)))}],
                     "rejected": [{"role": "assistant", "content": "No." * rng.randint(1, 4)}]})
    return rows


# --------------------------------------------------------------------------- the schedule

def test_budget_groups_keep_the_budget_and_the_order():
    rng = random.Random(0)
    sizes = [rng.randint(1, 300) for _ in range(200)] + [900]  # one item above the budget
    order = list(range(len(sizes)))
    rng.shuffle(order)
    groups = D.budget_groups(order, sizes, 512)
    assert [i for g in groups for i in g] == order
    for g in groups:
        assert sum(sizes[i] for i in g) <= 512 or len(g) == 1
    # greedy: the next group's first item would not have fitted in the previous group
    for a, b in zip(groups, groups[1:]):
        assert sum(sizes[i] for i in a) + sizes[b[0]] > 512
    assert [900] in [[sizes[i] for i in g] for g in groups]


def test_dpo_schedule_by_tokens_covers_every_pair_each_epoch():
    sizes = [130 + (i % 7) * 3 for i in range(100)]  # ~65-token sides, like the short pairs
    micro = D.dpo_schedule(100, batch_size=1, epochs=2.5, seed=7, sizes=sizes, budget=2048)
    assert micro == D.dpo_schedule(100, batch_size=1, epochs=2.5, seed=7, sizes=sizes, budget=2048)
    assert all(sum(sizes[i] for i in mb) <= 2048 for mb in micro)
    # 2048 // 148: many pairs a micro-batch; only each epoch's last one may be short
    assert sum(len(mb) < 13 for mb in micro) <= 3 and len(micro) <= 3 * 8
    flat = [i for mb in micro for i in mb]
    assert sorted(flat[:100]) == list(range(100)) and sorted(flat[100:200]) == list(range(100))
    assert len(flat) == 250
    # counting (budget None) is the old schedule: the same order, batch_size pairs at a time
    counted = D.dpo_schedule(100, batch_size=1, epochs=2.5, seed=7)
    assert [i for mb in counted for i in mb] == flat and all(len(mb) == 1 for mb in counted)


def test_unpacked_sft_schedule_by_tokens_and_packed_unchanged():
    exs = [D.Example([1] * n, [True] * n) for n in (40, 300, 75, 500, 12, 260, 90, 130, 33, 480)]
    micro = D.sft_schedule(exs, max_len=512, batch_size=1, pack_rows=False, epochs=1, seed=1, budget=512)
    assert sorted(i for mb in micro for i in mb) == list(range(len(exs)))
    assert all(sum(len(exs[i]) for i in mb) <= 512 for mb in micro)
    assert len(micro) < len(exs)
    # packed rows ignore the budget: batch_size rows of max_len, as before
    packed = D.sft_schedule(exs, max_len=512, batch_size=2, pack_rows=True, epochs=1, seed=1, budget=99)
    assert packed == D.sft_schedule(exs, max_len=512, batch_size=2, pack_rows=True, epochs=1, seed=1)


@pytest.mark.parametrize("world", [2, 3])
def test_shards_of_a_token_schedule_split_each_step_exactly(world):
    sizes = [random.Random(i).randint(60, 400) for i in range(50)]
    micro = D.dpo_schedule(50, batch_size=1, epochs=3, seed=0, sizes=sizes, budget=1024)
    per_step = 4 * world
    for s in range(0, len(micro), per_step):
        step = micro[s: s + per_step]
        shares = [D.shard(step, world, r) for r in range(world)]
        assert sorted(map(tuple, (mb for sh in shares for mb in sh))) == sorted(map(tuple, step))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_budget_setting_checked_and_fingerprinted(tmp_path):
    from datakit.train.trainer import _fingerprint

    with pytest.raises(UserError, match="batch_tokens"):
        make_config(None, data="d", model="m", out="o", batch_tokens=-1)
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text("batch_tokens = 4096\nmethod = 'dpo'\n")
    cfg = make_config(str(cfg_file), data="d", model="m", out="o")
    assert cfg.micro_budget() == 4096
    assert make_config(None, data="d", model="m", out="o", batch_size=2, max_len=512).micro_budget() == 1024
    assert make_config(None, data="d", model="m", out="o", batch_tokens=0).micro_budget() is None

    def fp(**kw):
        return _fingerprint(make_config(None, data="d", model="m", out="o", **kw), "sha")

    # DPO's micro-batches depend on the budget, packed SFT rows do not
    assert fp(method="dpo") != fp(method="dpo", batch_tokens=0) != fp(method="dpo", batch_tokens=4096)
    assert fp(method="sft") == fp(method="sft", batch_tokens=4096)
    assert fp(method="sft", pack=False) != fp(method="sft", pack=False, batch_tokens=4096)


# --------------------------------------------------------------------------- same loss as one by one

def _run_with_model(tmp_path, tiny_model_dir, **kw):
    """A Run of the trainer with the tiny model and a LoRA adapter moved off zero."""
    from datakit.train.model import ModelSpec, add_lora, load_model
    from datakit.train.trainer import Run

    run = Run(make_config(None, data="d", model=str(tiny_model_dir), out=str(tmp_path), lora_dropout=0.0, **kw))
    base = load_model(ModelSpec(str(tiny_model_dir)), load_4bit=False, device=torch.device("cpu"),
                      dtype=torch.float32)
    torch.manual_seed(0)
    run.model = add_lora(base, r=4, alpha=8, dropout=0.0, target_modules="all-linear", gradient_checkpointing=False)
    with torch.no_grad():
        for n, p in run.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    run.device = torch.device("cpu")
    run.model.train()
    return run


def _loss_and_grads(run, loss_fn, micro_batches, items, denom):
    run.model.zero_grad(set_to_none=True)
    total, infos = 0.0, []
    for mb in micro_batches:
        loss, info = loss_fn(mb, items, denom)
        loss.backward()
        total += float(loss.detach())
        infos.append(info)
    grads = torch.cat([p.grad.reshape(-1) for p in run.model.parameters() if p.requires_grad])
    return total, grads, infos


def test_dpo_many_pairs_in_one_micro_batch_equal_one_by_one(tmp_path, tokenizer, tiny_model_dir):
    run = _run_with_model(tmp_path, tiny_model_dir, method="dpo", sft_weight=0.3)
    pairs, _ = D.encode_dpo(tokenizer, _varied_dpo_rows(12), max_len=256)
    mb = list(range(len(pairs)))
    one, g_one, infos = _loss_and_grads(run, run._loss, [[i] for i in mb], pairs, len(mb))
    many, g_many, (info,) = _loss_and_grads(run, run._loss, [mb], pairs, len(mb))
    assert many == pytest.approx(one, rel=1e-5)
    assert float((g_many - g_one).norm() / g_one.norm()) < 1e-5 and float(g_one.norm()) > 0
    for key in ("dpo_sum", "margin_sum", "acc_sum", "chosen_sum"):
        assert info[key] == pytest.approx(sum(x[key] for x in infos), rel=1e-4, abs=1e-6)


def test_unpacked_sft_examples_in_one_micro_batch_equal_one_by_one(tmp_path, tokenizer, tiny_model_dir):
    run = _run_with_model(tmp_path, tiny_model_dir, method="sft", pack=False)
    exs, _ = D.encode_sft(tokenizer, [r["messages"] for r in _sft_rows(10)], max_len=256)
    mb = list(range(len(exs)))
    denom = sum(run._targets_in([i], exs) for i in mb)
    one, g_one, _ = _loss_and_grads(run, run._loss, [[i] for i in mb], exs, denom)
    many, g_many, _ = _loss_and_grads(run, run._loss, [mb], exs, denom)
    assert many == pytest.approx(one, rel=1e-5)
    assert float((g_many - g_one).norm() / g_one.norm()) < 1e-5 and float(g_one.norm()) > 0


def test_dpo_default_step_trains_like_the_same_pairs_one_by_one(tmp_path, tokenizer, tiny_model_dir):
    """A whole optimiser step: the default (pairs up to the token budget in one micro-batch)
    against the old counting (one pair a micro-batch, accumulated over as many)."""
    from safetensors.torch import load_file

    from datakit.train import train

    rows = _varied_dpo_rows(24)
    data = _write_jsonl(tmp_path / "dpo.jsonl", rows)
    common = dict(data=str(data), model=str(tiny_model_dir), method="dpo", max_len=512, max_steps=1,
                  eval_fraction=0.0, samples=0, lora_dropout=0.0, lr=1e-2, warmup_ratio=0.0, seed=5)
    pairs, _ = D.encode_dpo(tokenizer, rows, max_len=512)
    first = D.dpo_schedule(len(pairs), batch_size=1, epochs=1, seed=5, sizes=D.pair_sizes(pairs), budget=512)[0]
    assert len(first) >= 2  # several short pairs fit 512 tokens: a real test of batching
    budget = train(make_config(None, out=str(tmp_path / "budget"), grad_accum=1, **common))
    counted = train(make_config(None, out=str(tmp_path / "counted"), grad_accum=len(first), batch_tokens=0,
                                **common))
    assert budget["steps"] == counted["steps"] == 1
    assert budget["first_loss"] == pytest.approx(counted["first_loss"], rel=1e-5)
    a = load_file(str(tmp_path / "budget" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "counted" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    moved = 0.0
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
        moved += float(a[k].abs().sum()) if "lora_B" in k else 0.0
    assert moved > 0  # the step changed the adapter (lora_B starts at zero)
    rows_b = [json.loads(x) for x in (tmp_path / "budget" / "metrics.jsonl").read_text().splitlines()]
    assert rows_b[0]["tokens"] == sum(D.pair_sizes([pairs[i] for i in first]))
    assert rows_b[0]["pairs"] == len(first) and rows_b[0]["pairs_per_s"] > 0
    # the summary says how long loading took and how much CPU memory the process held at most
    assert budget["load_s"] >= 0 and budget["peak_rss_gib"] > 0
