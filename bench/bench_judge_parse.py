"""Benchmark: how exactly the judge parser reads real-looking judge answers, and whether it ever
invents a score.

Corpus: ``tests/data/judge_answers.jsonl`` (hand-written judge answers, zh and en: JSON valid,
fenced, with chatter and broken; markdown lists, headings, tables, prose; numbers that are not
scores). Each pointwise item has the true score per aspect as a reader finds it in the text, or
"missing" where the text gives none; ``unread`` lists aspects a reader scores but the parser's
rules deliberately leave unscored (a conflict, a score far from its aspect). Each pairwise item
has the true winner, or null.

Measured per aspect: exactly recovered (the true score, or no score where none is given),
missing where given, and invented (a score where the truth is missing, or a wrong value: must
be 0). Pairwise: right winner, no winner where one is given, and invented (a wrong winner).

Run: ``python bench/bench_judge_parse.py`` (a second or two). ``--parser-file F`` measures another
version of ``datakit/judge/parse.py``, e.g. the one on an older commit::

    git show <commit>:datakit/judge/parse.py > /tmp/old_parse.py
    python bench/bench_judge_parse.py --parser-file /tmp/old_parse.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CORPUS = ROOT / "tests" / "data" / "judge_answers.jsonl"


def load_corpus(path: Path = CORPUS) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_parser(path: str | None):
    if not path:
        from datakit.judge import parse
        return parse
    spec = importlib.util.spec_from_file_location("parse_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def scores_read(parser, text: str) -> dict[str, float]:
    v = parser.parse_pointwise(text)
    return {a: d["score"] for a, d in v.aspects.items() if a != "overall"}


def measure_pointwise(parser, items: list[dict]) -> dict:
    m = {"items": 0, "aspects": 0, "given": 0, "exact": 0, "missing_where_given": 0, "unread": 0,
         "invented": 0, "items_exact": 0, "invented_ids": []}
    for it in items:
        got = scores_read(parser, it["text"])
        item_ok = True
        m["items"] += 1
        for aspect, truth in it["truth"].items():
            m["aspects"] += 1
            read = got.get(aspect)
            if truth != "missing":
                m["given"] += 1
            if read is None:
                ok = truth == "missing"
                if not ok:
                    m["missing_where_given"] += 1
                    m["unread"] += aspect in it.get("unread", ())
            else:
                ok = truth != "missing" and float(read) == float(truth)
                if not ok:
                    m["invented"] += 1
                    m["invented_ids"].append(f"{it['id']}:{aspect}={read} (truth {truth})")
            m["exact"] += ok
            item_ok &= ok or aspect in it.get("unread", ())
        m["items_exact"] += item_ok
    return m


def measure_pairwise(parser, items: list[dict]) -> dict:
    m = {"items": 0, "right": 0, "none_where_given": 0, "invented": 0, "invented_ids": []}
    for it in items:
        got = parser.parse_pairwise(it["text"])
        m["items"] += 1
        if got == it["truth"]:
            m["right"] += 1
        elif got is None:
            m["none_where_given"] += 1
        else:
            m["invented"] += 1
            m["invented_ids"].append(f"{it['id']}={got} (truth {it['truth']})")
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parser-file", help="another parse.py to measure (default: datakit's)")
    ap.add_argument("--show", action="store_true", help="list every invented score")
    a = ap.parse_args()
    parser = load_parser(a.parser_file)
    corpus = load_corpus()
    point = [it for it in corpus if it["kind"] == "pointwise"]
    pair = [it for it in corpus if it["kind"] == "pairwise"]
    t0 = time.perf_counter()
    p, q = measure_pointwise(parser, point), measure_pairwise(parser, pair)
    dt = time.perf_counter() - t0
    given_pairs = sum(it["truth"] is not None for it in pair)
    name = a.parser_file or "datakit/judge/parse.py"
    zh = sum(it["lang"] == "zh" for it in corpus)
    print(f"parser: {name}\ncorpus: {CORPUS.relative_to(ROOT)}: {len(corpus)} answers "
          f"({zh} zh, {sum(it['lang'] == 'mixed' for it in corpus)} mixed, the rest en)\n")
    print("| pointwise | value |\n|---|---:|")
    print(f"| answers | {p['items']} |")
    print(f"| aspects (answers x 6) | {p['aspects']} ({p['given']} with a score in the text) |")
    print(f"| aspects exactly recovered | {p['exact'] / p['aspects']:.1%} |")
    print(f"| answers recovered in full (documented unread aspects aside) | {p['items_exact'] / p['items']:.1%} |")
    print(f"| missing where the text gives a score | {p['missing_where_given'] / p['given']:.1%} "
          f"({p['missing_where_given']}, of which {p['unread']} left unread by rule) |")
    print(f"| invented scores (none given, or a wrong value) | {p['invented']} |")
    print("\n| pairwise | value |\n|---|---:|")
    print(f"| answers | {q['items']} ({given_pairs} name a winner) |")
    print(f"| right winner (or none where none is named) | {q['right'] / max(q['items'], 1):.1%} |")
    print(f"| no winner where one is named | {q['none_where_given']} |")
    print(f"| invented (a wrong winner) | {q['invented']} |")
    print(f"\n{len(corpus)} answers parsed in {dt * 1000:.0f} ms")
    if a.show:
        for line in p["invented_ids"] + q["invented_ids"]:
            print("invented:", line)


if __name__ == "__main__":
    main()
