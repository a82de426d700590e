"""datakit/train/fit.py: a step's micro-batches run several at a time when memory allows.

On the CPU the plan is always "as given" (nothing to measure); the tests check the pieces and,
by forcing a plan, that joined passes train exactly like the micro-batches one by one (SFT and
DPO), and that a pass which runs out of memory steps the plan down and redoes the step. Running
out of memory cannot happen on the CPU: that one test raises ``torch.OutOfMemoryError`` from the
trainer's pass (said here, the only stand-in). The measuring itself needs CUDA: the last test
runs on the device and is skipped here.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from datakit.train import fit as F  # noqa: E402
from datakit.train.config import make_config  # noqa: E402
from test_train import _one_thread, _sft_rows, _write_jsonl, tiny_model_dir, tokenizer  # noqa: E402,F401 - fixtures
from test_train_batching import _varied_dpo_rows  # noqa: E402


def test_joined_and_divisors():
    mbs = [[0, 1], [2], [3, 4, 5], [6]]
    assert F.joined(mbs, 1) == mbs
    assert F.joined(mbs, 2) == [[0, 1, 2], [3, 4, 5, 6]]
    assert F.joined(mbs, 4) == [[0, 1, 2, 3, 4, 5, 6]]
    assert F.joined(mbs, 3) == [[0, 1, 2, 3, 4, 5], [6]]
    assert F.divisors_desc(12) == [12, 6, 4, 3, 2, 1]


def test_smaller_halves_then_checkpoints_then_stops():
    cfg = make_config(None, data="d", model="m", out="o", grad_accum=8)
    p = F.Plan(join=8, checkpointing=False)
    steps = []
    while p is not None:
        steps.append((p.join, p.checkpointing))
        p = F.smaller(p, cfg)
    assert steps == [(8, False), (4, False), (2, False), (1, False), (1, True)]
    forced = make_config(None, data="d", model="m", out="o", grad_accum=6, gradient_checkpointing=False)
    assert F.smaller(F.Plan(join=6, checkpointing=False), forced).join == 3
    assert F.smaller(F.Plan(join=1, checkpointing=False), forced) is None  # the user said no checkpointing


def test_setting_checked_and_left_out_of_the_resume_key(tmp_path):
    from datakit.errors import UserError
    from datakit.train.trainer import _fingerprint

    with pytest.raises(UserError, match="fit"):
        make_config(None, data="d", model="m", out="o", fit="max")

    def key(**kw):
        return _fingerprint(make_config(None, data="d", model="m", out="o", **kw), "sha")

    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('fit = "max"\n')
    with pytest.raises(UserError) as e:  # a bad value from the file names the file
        make_config(str(cfg_file), data="d", model="m", out="o")
    assert str(e.value) == f"{cfg_file}: fit: must be auto or off, got 'max'"
    assert make_config(str(cfg_file), data="d", model="m", out="o", fit="off").fit == "off"  # the flag wins

    assert key() == key(fit="off")
    assert key() == key(gradient_checkpointing=True)  # auto keys as the old default: old checkpoints resume
    assert key() != key(gradient_checkpointing=False)


def test_bad_fit_flag_is_one_line(tmp_path):
    from helpers import assert_train_refused_before_loading

    assert_train_refused_before_loading(tmp_path, ["--fit", "max"], "datakit train", "--fit", "'max'")
    assert_train_refused_before_loading(tmp_path, ["--no-such-flag"], "No such option", "--no-such-flag")


def _force(monkeypatch, join, checkpointing=False):
    monkeypatch.setattr(F, "plan", lambda run: F.Plan(join=join, checkpointing=checkpointing, reason="test"))


def _adapter(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter" / "adapter_model.safetensors"))


def _same_training(a_dir, b_dir, a, b):
    assert a["steps"] == b["steps"]
    rows_a = [json.loads(x) for x in (a_dir / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (b_dir / "metrics.jsonl").read_text().splitlines()]
    for ra, rb in zip(rows_a, rows_b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-4)
        assert ra["tokens"] == rb["tokens"]
    wa, wb = _adapter(a_dir), _adapter(b_dir)
    moved = 0.0
    for k in wa:  # float32 sums in another order, then Adam: measured <= 1.3e-6 apart; one step moves 1e-2
        assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5), k
        moved += float(wa[k].abs().sum()) if "lora_B" in k else 0.0
    assert moved > 0


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_joined_passes_train_like_one_by_one(tmp_path, monkeypatch, tiny_model_dir, method):
    from datakit.train import train

    rows = _sft_rows(24) if method == "sft" else _varied_dpo_rows(24)
    data = _write_jsonl(tmp_path / "d.jsonl", rows)
    common = dict(data=str(data), model=str(tiny_model_dir), method=method, max_len=128, max_steps=2,
                  grad_accum=4, eval_fraction=0.0, samples=0, lora_dropout=0.0, lr=1e-2, warmup_ratio=0.0,
                  seed=3, gradient_checkpointing=False)
    one = train(make_config(None, out=str(tmp_path / "one"), **common))
    assert one["fit"]["join"] == 1 and one["fit"]["reason"] == "no CUDA GPU"
    _force(monkeypatch, 4)
    four = train(make_config(None, out=str(tmp_path / "four"), **common))
    assert four["fit"]["join"] == 4
    _same_training(tmp_path / "one", tmp_path / "four", one, four)


def test_out_of_memory_steps_the_plan_down_and_redoes_the_step(tmp_path, monkeypatch, tiny_model_dir):
    from datakit.train import train
    from datakit.train.trainer import Run

    data = _write_jsonl(tmp_path / "d.jsonl", _sft_rows(24))
    common = dict(data=str(data), model=str(tiny_model_dir), max_len=128, max_steps=2, grad_accum=4,
                  eval_fraction=0.0, samples=0, lora_dropout=0.0, lr=1e-2, warmup_ratio=0.0, seed=3,
                  gradient_checkpointing=False)
    one = train(make_config(None, out=str(tmp_path / "one"), **common))
    _force(monkeypatch, 4)
    real = Run._micro_step
    sizes = []

    def too_big(self, mb, denom, real_mb):  # the stand-in: a pass of more than two rows "runs out"
        sizes.append(len(mb))
        if len(mb) > 2 * max(1, len(self.micro[0])) and self.fit.join > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (stand-in)")
        return real(self, mb, denom, real_mb)

    monkeypatch.setattr(Run, "_micro_step", too_big)
    got = train(make_config(None, out=str(tmp_path / "oom"), **common))
    assert got["fit"]["join"] == 2 and "ran out of memory" in got["fit"]["reason"]
    assert any("memory plan: 2 of 4" in n for n in got["notices"])
    _same_training(tmp_path / "one", tmp_path / "oom", one, got)  # the failed pass left nothing behind


@pytest.mark.skipif(not torch.cuda.is_available(), reason="measures CUDA memory")
def test_plan_measures_and_joins_on_a_gpu(tmp_path, tiny_model_dir):
    from datakit.train import train

    data = _write_jsonl(tmp_path / "d.jsonl", _sft_rows(24))
    got = train(make_config(None, data=str(data), model=str(tiny_model_dir), out=str(tmp_path / "o"),
                            max_len=128, max_steps=2, grad_accum=4, eval_fraction=0.0, samples=0))
    fit = got["fit"]
    assert fit["reason"] == "measured" and fit["join"] == 4 and fit["checkpointing"] is False
    assert fit["per_1k_tokens_gib"]["none"] > 0 and fit["predicted_gib"] <= fit["budget_gib"]
    assert got["peak_mem_gib"] <= fit["budget_gib"]
