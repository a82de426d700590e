"""Two training processes (gloo on the CPU, as torchrun would start them on two GPUs).

The schedule is chosen so that the ranks' shares are uneven: 5 micro-batches make 3 steps of 2,
so in the last step rank 1 has no micro-batch, and the one eval batch goes to rank 0 only. Every
collective must still have the same shape on both ranks (before the fix the counters' all-reduce
had 3 entries on one rank and 2 on the other: the run failed or hung). The processes run under a
hard timeout, so a hang fails the test instead of blocking it. Nothing is mocked: a tiny
random-weight Qwen2 with SmolLM2's real tokenizer (see test_train.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
if not torch.distributed.is_available():
    pytest.skip("this torch build has no torch.distributed", allow_module_level=True)

from datakit.errors import UserError  # noqa: E402
from datakit.train.config import make_config  # noqa: E402
from helpers import run_ranks  # noqa: E402
from test_train import _one_thread, _sft_rows, _write_jsonl, tiny_model_dir, tokenizer  # noqa: E402,F401 - fixtures

REPO = Path(__file__).resolve().parent.parent
HARD_TIMEOUT_S = 240  # seconds for both processes together; a healthy run takes well under a minute here


def _launch(tmp_path: Path, config: dict, outs: list[str], self_init: list[bool]) -> list[subprocess.CompletedProcess]:
    """Start the ranks like torchrun (RANK/WORLD_SIZE/MASTER_* in the environment), wait for
    both under one hard deadline, kill them all if it passes."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"config": config, "out_by_rank": outs, "self_init": self_init,
                                "timeout_s": 60, "result": str(tmp_path / "rank{rank}.pt")}))
    return run_ranks(REPO / "tests" / "ddp_worker.py", spec, len(outs), HARD_TIMEOUT_S)


def _config(tmp_path: Path, model_dir: Path, **kw) -> dict:
    base = dict(data=str(_write_jsonl(tmp_path / "sft.jsonl", _sft_rows(10))),
                eval_data=str(_write_jsonl(tmp_path / "eval.jsonl", _sft_rows(1))),
                # batch_tokens 0: micro-batches of 2 examples, counted (not by tokens), so that the
                # 5 micro-batches split unevenly as described above
                model=str(model_dir), pack=False, batch_size=2, batch_tokens=0, grad_accum=1, epochs=1.0,
                eval_every=2,
                lr=3e-3, warmup_ratio=0.0, max_len=128, lora_dropout=0.0, samples=1, sample_tokens=4)
    base.update(kw)
    return base


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_ranks_with_uneven_shares_agree_and_match_one_process(tmp_path, tiny_model_dir):
    from datakit.train import train

    config = _config(tmp_path, tiny_model_dir)
    outs = [str(tmp_path / "out"), str(tmp_path / "out-rank1")]
    # rank 0 joins the group itself (with a 60 s collective timeout); rank 1 lets the trainer
    # join it, as under torchrun (gloo, since there is no GPU)
    procs = _launch(tmp_path, config, outs, self_init=[True, False])
    for rank, p in enumerate(procs):
        assert p.returncode == 0, f"rank {rank} exited {p.returncode}:\n{p.stderr[-3000:]}"
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world"] == r1["world"] == 2
    # the same summed gradient on both ranks: the same weights, to the bit
    assert r0["weights"].keys() == r1["weights"].keys() and r0["weights"]
    for name, w in r0["weights"].items():
        assert torch.equal(w, r1["weights"][name]), name
    # only rank 0 writes: rank 1's --out was never even created
    assert not Path(outs[1]).exists()
    out = Path(outs[0])
    s = json.loads((out / "summary.json").read_text())
    assert s["world_size"] == 2 and s["steps"] == 3 and r0["summary"] == s and r1["summary"] == {}
    assert json.loads((out / "checkpoint-last" / "state.json").read_text())["world_size"] == 2
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [("eval_loss" in r) for r in rows] == [False, True, True]

    # one process taking the same 2 micro-batches per step (grad_accum 2) must train the same:
    # the loss of each step and of eval is over all real tokens, not over one rank's share
    from datakit.train.trainer import Run

    one = Run(make_config(None, **{**config, "grad_accum": 2, "out": str(tmp_path / "single")}))
    single = one.execute()
    assert single["steps"] == 3
    want = _metrics(tmp_path / "single")
    assert [("eval_loss" in r) for r in want] == [False, True, True]
    for key in ("loss", "tokens", "eval_loss"):
        got = [r[key] for r in rows if key in r]
        assert got == pytest.approx([r[key] for r in want if key in r], rel=1e-4), key
    assert s["best_eval_loss"] == pytest.approx(single["best_eval_loss"], rel=1e-4)
    for name, p in one.model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.detach(), r0["weights"][name], atol=1e-5), name

    # that checkpoint needs 2 processes: one process refuses it in one line instead of mixing
    # steps of another size into it
    with pytest.raises(UserError, match=r"written by 2 process\(es\) and this run has 1") as e:
        train(make_config(None, **{**config, "out": outs[0]}))
    assert "\n" not in str(e.value) and "--no-resume" in str(e.value)


def test_fingerprint_includes_the_world_size(tmp_path):
    from datakit.train.trainer import _fingerprint

    cfg = make_config(None, data="d", model="m", out=str(tmp_path / "o"))
    assert _fingerprint(cfg, "abc", 2) != _fingerprint(cfg, "abc", 1) != _fingerprint(cfg, "abc", 4)
    assert _fingerprint(cfg, "abc") == _fingerprint(cfg, "abc", 1)
