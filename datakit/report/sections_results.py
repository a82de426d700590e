"""Card sections about what the pipeline produced and spent: judge, lineage and cost,
validation runs."""

from __future__ import annotations

from typing import Any

from datakit.report import plots
from datakit.report.blocks import Card, examples, fmt, img, not_run, note, p, table, usd
from datakit.report.stages import USAGE_KEYS


def _judge_examples(title: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return examples(title, [{"title": f"score {fmt(e['score'])}: {e['record_id']} / {e['candidate']} ({e.get('model')})",
                             "fields": [(k, e[k]) for k in ("instruction", "input", "output", "rationale") if e.get(k)]}
                            for e in items])


def judge(rep: dict[str, Any], card: Card) -> dict[str, Any]:
    j = rep["judge"]
    if not j["ran"]:
        return {"id": "judge", "title": "Judge", "blocks": [not_run("judge", "datakit respond RUN && datakit judge RUN")]}
    blocks = [p("Judges: " + ", ".join(f"{x['teacher']} ({x['model']}, {x['calls']:,} calls)" for x in j["judges"]) + ".")]
    st = j["status"]
    blocks.append(table(["pointwise verdict", "candidates", "share"], [[k, v["n"], fmt(v["share"], True)] for k, v in st.items()]))
    if j["aspects"]:
        blocks.append(img(card, "judge_aspects.png", plots.histograms(j["aspects"], "Pointwise scores per aspect", "score (1-10)"),
                          "score histograms per aspect"))
        blocks.append(table(["aspect", "scored", "mean", "median"], [[a, h["n"], h.get("mean"), h.get("median")]
                                                                     for a, h in j["aspects"].items()]))
    pw = j["pairwise"]
    if pw["comparisons"]:
        r = pw["results"]
        blocks.append(table(["pairwise (both orders)", "value"], [
            ["comparisons", pw["comparisons"]], ["agreed on a winner", r.get("agreed", 0)], ["ties", r.get("tie", 0)],
            ["disagreed (changed with the order)", r.get("disagree", 0)], ["unparsed", r.get("unparsed", 0)],
            ["agreement (of both-parsed)", fmt(pw["agreement"], True)],
            ["position-bias rate", fmt(pw["position_bias_rate"], True)]]))
    jd = j.get("judged")
    if not jd:
        blocks.append(note("judged.jsonl is missing (judge did not finish): pair decisions, margins and examples unavailable."))
        return {"id": "judge", "title": "Judge", "blocks": blocks}
    blocks.append(table(["DPO pair decision", "records"], [[k, v] for k, v in jd["pairs"].items()]))
    if jd["margin"].get("n"):
        blocks.append(img(card, "dpo_margin.png", plots.histograms({"all pairs": jd["margin"], "kept pairs": jd["kept_margin"]},
                                                                   "DPO margin (chosen - rejected score)", "margin",
                                                                   vline=jd.get("min_margin")), "DPO margin histogram"))
    if jd["best"]:
        blocks.append(_judge_examples("Best scored candidates", jd["best"]))
        blocks.append(_judge_examples("Worst scored candidates", jd["worst"]))
    return {"id": "judge", "title": "Judge", "blocks": blocks}


def reviews(rep: dict[str, Any], card: Card) -> dict[str, Any]:
    """People's verdicts from `datakit view` (RUN/reviews.jsonl), which every later stage honours."""
    r = rep.get("reviews") or {}
    if not r.get("reviewed"):
        return {"id": "reviews", "title": "Human review", "blocks": [not_run("human review", "datakit view RUN")]}
    return {"id": "reviews", "title": "Human review", "blocks": [
        p(f"Reviewed by {', '.join(r['reviewers']) or 'unnamed reviewers'} in `datakit view`; filter, dedup, export "
          "and report apply these verdicts (a rejection removes the record, an edit replaces the text, a chosen "
          "pair replaces the judge's)."),
        table(["human review", "records"], [
            ["reviewed", r["reviewed"]], ["accepted", r["accepted"]], ["rejected", r["rejected"]],
            ["edited", r["edited"]], ["pair chosen by a person", r["chose_pair"]],
            ["overruled the judge", r["overruled_judge"]]]),
        note("Overruled the judge: a chosen pair that differs from the judge's kept pair (or where the judge kept "
             "none), or a rejection of a record whose judge pair was kept.")]}


def _usage_rows(cost: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for stage, per in cost["usage"].items():
        for teacher, c in per.items():
            rows.append([stage, teacher] + [usd(c.get(k)) if k == "cost" else c.get(k) for k in USAGE_KEYS]
                        + [cost["source"].get(stage)])
    return rows


def lineage_cost(rep: dict[str, Any], card: Card) -> dict[str, Any]:
    lin, cost = rep["generate"]["lineage"], rep["cost"]
    blocks: list[dict[str, Any]] = []
    methods = lin.get("methods") or []
    if methods:
        blocks.append(table(["method", "accepted", "rejected", "accepted share", "mean instruction tokens",
                             "mean output tokens", "mean turns", "top rejection reasons"],
                            [[m["method"], m["accepted"], m["rejected"],
                              "" if m["accept_rate"] is None else f"{m['accept_rate']:.0%}",
                              "" if m["mean_instruction_tokens"] is None else m["mean_instruction_tokens"],
                              "" if m["mean_output_tokens"] is None else m["mean_output_tokens"],
                              "" if m["mean_turns"] is None else m["mean_turns"],
                              ", ".join(f"{r} ({c})" for r, c in m["top_rejections"])] for m in methods]))
    if lin["makers"]:
        blocks.append(table(["part", "teacher", "model", "accepted records"],
                            [[m["part"], m["teacher"], m["model"], m["records"]] for m in lin["makers"]]))
    sd = lin["seeds"]
    if sd["top"]:
        blocks.append(p(f"{fmt(lin['requests_with_demos'])} task requests showed {fmt(sd['distinct_shown'])} distinct seeds "
                        f"({fmt(sd['shown_total'])} seed showings, {fmt(sd['machine_demos_shown'])} machine-made demo showings); "
                        f"{fmt(sd['never_accepted'])} seeds were shown but no accepted task came from a request showing them."))
        blocks.append(table(["seed", "requests that showed it", "accepted tasks from those requests"],
                            [[s["id"], s["shown"], s["accepted"]] for s in sd["top"][:15]]))
    rows = _usage_rows(cost)
    if rows:
        blocks.append(table(["stage", "teacher", *USAGE_KEYS, "from"], rows))
        if any(c is None or c == "n/a" for r in rows for c in r):
            blocks.append(note("n/a: not recorded by that stage's files (stages.jsonl gives every counter)."))
    else:
        blocks.append(note("No usage recorded (no state.json counters, no stages.jsonl)."))
    wall = [[s, f"{w:,.1f} s"] for s, w in cost["wall_s"].items()]
    wall += [["generate (teacher busy time)", f"{w:,.1f} s"] for w in cost["generate_busy_s"].values() if "generate" not in cost["wall_s"]]
    wall += [[f"train ({v['dir']})", f"{v['wall_s']:,.1f} s"] for v in rep["validation"]
             if v.get("wall_s") is not None and "train" not in cost["wall_s"]]
    blocks.append(table(["stage", "wall time"], wall) if wall else note("Wall time per stage: unavailable (no stages.jsonl)."))
    log = cost["stage_log"]
    if log:
        blocks.append(table(["stage log (stages.jsonl)", "started", "wall time", "command"],
                            [[r["stage"], r.get("started") or "", "" if r.get("wall_s") is None else f"{r['wall_s']:,.1f} s",
                              " ".join(map(str, r.get("argv") or []))[:120]] for r in log]))
    return {"id": "lineage", "title": "Lineage and cost", "blocks": blocks}


def _judged_blocks(v: dict[str, Any]) -> list[dict[str, Any]]:
    jv = v.get("judged")
    if not jv:
        return [note(f"{v['dir']}: no judged validation (no validation.json; run `datakit validate {v['dir']}`).")]
    jj = jv.get("judge") or {}
    out = [p(f"Verdict: {jv.get('verdict') or 'none'} (judge: {jj.get('teacher')} / {jj.get('model')})"),
           table(["prompts", "wins", "ties", "losses", "unparsed", "win rate", "95% CI"],
                 [[jv.get("n_prompts"), jv.get("wins"), jv.get("ties"), jv.get("losses"), jv.get("unparsed"),
                   fmt(jv.get("win_rate"), True), " - ".join(fmt(x, True) for x in jv.get("ci95") or []) or "n/a"]])]
    if jv["examples"]:
        out.append(examples(f"{v['dir']}: example pairs (tuned vs base)",
                            [{"title": f"{e.get('outcome')} (A-B order: {e.get('ab')}, B-A order: {e.get('ba')})",
                              "fields": [("prompt", e["prompt"]), ("base", e["base"]), ("tuned", e["tuned"])]}
                             for e in jv["examples"]]))
    return out


def validation(rep: dict[str, Any], card: Card) -> dict[str, Any]:
    runs = rep["validation"]
    if not runs:
        return {"id": "validation", "title": "Validation",
                "blocks": [not_run("no train* folder in this run", "datakit train --data sft.jsonl --out RUN/train-sft")]}
    blocks = []
    if any(r["curves"]["loss"] or r["curves"]["eval_loss"] for r in runs):
        blocks.append(img(card, "loss.png", plots.losses(runs, "Training and eval loss"), "loss curves"))
    blocks.append(table(["run", "method", "model", "steps", "first loss", "last loss", "eval loss: base", "eval loss: best checkpoint"],
                        [[r["dir"], r.get("method"), r.get("model"), r.get("steps"), r.get("first_loss"), r.get("last_loss"),
                          r.get("eval_loss_base"), r.get("eval_loss_tuned")] for r in runs]))
    for r in runs:
        blocks += _judged_blocks(r)
    return {"id": "validation", "title": "Validation", "blocks": blocks}
