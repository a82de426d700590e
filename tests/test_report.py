"""``datakit report``: the card's numbers against hand-made runs whose content is known
(tests/test_report_fixture.py), the self-contained HTML, and one-line errors."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import pytest

from helpers import assert_user_error, run_cli
from test_report_fixture import R1, R3, make_run

from datakit.report.funnel import step_of
from datakit.report.text import language, n_tokens, verb_object, zh_lead

PNG = b"\x89PNG\r\n\x1a\n"


def _report(run: Path, *args: str) -> dict:
    proc = run_cli("report", str(run), *args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = Path(args[args.index("--out") + 1]) if "--out" in args else run / "card"
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[Path, dict]:
    run = make_run(tmp_path_factory.mktemp("r") / "run")
    return run, _report(run)


def _step(rep: dict, key: str) -> dict:
    return next(s for s in rep["funnel"] if s["key"] == key)


def test_funnel_counts_reasons_and_examples(full):
    _, rep = full
    gen = [(s["key"], s["count"]) for s in rep["funnel"][:6]]
    assert gen == [("proposed", 15), ("surplus", 13), ("rules", 10), ("exact_dup", 9), ("rouge_l", 6), ("instance", 4)]
    assert _step(rep, "rules")["removed"] == {"too_short": 3}
    assert _step(rep, "rouge_l")["removed"] == {"too_similar": 2, "other": 1}      # unknown code -> its filter's step
    assert _step(rep, "instance")["removed"] == {"copied_example": 1, "instance_unparsed": 1}
    assert rep["generate"]["funnel"]["other_codes"] == {"mystery_code": 1}
    assert rep["generate"]["funnel"]["failed_requests"] == {"unparsed_list": 1}
    assert [e["id"] for e in _step(rep, "rules")["examples"]["too_short"]] == ["g00001-00-02", "g00001-00-03"]
    assert _step(rep, "instance")["examples"]["copied_example"][0]["output"] == "Dear Sam, I am sorry"
    assert rep["generate"]["uncommitted_rows"] == 2      # round 3 rows, past state.json's round 2
    dedup = _step(rep, "dedup")
    assert (dedup["in"], dedup["count"], dedup["clusters"], dedup["against"]) == (4, 2, 1, {"eval.jsonl": 1})
    assert dedup["examples"]["contaminated"][0]["matched_file"] == "eval.jsonl"
    assert _step(rep, "judged")["count"] == 3
    sft, dpo = _step(rep, "export_sft"), _step(rep, "export_dpo")
    assert (sft["count"], sft["eval_rows"], sft["removed"]) == (3, 1, {"unscored": 1})
    assert (dpo["count"], dpo["removed"]) == (1, {"all_tied": 1, "too_few_candidates": 1})
    s = rep["summary"]
    assert (s["accepted_records"], s["candidates_proposed"], s["acceptance_rate"]) == (4, 15, 0.2667)


def test_data_shape(full):
    _, rep = full
    d = rep["generate"]["data"]
    assert d["languages"] == {"en": {"n": 3, "share": 0.75}, "zh": {"n": 1, "share": 0.25}}
    assert d["classification"]["classification"] == {"n": 1, "share": 0.25}
    en = d["lengths"]["instruction"]["en"]          # 7, 6, 6 words
    assert (en["n"], en["mean"], en["max"], sum(en["counts"])) == (3, 6.3333, 7, 3)
    assert d["lengths"]["instruction"]["zh"]["max"] == 10   # 请写一首关于春天的诗: 10 characters
    assert d["verbs"]["top"] == [{"verb": "write", "n": 2, "objects": [["poem", 1], ["haiku", 1]]},
                                 {"verb": "classify", "n": 1, "objects": [["sentiment", 1]]}]
    assert d["zh_leading"]["top"] == [["写一", 1]]
    r = d["rouge_l"]
    assert (r["n"], r["mean"], r["max"], r["threshold"]) == (4, 0.2375, 0.45, 0.7)
    assert d["repeated_outputs"]["records_with_repeated_output"] == 0


def test_judge_numbers(full):
    _, rep = full
    j = rep["judge"]
    assert j["pointwise"] == 6                       # the repeated unit counts once (last line wins)
    assert {k: v["n"] for k, v in j["status"].items()} == {"ok": 4, "partial": 1, "unparsed": 1}
    assert (j["aspects"]["helpfulness"]["n"], j["aspects"]["helpfulness"]["mean"]) == (5, 7.2)
    pw = j["pairwise"]
    assert (pw["comparisons"], pw["results"]) == (3, {"agreed": 1, "disagree": 1, "tie": 1})
    assert (pw["agreement"], pw["position_bias_rate"]) == (0.3333, 0.3333)
    jd = j["judged"]
    assert jd["pairs"] == {"kept (judge)": 1, "all_tied": 1, "too_few_candidates": 1}
    assert (jd["margin"]["n"], jd["kept_margin"]["n"], jd["min_margin"]) == (2, 1, 1.0)
    assert [(e["record_id"], e["score"]) for e in jd["best"]] == [(R3, 9.0), (R1, 8.0), ("g00001-00-01", 7.0)]
    assert [e["score"] for e in jd["worst"]] == [5.0, 7.0, 7.0]


def test_lineage_cost_and_validation(full):
    _, rep = full
    seeds = {s["id"]: (s["shown"], s["accepted"]) for s in rep["generate"]["lineage"]["seeds"]["top"]}
    assert seeds == {"seed_en_001": (2, 3), "seed_zh_002": (1, 2), "seed_en_003": (1, 1), "seed_en_004": (1, 1),
                     "seed_en_005": (1, 0)}
    assert rep["generate"]["lineage"]["seeds"]["machine_demos_shown"] == 1
    cost = rep["cost"]
    assert cost["usage"]["judge"]["local"]["requests"] == 14      # two judge runs add up
    assert cost["wall_s"] == {"generate": 60.0, "dedup": 1.5, "respond": 20.0, "judge": 35.0, "export": 0.75}
    assert cost["source"]["generate"] == "stages.jsonl"
    (v,) = rep["validation"]
    assert (v["dir"], v["eval_loss_base"], v["eval_loss_tuned"], v["steps"]) == ("train-sft", 2.1, 1.7, 4)
    assert v["curves"]["eval_loss"] == [1.9, 1.7]
    assert (v["judged"]["wins"], v["judged"]["verdict"]) == (2, "no measurable difference")
    assert [e["outcome"] for e in v["judged"]["examples"]] == ["win", "loss", "tie"]
    assert rep["bundled"] == {"teacher": True, "judge": True, "validation_judge": True}
    assert sum("bundled 135M" in w for w in rep["warnings"]) == 3


def test_card_files_self_contained(full):
    run, rep = full
    out = run / "card"
    assert rep["images"] and all((out / n).read_bytes().startswith(PNG) for n in rep["images"])
    html = (out / "card.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"url\(|@import|@font-face", html, re.I)
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(srcs) == len(rep["images"])
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG)
    md = (out / "card.md").read_text(encoding="utf-8")
    assert all(f"]({n})" in md for n in rep["images"])
    assert "no quality claim" in md and "no quality claim" in html
    assert not list(out.glob(".*.tmp"))


def test_without_stage_log_falls_back_to_files(tmp_path):
    run = make_run(tmp_path / "run", stages=False)
    rep = _report(run, "--out", str(tmp_path / "elsewhere"))
    assert not (run / "card").exists()
    assert rep["cost"]["source"] == {"generate": "state.json", "respond": "candidates.jsonl", "judge": "judgements.jsonl"}
    assert rep["cost"]["usage"]["respond"]["local"]["prompt_tokens"] == 60
    assert rep["cost"]["usage"]["judge"]["local"]["prompt_tokens"] is None      # judge lines carry no tokens
    assert rep["cost"]["wall_s"] == {} and rep["cost"]["generate_busy_s"] == {"local": 42.5}
    dedup = _step(rep, "dedup")
    assert (dedup["source"], dedup["in"], dedup["count"], dedup["clusters"]) == ("clean.jsonl.removed.jsonl", 4, 2, 1)
    assert (_step(rep, "export_sft")["count"], _step(rep, "export_sft")["eval_rows"]) == (3, 1)
    assert _step(rep, "export_dpo")["removed"] == {"all_tied": 1, "too_few_candidates": 1}   # from judged.jsonl
    assert any("No stages.jsonl" in w for w in rep["warnings"])


def test_minimal_run_says_not_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "records.jsonl").write_text(json.dumps({"id": "a", "instruction": "Write a poem.", "output": "ok"}) + "\n")
    rep = _report(run)
    assert rep["judge"]["ran"] is False and rep["validation"] == [] and rep["bundled"]["teacher"] is False
    md = (run / "card" / "card.md").read_text(encoding="utf-8")
    assert md.count("not run") >= 4          # dedup, judged and both exports in the funnel, judge, validation
    assert "no quality claim" not in md


@pytest.mark.parametrize("setup", ["empty", "missing", "file"])
def test_not_a_run_directory(tmp_path, setup):
    target = tmp_path / "x"
    if setup == "empty":
        target.mkdir()
    elif setup == "file":
        target.write_text("hello")
    assert_user_error(run_cli("report", str(target)), str(target))


def test_bad_line_names_file_and_line(tmp_path):
    run = make_run(tmp_path / "run")
    with open(run / "rejected.jsonl", "a") as f:
        f.write("{oops\n" + json.dumps({"id": "z", "instruction": "x", "reason": "too_short"}) + "\n")
    assert_user_error(run_cli("report", str(run)), "rejected.jsonl:14")


def test_matplotlib_missing_is_one_line(tmp_path):
    run = make_run(tmp_path / "run")
    # matplotlib is installed here; hide it in the child process to see the message users get without it
    code = ("import sys; sys.modules['matplotlib'] = None; from datakit.cli import main; "
            f"main(['report', {str(run)!r}])")
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert_user_error(proc, "matplotlib")


def test_reason_codes_map_to_steps():
    def row(reason, filters=(), **kw):
        return {"reason": reason, "filters": list(filters), "lineage": kw.pop("lineage", {}), **kw}

    failed = lambda f: [{"filter": f, "passed": False}]
    assert step_of(row("too_long")) == ("rules", "too_long")
    assert step_of(row("teacher_error")) == ("requests", "teacher_error")
    assert step_of(row("teacher_error", lineage={"instance": {}})) == ("instance", "teacher_error")
    assert step_of(row("copied_example", failed("copied_example"), lineage={"instance": {}})) == ("instance", "copied_example")
    assert step_of(row("brand_new", failed("exact_dup"))) == ("exact_dup", "other")
    assert step_of(row("brand_new", failed("length"))) == ("rules", "other")
    assert step_of(row("brand_new")) == ("rules", "other")


def test_text_heuristics():
    assert verb_object("Could you please explain the theory of relativity?") == ("explain", "theory")
    assert verb_object("Given a list of numbers, sort them in ascending order.") == ("sort", "them")
    assert verb_object("How do plants grow?") == ("(question)", None)
    assert verb_object("Give me a few tips for sleeping better") == ("give", "tips")
    assert zh_lead("请帮我翻译这句话") == "翻译"
    assert (n_tokens("two words"), n_tokens("写一首诗 about it"), n_tokens("")) == (2, 6, 0)
    assert (language("Write a poem"), language("写一首关于春天的诗"), language("Écris un poème très précis")) == ("en", "zh", "other")


def test_records_by_method(tmp_path):
    """Self-instruct, persona-steered, evolved and multi-turn records side by side: counts,
    reasons, lengths and turns per ``lineage.method``, in report.json and on the card."""
    import copy

    from test_report_fixture import RECORDS, REJECTED

    run = make_run(tmp_path / "run")
    recs = [copy.deepcopy(r) for r in RECORDS[:4]]
    recs[1]["lineage"]["persona"] = "p-017"
    recs[2]["lineage"].update(method="evolve", parent="g00001-00-00")
    recs[3]["lineage"].update(method="converse", parent="g00001-00-00", turns=3)
    evolved_out = dict(copy.deepcopy(RECORDS[0]), id="e1", instruction="Write a sonnet about two cats at dawn.",
                       output="one two three four five six")
    evolved_out["lineage"].update(method="evolve", parent="g00001-00-00")
    rej = copy.deepcopy(REJECTED[0])
    rej["lineage"].update(method="evolve")
    rej["reason"] = "evolve_not_harder"
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs + [evolved_out]))
    (run / "rejected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REJECTED + [rej]))
    rep = _report(run)
    by = {m["method"]: m for m in rep["generate"]["lineage"]["methods"]}
    assert set(by) == {"self-instruct", "self-instruct + persona", "evolve", "converse"}
    assert (by["evolve"]["accepted"], by["evolve"]["rejected"]) == (2, 1)
    assert by["evolve"]["top_rejections"] == [["evolve_not_harder", 1]]
    assert by["evolve"]["mean_output_tokens"] == (5 + 6) / 2  # "Red leaves fall slowly down", six words
    assert by["converse"]["mean_turns"] == 3 and by["self-instruct"]["mean_turns"] == 1
    assert by["self-instruct + persona"]["accepted"] == 1
    committed = [r for r in REJECTED if (r.get("lineage") or {}).get("round", 0) <= 2]  # state.json: round 2
    assert by["self-instruct"]["rejected"] == len(committed)
    html = (run / "card" / "card.html").read_text(encoding="utf-8")
    assert "self-instruct + persona" in html and "evolve_not_harder (1)" in html
