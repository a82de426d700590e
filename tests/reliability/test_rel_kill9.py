"""kill -9 anywhere: generate, respond, judge, dedup, export and train, each killed at 5 points
(3 at random times, 2 the moment an output file changes, i.e. during or right after a write),
then rerun to the end. The rerun loses nothing and duplicates nothing (its output equals an
uninterrupted run's), no reader ever sees a torn file between kills, and no teacher request
whose answer had reached the client's cache is sent again (counted at the fault server)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_run, rel_responder, teacher_toml, without_cached
from datakit.config import load_config
from datakit.judge.run import JudgeOptions, RespondOptions, judge, respond
from datakit.records import read_jsonl, read_table, write_table
from datakit.teachers.fake_server import FakeOpenAIServer, body_key
from helpers import REPO, jsonl, run_cli

KILLS = 5
RNG = random.Random(16)


def _sizes(paths: list[Path]) -> tuple:
    return tuple(p.stat().st_size if p.exists() else -1 for p in paths)


def kill_at(argv: list[str], *, after: float | None = None, watch: list[Path] | None = None,
            until=None, then: float = 0.0, limit: float = 60.0) -> bool:
    """Start ``datakit ARGV``, SIGKILL it ``after`` seconds, the moment one of ``watch`` changes
    size, or the moment ``until()`` is true (plus ``then`` seconds). Returns True when it was
    still running at the kill."""
    p = subprocess.Popen([sys.executable, "-m", "datakit", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    t0, start = time.monotonic(), _sizes(watch or [])
    while time.monotonic() - t0 < limit and p.poll() is None:
        if after is not None and time.monotonic() - t0 >= after:
            break
        if (watch and _sizes(watch) != start) or (until is not None and until()):
            time.sleep(then)
            break
        time.sleep(0.001)
    alive = p.poll() is None
    p.send_signal(signal.SIGKILL)
    p.wait()
    return alive


def assert_readable(folder: Path) -> None:
    """What a reader finds right after a kill: every visible file whole (JSON parses, JSONL
    parses up to a torn last line that readers skip, Parquet opens), no visible temp file."""
    for p in folder.rglob("*"):
        if not p.is_file() or p.name.startswith("."):
            continue
        assert not p.name.endswith(".tmp"), p
        if p.suffix == ".json":
            json.loads(p.read_text(encoding="utf-8"))
        elif p.suffix == ".jsonl":
            list(read_jsonl(p))
        elif p.suffix == ".parquet":
            read_table(p)


class ServerLedger:
    """Remembers, at each kill, how often every request already in the client's cache had been
    received by the server; at the end none of them may have been received again."""

    def __init__(self, srv: FakeOpenAIServer, cache: Path):
        self.srv, self.cache = srv, cache
        self.seen: dict[str, int] = {}

    def note(self) -> None:
        if not self.cache.exists():
            return
        db = sqlite3.connect(str(self.cache))
        try:
            for (req,) in db.execute("SELECT request FROM responses"):
                self.seen.setdefault(body_key(req.encode()), self.srv.stats.received[body_key(req.encode())])
        finally:
            db.close()

    def assert_none_resent(self) -> None:
        assert self.seen, "nothing was cached before a kill: the kills came too early"
        resent = {k: (n, self.srv.stats.received[k]) for k, n in self.seen.items() if self.srv.stats.received[k] != n}
        assert not resent, f"{len(resent)} requests answered before a kill were sent again"


def kill_points(watch: list[Path], span: float) -> list[dict]:
    return [{"after": RNG.uniform(0.3, span)} for _ in range(KILLS - 2)] + [{"watch": watch}] * 2


def kill_cycle(argv, out: Path, points: list[dict], ledger: ServerLedger | None = None) -> int:
    alive = 0
    for point in points:
        alive += kill_at(argv, **point)
        assert_readable(out if out.is_dir() else out.parent)
        if ledger:
            ledger.note()
    return alive


# --------------------------------------------------------------------------- teacher commands

@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(responder=rel_responder, latency=0.03) as srv:
        yield srv


@pytest.fixture(scope="module")
def slow_server():
    with FakeOpenAIServer(responder=rel_responder, latency=0.1) as srv:
        yield srv


def test_generate_killed_5_times(tmp_path, slow_server):
    # a slower teacher, and kill times within the reference run's own length: on a quiet fast
    # machine the whole run took ~2 s, so kills drawn up to 2.5 s often found it finished
    server = slow_server
    toml = teacher_toml(tmp_path / "t.toml", server.base_url, concurrency=2)
    args = lambda out: ["generate", "--num", "40", "--out", str(out), "--config", str(toml),
                        "--requests-per-round", "2"]
    t0 = time.monotonic()
    assert run_cli(*args(tmp_path / "ref")).returncode == 0
    span = max(1.0, 0.6 * (time.monotonic() - t0))
    run = tmp_path / "run"
    ledger = ServerLedger(server, run / "cache.sqlite")
    alive = kill_cycle(args(run), run, kill_points([run / "records.jsonl", run / "state.json"], span), ledger)
    assert alive >= 3
    done = run_cli(*args(run))
    assert done.returncode == 0, done.stderr
    for name in ("records.jsonl", "rejected.jsonl"):
        got, want = jsonl(run / name), jsonl(tmp_path / "ref" / name)
        assert len({r["id"] for r in got}) == len(got)
        assert without_cached(got) == without_cached(want), name
    ledger.assert_none_resent()


def test_respond_then_judge_killed_5_times_each(tmp_path, server):
    ref = make_run(tmp_path / "ref", 30)
    cfg = load_config(teacher_toml(tmp_path / "t.toml", server.base_url, concurrency=2))
    respond(ref, cfg, RespondOptions(n=2))
    judge(ref, cfg, JudgeOptions())

    run = make_run(tmp_path / "run", 30)
    ledger = ServerLedger(server, run / "cache.sqlite")
    base = ["--config", str(tmp_path / "t.toml")]
    resp = ["respond", str(run), "--n", "2", *base]
    alive = kill_cycle(resp, run, kill_points([run / "candidates.jsonl"], 1.5), ledger)
    assert run_cli(*resp).returncode == 0
    jud = ["judge", str(run), *base]
    alive += kill_cycle(jud, run, kill_points([run / "judgements.jsonl"], 2.0), ledger)
    assert alive >= 6
    done = run_cli(*jud)
    assert done.returncode == 0, done.stderr

    key = lambda r: (r["record_id"], r["id"])
    got = sorted(jsonl(run / "candidates.jsonl"), key=key)
    assert len({key(r) for r in got}) == len(got) == 60
    assert without_cached(got) == without_cached(sorted(jsonl(ref / "candidates.jsonl"), key=key))
    assert without_cached(jsonl(run / "judged.jsonl")) == without_cached(jsonl(ref / "judged.jsonl"))
    ledger.assert_none_resent()


# --------------------------------------------------------------------------- file commands

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Enough records that dedup and export take a second or two: kills land mid-work."""
    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(1)
    words = [f"w{i}" for i in range(3000)]
    rows = []
    for i in range(40000):
        text = " ".join(rng.choice(words) for _ in range(12))
        rows.append({"id": f"c{i}", "instruction": text, "input": "", "output": text[::-1],
                     "candidates": [{"id": "a", "output": "good " + text, "judge": {"status": "ok", "score": 8.0}},
                                    {"id": "b", "output": "bad", "judge": {"status": "ok", "score": 2.0}}]})
        if i % 10 == 0:
            rows.append(dict(rows[-1], id=f"c{i}d"))   # an exact duplicate for dedup to remove
    write_table(d / "in.jsonl", rows)
    return d / "in.jsonl"


@pytest.mark.parametrize("command", [
    ["dedup", "{in}", "-o", "{out}/dedup.jsonl"],
    ["export", "{in}", "--format", "dpo", "--out", "{out}/dpo.parquet"],
])
def test_file_commands_killed_5_times(tmp_path, corpus, command):
    argv = lambda out: [a.format(**{"in": corpus, "out": out}) for a in command]
    ref = tmp_path / "ref"
    ref.mkdir()
    t0 = time.monotonic()
    assert run_cli(*argv(ref)).returncode == 0
    span = time.monotonic() - t0
    out = tmp_path / "out"
    out.mkdir()
    result = Path(argv(out)[-1])
    # "during a write": the moment a temp file appears beside the output (the atomic write)
    temp_file = lambda: any(x.name.endswith(".tmp") for x in out.iterdir())  # noqa: E731
    points = [{"after": RNG.uniform(0.2, span)} for _ in range(KILLS - 2)] + [{"until": temp_file}] * 2
    for point in points:
        kill_at(argv(out), **point)
        assert_readable(out)
        assert not result.exists() or read_table(result) == read_table(ref / result.name), \
            "a killed run left a partial output"
    assert run_cli(*argv(out)).returncode == 0
    assert read_table(result) == read_table(ref / result.name)
    # a writer killed mid-write may leave its hidden temp file (".NAME.xxxx.tmp"); no reader
    # looks at those, and the output itself is whole
    assert all(p.name.startswith(".") for p in out.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- train

STEPS = 30  # enough that 5 kills at the first write + <= 0.3 s always land mid-run


def test_train_killed_5_times(tmp_path):
    """A tiny random-weight Qwen2 (1 layer) with the bundled tokenizer: each kill lands while it
    trains or checkpoints (watching metrics.jsonl and the checkpoint, then a random delay)."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from datakit.errors import UserError
    from datakit.train.model import load_tokenizer, resolve_model

    try:
        tok, _ = load_tokenizer(resolve_model("bundled"))
    except UserError as e:
        pytest.skip(str(e))
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(str(tmp_path / "tiny"))
    tok.save_pretrained(str(tmp_path / "tiny"))
    rows = [{"messages": [{"role": "user", "content": f"Say w{i} twice."},
                          {"role": "assistant", "content": f"w{i} w{i}."}]} for i in range(64)]
    write_table(tmp_path / "sft.jsonl", rows)
    args = lambda out: ["train", "--data", str(tmp_path / "sft.jsonl"), "--model", str(tmp_path / "tiny"),
                        "--out", str(out), "--max-steps", str(STEPS), "--save-every", "1", "--eval-every", "4",
                        "--no-validate", "--samples", "0", "--no-4bit", "--max-len", "64", "--batch-size", "2",
                        "--grad-accum", "1", "--lr", "1e-2"]
    from datakit.train import train
    from datakit.train.config import make_config

    from datakit.train.cpu_defaults import apply_cpu_defaults

    def in_process(out):  # the uninterrupted run and the final rerun need no process of their own
        torch.set_num_threads(1)
        opts = dict(data=str(tmp_path / "sft.jsonl"), model=str(tmp_path / "tiny"), out=str(out),
                    max_steps=STEPS, save_every=1, eval_every=4, samples=0, load_4bit=False, max_len=64,
                    batch_size=2, grad_accum=1, lr=1e-2)
        opts, _ = apply_cpu_defaults(None, opts)  # as the command does
        return train(make_config(None, **opts))

    in_process(tmp_path / "ref")
    want = [r["loss"] for r in jsonl(tmp_path / "ref" / "metrics.jsonl")]

    out = tmp_path / "out"
    watch = [out / "metrics.jsonl", out / "checkpoint-last" / "state.json"]
    alive = 0
    for _ in range(KILLS):
        alive += kill_at(args(out), watch=watch, then=RNG.uniform(0, 0.3))
        assert_readable(out)
    assert alive >= 4
    assert in_process(out)["resumed_from"] > 0
    got = jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))   # nothing lost, nothing twice
    assert [r["loss"] for r in got] == pytest.approx(want, abs=1e-4)
