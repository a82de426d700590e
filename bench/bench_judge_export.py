"""Benchmark: judge parsing and export, datakit vs a plain baseline, in the same run.

1. Judge parsing on a corpus of judge answers in the shapes real judges produce (clean JSON,
   JSON in code fences or prose, scores as words / fractions / Chinese numerals, Chinese keys,
   markdown lines, near-JSON, out-of-range values, no scores at all), each with its known truth.
   Baseline: ``json.loads`` of the whole answer and the six rubric keys read as numbers.
   Measured: share of answers whose scores are recovered exactly, share where a score is
   reported although the truth is "no valid score" (a made-up score), and answers per second.
2. SFT export with a ChatML ``text`` column for N records. Baseline: the common recipe of
   ``datasets.Dataset.from_list`` + ``.map(apply_chat_template)`` with the SmolLM2 tokenizer,
   then ``to_json``. datakit: ``export(..., text=True)``. Outputs are checked equal.
3. ``--max-len`` token counting: datakit's batched count vs per-row
   ``apply_chat_template(tokenize=True)``. Counts are checked equal.

Run: ``.venv/bin/python bench/bench_judge_export.py [--n 20000]``
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datakit.export import ExportOptions, export  # noqa: E402
from datakit.export.tokens import conversation_lengths, load_tokenizer  # noqa: E402
from datakit.judge.parse import ASPECTS, parse_pointwise  # noqa: E402
from datakit.records import Record, read_table  # noqa: E402

EN_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
ZH_NUM = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九", "十"]
ZH_KEYS = {"instruction_following": "指令遵循", "helpfulness": "有用性", "correctness": "正确性",
           "harmlessness": "无害性", "clarity": "清晰度", "feasibility": "可行性"}


def make_corpus(n: int, rng: random.Random) -> list[tuple[str, dict[str, int] | None]]:
    """(answer, truth) pairs; truth None means no valid score may be reported."""
    out = []
    styles = ["json", "fence", "prose_json", "words", "fraction", "zh_lines", "zh_json", "md_lines",
              "trailing_comma", "out_of_range", "no_scores"]
    for i in range(n):
        style = styles[i % len(styles)]
        s = {a: rng.randint(1, 10) for a in ASPECTS}
        obj = {a: {"score": v, "rationale": "fine"} for a, v in s.items()}
        truth: dict[str, int] | None = s
        if style == "json":
            text = json.dumps(obj)
        elif style == "fence":
            text = "```json\n" + json.dumps(obj, indent=2) + "\n```"
        elif style == "prose_json":
            text = "Here is my evaluation of the response.\n" + json.dumps(obj) + "\nI hope this helps!"
        elif style == "words":
            text = json.dumps({a: {"score": EN_WORDS[v], "rationale": "ok"} for a, v in s.items()})
        elif style == "fraction":
            text = json.dumps({a: f"{v}/10" for a, v in s.items()})
        elif style == "zh_lines":
            text = "评价：\n" + "\n".join(f"{ZH_KEYS[a]}：{ZH_NUM[v]}分，理由略" for a, v in s.items())
        elif style == "zh_json":
            text = json.dumps({ZH_KEYS[a]: {"分数": v, "理由": "好"} for a, v in s.items()}, ensure_ascii=False)
        elif style == "md_lines":
            text = "\n".join(f"- **{a.replace('_', ' ').title()}**: {v}/10 - reason" for a, v in s.items())
        elif style == "trailing_comma":
            text = "{" + ", ".join(f'"{a}": {v}' for a, v in s.items()) + ",}"
        elif style == "out_of_range":
            text = json.dumps({a: v + 10 for a, v in s.items()})
            truth = None
        else:
            text = "The response is helpful and mostly correct, I would rate it highly."
            truth = None
        out.append((text, truth))
    return out


def baseline_parse(text: str) -> dict[str, float] | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    got = {}
    for a in ASPECTS:
        v = obj.get(a)
        if isinstance(v, dict):
            v = v.get("score")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            got[a] = float(v)
    return got or None


def datakit_parse(text: str) -> dict[str, float] | None:
    v = parse_pointwise(text)
    if v.status == "unparsed":
        return None
    return {a: d["score"] for a, d in v.aspects.items() if a in ASPECTS}


def score_parser(fn, corpus) -> dict[str, float]:
    exact = made_up = 0
    t0 = time.perf_counter()
    results = [fn(t) for t, _ in corpus]
    dt = time.perf_counter() - t0
    for got, (_, truth) in zip(results, corpus):
        if truth is None:
            made_up += got is not None
        elif got == {a: float(v) for a, v in truth.items()}:
            exact += 1
    n_valid = sum(1 for _, t in corpus if t is not None)
    n_invalid = len(corpus) - n_valid
    return {"exact": exact / n_valid, "made_up": made_up / n_invalid, "per_s": len(corpus) / dt}


def make_records(n: int, rng: random.Random) -> list[Record]:
    recs = []
    for i in range(n):
        out = " ".join(rng.choice(["alpha", "beta", "gamma", "数据", "模型", "delta"]) for _ in range(rng.randint(20, 120)))
        recs.append(Record(id=f"r{i:06d}", instruction=f"Write about topic {i}.",
                           input="" if i % 3 else f"context {i}", output=out))
    return recs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000, help="records for the export benchmark")
    ap.add_argument("--corpus", type=int, default=11000, help="judge answers for the parsing benchmark")
    a = ap.parse_args()
    rng = random.Random(0)
    rows = []

    corpus = make_corpus(a.corpus, rng)
    b, d = score_parser(baseline_parse, corpus), score_parser(datakit_parse, corpus)
    rows.append(("judge parse: exact scores recovered", f"{b['exact']:.1%}", f"{d['exact']:.1%}",
                 f"{d['exact'] / b['exact']:.2f}x"))
    rows.append(("judge parse: made-up scores (lower is better)", f"{b['made_up']:.1%}", f"{d['made_up']:.1%}", "-"))
    rows.append(("judge parse: answers/s", f"{b['per_s']:,.0f}", f"{d['per_s']:,.0f}",
                 f"{d['per_s'] / b['per_s']:.2f}x"))

    import datasets
    from transformers import AutoTokenizer  # noqa: F401

    datasets.disable_progress_bars()
    tok = load_tokenizer("smollm2")
    recs = make_records(a.n, rng)
    system = "You are a helpful assistant."
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        export(recs, tmp / "dk.jsonl", ExportOptions(format="sft", text=True, system=system))
        t_dk = time.perf_counter() - t0

        t0 = time.perf_counter()
        from datakit.export.formats import user_content

        ds = datasets.Dataset.from_list([{"messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user_content(r.instruction, r.input)},
            {"role": "assistant", "content": r.output}]} for r in recs])
        ds = ds.map(lambda ex: {"text": tok.apply_chat_template(ex["messages"], tokenize=False)})
        ds.to_json(tmp / "base.jsonl", force_ascii=False)
        t_base = time.perf_counter() - t0
        ours = read_table(tmp / "dk.jsonl")
        base = read_table(tmp / "base.jsonl")
        assert [r["text"] for r in ours] == [r["text"] for r in base], "texts differ"
    rows.append((f"SFT export + ChatML text, {a.n:,} rows: rows/s", f"{a.n / t_base:,.0f}", f"{a.n / t_dk:,.0f}",
                 f"{t_base / t_dk:.2f}x"))

    convs = [[{"role": "system", "content": system}, {"role": "user", "content": r.instruction},
              {"role": "assistant", "content": r.output}] for r in recs[:5000]]
    t0 = time.perf_counter()
    base_len = [len(tok.apply_chat_template(c, tokenize=True)["input_ids"]) for c in convs]
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    dk_len = conversation_lengths(tok, convs)
    t_dk = time.perf_counter() - t0
    same = sum(x == y for x, y in zip(base_len, dk_len)) / len(convs)
    rows.append((f"--max-len token count, {len(convs):,} convs: convs/s", f"{len(convs) / t_base:,.0f}",
                 f"{len(convs) / t_dk:,.0f}", f"{t_base / t_dk:.2f}x"))
    rows.append(("--max-len token count: same count as baseline", "-", f"{same:.1%}", "-"))

    import datasets as _d
    import transformers as _t
    import trl as _trl

    print(f"machine: {platform.machine()} {platform.processor() or ''}, python {platform.python_version()}, "
          f"datasets {_d.__version__}, transformers {_t.__version__}, trl {_trl.__version__}")
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':<{w}}  {'baseline':>10}  {'datakit':>10}  {'ratio':>7}")
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:>10}  {r[2]:>10}  {r[3]:>7}")


if __name__ == "__main__":
    main()
