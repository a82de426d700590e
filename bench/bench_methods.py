"""Benchmark: how varied the instructions of each generation method are, on one teacher and
about one request budget.

Methods (each in its own run directory, on the same teacher):

* ``self-instruct``: ``generate --num N``;
* ``+ personas``: the same, with ``generate.personas = seeds/personas`` (same demos: personas
  draw from an RNG of their own);
* ``evol-instruct``: ``generate --num 0.35 N``, then ``evolve --rounds 1`` on that pool; the
  dataset measured is the pool plus its accepted evolutions (what one would train on).

Measured on the accepted instructions: distinct-1 and distinct-2 (unique uni/bigrams over all
uni/bigrams, CJK-aware tokens), mean ROUGE-L F to the nearest other instruction (lower is more
varied), distinct leading words (the first word; the first two characters for Chinese), mean
length in tokens, and acceptance rate (accepted / candidates that reached the filters: not
``surplus``), with the requests each method paid for.

Teachers: ``--teacher fake`` (default; the scripted server of datakit.teachers.fake_methods,
seconds) or ``--teacher local`` (the bundled SmolLM2-135M on the CPU, slow). The scripted
server's answers do not depend on the persona or on the rewriting instruction beyond a fixed
recipe, and SmolLM2-135M is a very weak teacher: with either, the numbers exercise the code,
they do not rank the methods. Use ``--base-url/--model`` for a real teacher.

Run: ``python bench/bench_methods.py [--num 60] [--teacher fake|local]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from datakit.config import load_config  # noqa: E402
from datakit.curate.rouge import rouge_l_f, tokenize  # noqa: E402
from datakit.records import read_jsonl  # noqa: E402
from datakit.runs import RunDir  # noqa: E402


def metrics(instructions: list[str]) -> dict[str, float]:
    toks = [tokenize(t, "cjk") for t in instructions]
    uni = [w for t in toks for w in t]
    bi = [tuple(t[i:i + 2]) for t in toks for i in range(len(t) - 1)]
    nearest = []
    for i, a in enumerate(toks):
        nearest.append(max((rouge_l_f(a, b) for j, b in enumerate(toks) if j != i), default=0.0))
    lead = {("".join(t[:2]) if t and "\u4e00" <= t[0] <= "\u9fff" else (t[0] if t else "")) for t in toks}
    n = max(1, len(instructions))
    return {"n": len(instructions), "distinct_1": len(set(uni)) / max(1, len(uni)),
            "distinct_2": len(set(bi)) / max(1, len(bi)), "nearest_rouge_l": sum(nearest) / n,
            "leading_words": len(lead), "mean_tokens": sum(map(len, toks)) / n}


def evol_pool(num: int) -> int:
    """The self-instruct pool evolve starts from: each evolution costs about two requests (the
    rewrite and the instance), so a pool of 0.35 N plus its evolutions costs about what N
    self-instruct records cost."""
    return max(2, round(0.35 * num))


def rows(path: Path) -> list[dict]:
    return list(read_jsonl(path)) if path.exists() else []


def acceptance(run: Path) -> float:
    acc = len(rows(run / "records.jsonl"))
    rej = [r for r in rows(run / "rejected.jsonl") if r.get("reason") != "surplus"]
    return acc / max(1, acc + len(rej))


def requests(run: Path) -> int:
    state = json.loads((run / "state.json").read_text())
    return sum(t["requests"] + t["cache_hits"] for t in state["teachers"].values())


async def run_methods(cfg_overrides: dict, num: int, root: Path) -> dict[str, dict]:
    from datakit.generate.evolve import EvolveOptions, evolve
    from datakit.generate.loop import generate

    out = {}
    for name, extra, n in (("self-instruct", {}, num),
                           ("+ personas", {"generate.personas": str(REPO / "seeds" / "personas")}, num),
                           ("evol-instruct", {}, evol_pool(num))):
        cfg = load_config(None, {**cfg_overrides, **extra, "generate.num": n})
        run = RunDir(root / name.strip("+ "))
        t0 = time.monotonic()
        await generate(cfg, run)
        recs, paid, acc = [r["instruction"] for r in rows(run.records_path)], requests(run.path), acceptance(run.path)
        if name == "evol-instruct":
            await evolve(cfg, run.path, EvolveOptions(rounds=1))
            ev = run.path / "evolve"
            evolved = [r["instruction"] for r in rows(ev / "records.jsonl")]
            paid += requests(ev)
            acc = (len(recs) + len(evolved)) / (len(recs) / max(acc, 1e-9) + len(evolved) / max(acceptance(ev), 1e-9))
            recs += evolved
        out[name] = {**metrics(recs), "acceptance": acc, "requests": paid, "seconds": time.monotonic() - t0}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=60)
    ap.add_argument("--teacher", choices=["fake", "local"], default="fake")
    ap.add_argument("--base-url")
    ap.add_argument("--model")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if a.base_url:
            res = asyncio.run(run_methods({"teachers": [{"name": "t", "base_url": a.base_url, "model": a.model}]},
                                          a.num, Path(tmp)))
            label = a.model
        elif a.teacher == "fake":
            from datakit.teachers.fake_methods import methods_responder
            from datakit.teachers.fake_server import FakeOpenAIServer

            with FakeOpenAIServer(responder=methods_responder) as srv:
                res = asyncio.run(run_methods({"teachers": [{"name": "fake", "base_url": srv.base_url,
                                                             "model": "fake"}]}, a.num, Path(tmp)))
            label = "scripted fake server"
        else:
            res = asyncio.run(run_methods({"generate.requests_per_round": 2, "generate.task_max_tokens": 200,
                                           "generate.instance_max_tokens": 128, "generate.max_idle_rounds": 6},
                                          a.num, Path(tmp)))
            label = "bundled SmolLM2-135M (CPU)"
    print(f"teacher: {label}; --num {a.num} (evol-instruct: a pool of {evol_pool(a.num)} + one round of evolution, about the same requests)")
    cols = ["n", "requests", "acceptance", "distinct_1", "distinct_2", "nearest_rouge_l", "leading_words",
            "mean_tokens", "seconds"]
    print("| method | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, m in res.items():
        cells = [f"{m[c]:.3f}" if isinstance(m[c], float) else str(m[c]) for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
