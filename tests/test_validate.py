"""Validation (tuned vs base, judged in both orders) and the CPU training defaults.

Real components only: the judge is the scripted fake OpenAI-compatible server on 127.0.0.1
(its verdicts follow markers in the task text, so the counts are known), the response cache is
real SQLite, and the slow test trains the real bundled SmolLM2-135M on the CPU through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx2 as httpx
import pytest

from datakit.config import load_config
from datakit.teachers.fake_server import FakeOpenAIServer
from datakit.train.winrate import outcome, tally, wilson
from tests.helpers import run_cli


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def pairwise_responder(body: dict) -> str:
    """A scripted pairwise judge. The task decides: '[tie]' -> tie, '[posA]' -> always A (position
    bias), '[garbage]' -> no verdict at all; otherwise the answer containing GOOD wins, and
    without such a marker the longer answer wins (equal lengths: tie)."""
    msg = body["messages"][-1]["content"]
    task = _between(msg, "[TASK]", "[END OF TASK]")
    a = _between(msg, "[RESPONSE A]", "[END OF RESPONSE A]").strip()
    b = _between(msg, "[RESPONSE B]", "[END OF RESPONSE B]").strip()
    if "[garbage]" in task:
        return "I would rather not say."
    if "[tie]" in task:
        return '{"winner": "tie", "reason": "same"}'
    if "[posA]" in task:
        return '{"winner": "A", "reason": "first"}'
    if ("GOOD" in a) != ("GOOD" in b):
        return json.dumps({"winner": "A" if "GOOD" in a else "B", "reason": "marker"})
    if len(a) == len(b):
        return "Verdict: tie"
    return json.dumps({"winner": "A" if len(a) > len(b) else "B", "reason": "longer"})


def expected_outcome(task: str, base: str, tuned: str) -> str:
    """What the scripted judge must lead to, computed independently of datakit's code."""
    if "[garbage]" in task:
        return "unparsed"
    if "[tie]" in task or "[posA]" in task:  # posA: the two orders disagree -> tie
        return "tie"
    if ("GOOD" in base) != ("GOOD" in tuned):
        return "win" if "GOOD" in tuned else "loss"
    if len(base.strip()) == len(tuned.strip()):
        return "tie"
    return "win" if len(tuned.strip()) > len(base.strip()) else "loss"


def _stats(srv: FakeOpenAIServer) -> dict:
    return httpx.get(srv.base_url.replace("/v1", "") + "/_stats").json()


# --------------------------------------------------------------------------- the statistic

def test_wilson_interval_known_values():
    assert wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)      # textbook: 0 of 10
    assert wilson(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-5)
    assert wilson(21, 32) == pytest.approx((0.48311, 0.79590), abs=1e-5)
    assert wilson(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert wilson(0, 0) == (0.0, 1.0)


def test_outcome_needs_both_orders_to_agree():
    # ab: base shown as A, tuned as B; ba: tuned shown as A
    assert outcome("B", "A") == ("win", True)
    assert outcome("A", "B") == ("loss", True)
    assert outcome("tie", "tie") == ("tie", True)
    assert outcome("A", "A") == ("tie", False)    # position bias: no preference
    assert outcome("B", "tie") == ("tie", False)
    assert outcome(None, "A") == ("unparsed", True)


def _judged(ab: str | None, ba: str | None) -> dict:
    res, agree = outcome(ab, ba)
    return {"outcome": res, "orders_agree": agree}


def test_tally_counts_interval_and_verdict():
    js = [_judged("B", "A")] * 14 + [_judged("A", "B")] * 2 + [_judged("tie", "tie")] * 3 \
        + [_judged("A", "A")] * 2 + [_judged(None, "B")]
    t = tally(js)
    assert (t["n_prompts"], t["wins"], t["losses"], t["ties"], t["unparsed"], t["disagreed"]) == (22, 14, 2, 5, 1, 2)
    assert t["win_rate"] == 0.875
    assert t["ci95"] == pytest.approx(list(wilson(14, 16)), abs=1e-4) and t["ci95"][0] > 0.5
    assert t["verdict"].startswith("tuned beats base on 14 of 22 held-out prompts")

    even = tally([_judged("B", "A")] * 21 + [_judged("A", "B")] * 11)  # 21 of 32: the interval covers 50%
    assert even["ci95"] == pytest.approx([0.4831, 0.7959], abs=1e-4)
    assert even["verdict"].startswith("no measurable difference") and "covers 50%" in even["verdict"]

    worse = tally([_judged("A", "B")] * 9 + [_judged("B", "A")])
    assert worse["ci95"][1] < 0.5 and worse["verdict"].startswith("tuned is worse than base: loses on 9 of 10")

    none = tally([_judged("tie", "tie")] * 3)
    assert none["win_rate"] == 0.5 and none["ci95"] == [0.0, 1.0]
    assert none["verdict"].startswith("no measurable difference: no prompt of 3 decided")


# --------------------------------------------------------------------------- the judge, over HTTP

def test_judge_all_both_orders_through_the_cache(tmp_path):
    from datakit.train.pair_judge import CACHE_FILE, judge_all

    items = [{"prompt": "Name a colour.", "base": "red", "tuned": "GOOD: red"},
             {"prompt": "Name a fruit.", "base": "pear", "tuned": "GOOD pear"},
             {"prompt": "Name a tree.", "base": "oak", "tuned": "GOOD oak"},
             {"prompt": "Name a sea.", "base": "GOOD Baltic", "tuned": "Baltic"},
             {"prompt": "[tie] Name a dog.", "base": "rex", "tuned": "fido"},
             {"prompt": "[posA] Name a cat.", "base": "tom", "tuned": "GOOD tom"},
             {"prompt": "[garbage] Name a city.", "base": "Rome", "tuned": "Oslo"}]
    with FakeOpenAIServer(responder=pairwise_responder, model="judge-model") as srv:
        cfg = load_config(None, {"teachers": [{"name": "j", "base_url": srv.base_url, "model": "judge-model",
                                               "roles": ["judge"], "timeout": 5.0}]})
        js, who = judge_all(cfg, items, tmp_path)
        assert _stats(srv)["statuses"] == {"200": 14}  # every prompt judged in both orders
        again, _ = judge_all(cfg, items, tmp_path)     # a rerun: every answer from the SQLite cache
        assert _stats(srv)["statuses"] == {"200": 14}
    assert who == {"teacher": "j", "model": "judge-model", "bundled": False}
    assert (tmp_path / CACHE_FILE).is_file()
    assert [j["outcome"] for j in js] == ["win", "win", "win", "loss", "tie", "tie", "unparsed"]
    assert [j["outcome"] for j in js] == [expected_outcome(i["prompt"], i["base"], i["tuned"]) for i in items]
    assert (js[0]["ab"], js[0]["ba"]) == ("B", "A") and (js[5]["ab"], js[5]["ba"]) == ("A", "A")
    assert js[5]["orders_agree"] is False and js[6]["ab"] == js[6]["ba"] == "unparsed"
    assert [j["outcome"] for j in again] == [j["outcome"] for j in js]
    t = tally(js)
    assert (t["wins"], t["ties"], t["losses"], t["unparsed"]) == (3, 2, 1, 1)


# --------------------------------------------------------------------------- CPU defaults

README_TRAIN = ["train", "--data", "sft.jsonl", "--model", "bundled", "--out", "runs/demo/train-sft",
                "--max-steps", "20"]


def _parsed_opts(argv: list[str]) -> tuple[str | None, dict]:
    from datakit.cli.train_cmds import train_cmd

    ctx = train_cmd.make_context("train", list(argv[1:]))
    p = dict(ctx.params)
    for k in ("do_validate", "val_prompts", "val_tokens", "judge_teacher", "judge_config", "judge_base_url",
              "judge_model", "judge_api_key_env"):
        p.pop(k)
    return p.pop("config_file"), p


def test_readme_train_line_takes_the_cpu_defaults():
    pytest.importorskip("torch")
    from datakit.train.config import TrainConfig, make_config
    from datakit.train.cpu_defaults import CPU_DEFAULTS, apply_cpu_defaults, cuda_available

    if cuda_available():
        pytest.skip("a CUDA GPU is visible: the GPU defaults apply")
    config_file, opts = _parsed_opts(README_TRAIN)
    opts, line = apply_cpu_defaults(config_file, opts, validating=True)  # the line validates by default
    cfg = make_config(config_file, **opts)
    gpu = TrainConfig()
    assert (cfg.batch_size, cfg.grad_accum, cfg.max_len, cfg.gradient_checkpointing) == (1, 1, 512, False)
    assert cfg.samples == 0  # the validation answers the held-out prompts instead
    assert (gpu.grad_accum, gpu.max_len) == (4, 2048)  # what the line took before: ~8k tokens a step
    assert cfg.max_steps == 20 and cfg.model == "bundled"
    assert line.startswith("no CUDA GPU: CPU defaults") and "--grad-accum 1" in line and "--max-len 512" in line
    assert set(CPU_DEFAULTS) <= set(cfg.to_dict())


def test_cpu_defaults_never_override_the_user(tmp_path):
    from datakit.train.cpu_defaults import apply_cpu_defaults

    conf = tmp_path / "run.toml"
    conf.write_text("[train]\ngrad_accum = 8\n")
    _, opts = _parsed_opts(README_TRAIN + ["--max-len", "1024", "--gradient-checkpointing"])
    got, line = apply_cpu_defaults(str(conf), opts, on_cpu=True)
    assert got["max_len"] == 1024 and got["gradient_checkpointing"] is True
    assert got["grad_accum"] is None  # the config file's 8 stands
    assert "--max-len" not in line and "--grad-accum" not in line and "--batch-size 1" in line
    assert apply_cpu_defaults(None, opts, on_cpu=False) == (opts, None)


# --------------------------------------------------------------------------- end to end (slow)

def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _conv(user: str, reply: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


SCHEMA_KEYS = {"judge", "n_prompts", "eval_loss", "wins", "ties", "losses", "unparsed", "win_rate", "ci95",
               "verdict", "judgements"}


def _check_schema(v: dict) -> None:
    assert SCHEMA_KEYS <= set(v)
    assert set(v["judge"]) == {"teacher", "model", "bundled"} and isinstance(v["judge"]["bundled"], bool)
    assert isinstance(v["judge"]["teacher"], str) and isinstance(v["judge"]["model"], str)
    assert set(v["eval_loss"]) == {"base", "tuned"}
    assert all(isinstance(v[k], int) for k in ("n_prompts", "wins", "ties", "losses", "unparsed"))
    assert v["wins"] + v["ties"] + v["losses"] + v["unparsed"] == v["n_prompts"] == len(v["judgements"])
    assert isinstance(v["win_rate"], float) and len(v["ci95"]) == 2 and 0 <= v["ci95"][0] <= v["ci95"][1] <= 1
    assert isinstance(v["verdict"], str) and "\n" not in v["verdict"]
    for j in v["judgements"]:
        assert {"prompt", "base", "tuned", "ab", "ba", "outcome"} <= set(j)
        assert j["ab"] in ("A", "B", "tie", "unparsed") and j["ba"] in ("A", "B", "tie", "unparsed")
        assert j["outcome"] in ("win", "tie", "loss", "unparsed")


@pytest.mark.slow
def test_train_then_validate_end_to_end_on_cpu(tmp_path):
    pytest.importorskip("torch")
    from datakit.train.cpu_defaults import cuda_available
    from datakit.train.model import find_bundled_gguf

    find_bundled_gguf()
    words = ["cats", "rivers", "bread", "stars", "trains", "tea"]
    data = _write_jsonl(tmp_path / "sft.jsonl", [_conv(f"Say {w} twice.", f"{w} {w}.") for w in words * 2])
    held = ["[tie] Name a colour.", "[posA] Name a fruit.", "[garbage] Name a city.", "Name an animal."]
    eval_file = _write_jsonl(tmp_path / "eval.jsonl", [_conv(t, "ok") for t in held])
    out = tmp_path / "train"
    with FakeOpenAIServer(responder=pairwise_responder, model="judge-model") as srv:
        proc = run_cli("train", "--data", str(data), "--eval-data", str(eval_file), "--model", "bundled",
                       "--out", str(out), "--max-steps", "2", "--lr", "1e-3", "--sample-tokens", "4",
                       "--val-tokens", "12", "--judge-base-url", srv.base_url, "--judge-model", "judge-model",
                       timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        v = json.loads((out / "validation.json").read_text())
        _check_schema(v)
        assert v["judge"] == {"teacher": "cli", "model": "judge-model", "bundled": False}
        assert [j["prompt"] for j in v["judgements"]] == held  # the held-out prompts, in order
        want = [expected_outcome(j["prompt"], j["base"], j["tuned"]) for j in v["judgements"]]
        assert [j["outcome"] for j in v["judgements"]] == want
        assert (v["wins"], v["ties"], v["losses"], v["unparsed"]) == \
            tuple(want.count(k) for k in ("win", "tie", "loss", "unparsed"))
        assert v["ties"] >= 2 and v["unparsed"] == 1
        s = json.loads((out / "summary.json").read_text())
        assert v["eval_loss"]["tuned"] == pytest.approx(s["best_eval_loss"], abs=2e-3)
        assert isinstance(v["eval_loss"]["base"], float)
        if not cuda_available():  # the CPU defaults took effect and were said, without library noise
            assert (s["config"]["grad_accum"], s["config"]["max_len"]) == (1, 512)
            assert "CPU defaults" in proc.stderr and "smoke run" in proc.stderr
        assert "gemm_4bit" not in proc.stderr and "Traceback" not in proc.stderr
        assert "verdict" in proc.stdout and v["verdict"][:30] in proc.stdout.replace("\n", " ")
        # a finished run validated again (as a run from before validation existed would be):
        # same answers, every judge answer from the cache
        (out / "validation.json").unlink()
        requests = _stats(srv)["requests"]
        proc = run_cli("validate", str(out), "--base-url", srv.base_url, "--model", "judge-model",
                       "--val-tokens", "12", timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert _stats(srv)["requests"] == requests
        again = json.loads((out / "validation.json").read_text())
        assert [j["outcome"] for j in again["judgements"]] == [j["outcome"] for j in v["judgements"]]
        assert again["eval_loss"] == pytest.approx(v["eval_loss"], abs=1e-4)
    # the held-out file changed since training: its prompts can no longer be trusted as held out
    _write_jsonl(eval_file, [_conv("Say cats twice.", "cats cats.")])
    from tests.helpers import assert_user_error

    assert_user_error(run_cli("validate", str(out)), "training data changed", str(eval_file.parent))


def test_validate_refuses_a_folder_that_is_no_train_run(tmp_path):
    from tests.helpers import assert_user_error

    assert_user_error(run_cli("validate", str(tmp_path)), "not a finished train run", str(tmp_path))
