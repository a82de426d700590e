"""Card sections about the data itself: the funnel, and what the accepted data looks like."""

from __future__ import annotations

from typing import Any

from datakit.report import plots
from datakit.report.blocks import Card, examples, fmt, img, not_run, note, p, table

MAX_REASONS = 5
PHASE_COLORS = {"filter": plots.GREEN, "dedup": plots.GREEN, "judged": plots.ORANGE, "export_sft": plots.ORANGE,
                "export_dpo": plots.ORANGE}


def _reasons(removed: dict[str, int]) -> str:
    items = sorted(removed.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:,}" for k, v in items[:MAX_REASONS]) + (" ..." if len(items) > MAX_REASONS else "")


def _example_items(step: dict[str, Any]) -> list[dict[str, Any]]:
    items = []
    for reason in sorted(step.get("removed") or {}, key=lambda r: -step["removed"][r])[:MAX_REASONS]:
        for ex in (step.get("examples") or {}).get(reason, []):
            fields = [(k, ex[k]) for k in ("instruction", "output", "detail", "duplicate_of", "similarity",
                                           "matched_file", "score") if ex.get(k) not in (None, "")]
            items.append({"title": f"{reason}: {ex.get('id')}", "fields": [(k, fmt(v)) for k, v in fields]})
    return items


def funnel(rep: dict[str, Any], card: Card) -> dict[str, Any]:
    steps = rep["funnel"]
    blocks: list[dict[str, Any]] = []
    shown = [s for s in steps if s["ran"] and isinstance(s.get("count"), int)]
    if shown:
        colors = [PHASE_COLORS.get(s["key"], plots.BLUE) for s in shown]
        blocks.append(img(card, "funnel.png", plots.hbar([s["label"] for s in shown], [s["count"] for s in shown],
                                                          "From proposed candidates to exported rows", "count", colors),
                          "funnel: count after each step"))
        blocks.append(note("Blue: generate; green: curation; orange: judge and export. Each later count is what that "
                           "stage reported for its own input: respond, judge and export read the curated records when "
                           "run with --records, else every accepted record of the run, so a later step can then be "
                           "larger than the one above it."))
    rows = []
    for s in steps:
        if not s["ran"]:
            rows.append([s["label"], "not run", "", ""])
            continue
        removed = s.get("removed") or {}
        count = fmt(s.get("count")) + (f" (+{fmt(s['eval_rows'])} eval)" if s.get("eval_rows") else "")
        rows.append([s["label"], count, fmt(sum(removed.values())) if removed else "", _reasons(removed)])
    blocks.append(table(["step", "count", "removed here", "top reasons"], rows))
    fail = rep["generate"]["funnel"]["failed_requests"]
    if fail:
        blocks.append(p(f"Task requests that gave no candidates: {_reasons(fail)}."))
    other = rep["generate"]["funnel"]["other_codes"]
    if other:
        blocks.append(p(f"Reason codes this datakit does not know, counted as 'other': {_reasons(other)}."))
    for s in steps:
        items = _example_items(s) if s["ran"] else []
        if items:
            blocks.append(examples(f"Examples removed at '{s['label']}'", items))
    if not rep["generate"]["ran"]:
        blocks.insert(0, not_run("generate", "datakit generate --out RUN"))
    return {"id": "funnel", "title": "Funnel", "blocks": blocks}


def _lengths(data: dict[str, Any], card: Card) -> list[dict[str, Any]]:
    blocks, rows = [], []
    for f, by_lang in data["lengths"].items():
        if any(h.get("n") for h in by_lang.values()):
            blocks.append(img(card, f"length_{f}.png", plots.histograms(by_lang, f"{f} length by language",
                                                                       "tokens (words; CJK characters)"),
                              f"{f} length histogram by language"))
        rows += [[f, lang, h["n"], h.get("mean"), h.get("median"), h.get("p90"), h.get("max")]
                 for lang, h in by_lang.items() if h.get("n")]
    blocks.append(table(["field", "language", "records", "mean", "median", "p90", "max"], rows))
    blocks.append(note(data["token_note"].capitalize() + "."))
    return blocks


def _diversity(data: dict[str, Any], card: Card) -> list[dict[str, Any]]:
    blocks = []
    v = data["verbs"]
    if v["top"]:
        blocks.append(img(card, "verbs.png", plots.verbs(v["top"], "Leading verbs of English instructions"),
                          "leading verbs and their objects"))
        blocks.append(p(f"{fmt(v['with_verb'])} of {fmt(v['n_en'])} English instructions have a leading word; "
                        f"{fmt(v['distinct'])} distinct verbs. Heuristic: first word after polite prefixes and a "
                        "leading 'Given ..., ' clause, object = next content word; questions count as (question)."))
        blocks.append(table(["verb", "instructions", "top objects"],
                            [[x["verb"], x["n"], ", ".join(f"{o} {n}" for o, n in x["objects"])] for x in v["top"][:12]]))
    z = data["zh_leading"]
    if z["top"]:
        blocks.append(p(f"Most common leading words of {fmt(z['n_zh'])} Chinese instructions "
                        f"(first two characters after 请/帮我 ..., {fmt(z['distinct'])} distinct):"))
        blocks.append(table(["leading word", "instructions"], [[w, n] for w, n in z["top"][:15]]))
    return blocks


def data(rep: dict[str, Any], card: Card) -> dict[str, Any]:
    d = rep["generate"]["data"]
    if not d["n"]:
        return {"id": "data", "title": "What the data looks like",
                "blocks": [not_run("no accepted records", "datakit generate --out RUN")]}
    blocks = [table(["language", "records", "share"], [[k, v["n"], fmt(v["share"], True)] for k, v in d["languages"].items()]),
              table(["task type", "records", "share"], [[k, v["n"], fmt(v["share"], True)] for k, v in d["classification"].items()])]
    blocks += _lengths(d, card) + _diversity(d, card)
    r = d["rouge_l"]
    if r.get("n"):
        blocks.append(img(card, "rouge_l.png", plots.histograms({"kept instructions": r}, "ROUGE-L F to the nearest earlier text",
                                                               "ROUGE-L F", vline=r.get("threshold")), "ROUGE-L histogram"))
        blocks.append(p(f"From the generate filter's own scores ({fmt(r['n'])} kept instructions; mean {fmt(r['mean'])}, "
                        f"max {fmt(r['max'])}). For kept texts the score is a lower bound: pairs the filter pruned score at most the threshold."))
    rep_out = d["repeated_outputs"]
    if rep_out["top"]:
        blocks.append(p(f"{fmt(rep_out['records_with_repeated_output'])} records share their exact output with another record "
                        f"({fmt(rep_out['distinct_outputs'])} distinct outputs). Most repeated:"))
        blocks.append(table(["records", "output (start)"], [[x["n"], x["output"][:160]] for x in rep_out["top"]]))
    blocks += _curation(rep)
    return {"id": "data", "title": "What the data looks like", "blocks": blocks}


def _curation(rep: dict[str, Any]) -> list[dict[str, Any]]:
    cur = rep["curation"]
    if not cur:
        return [not_run("near-duplicate removal and decontamination", "datakit dedup RUN --against EVAL --out FILE")]
    rows, against = [], []
    for s in cur:
        rows.append([s["key"], s.get("source"), s.get("in"), s.get("count"), sum((s.get("removed") or {}).values()),
                     s.get("clusters")])
        against += [[f, n] for f, n in (s.get("against") or {}).items()]
    out = [table(["stage", "from", "in", "kept", "removed", "near-duplicate clusters"], rows)]
    out.append(table(["decontamination file", "matches"], against) if against
               else note("No decontamination matches recorded (no `--against` run, or nothing matched)."))
    return out
