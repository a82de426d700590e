"""Human verdicts (RUN/reviews.jsonl): folding, validation, the writer lock, and how filter,
export and the data-card counts honour them. Real files, the real CLI in a subprocess."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from datakit.errors import UserError
from datakit.records import read_records
from datakit.reviews import (REVIEWS, append_review, apply_reviews, fold, load_reviews, review_summary,
                             validate)
from datakit.runs import RunLock
from helpers import assert_user_error, jsonl, run_cli
from test_view_fixture import make_run


def _verdicts(run, *rows):
    for r in rows:
        append_review(run, dict(r, reviewer="t"))


def test_fold_last_status_wins_and_edits_accumulate():
    rows = [validate(r) for r in (
        {"record_id": "a", "action": "reject", "reason": "bad"},
        {"record_id": "a", "action": "edit", "field": "output", "new": "fixed"},
        {"record_id": "a", "action": "edit", "field": "output", "new": "fixed again"},
        {"record_id": "b", "action": "accept"},
        {"record_id": "b", "action": "reject", "reason": "on second look"},
    )]
    st = fold(rows)
    assert st["a"].status == "accepted" and st["a"].edits["output"]["new"] == "fixed again" and st["a"].n == 3
    assert st["b"].status == "rejected" and st["b"].reason == "on second look"


@pytest.mark.parametrize("row, what", [
    ({"record_id": "a", "action": "delete"}, "action"),
    ({"action": "accept"}, "record_id"),
    ({"record_id": "a", "action": "edit", "field": "lineage", "new": "x"}, "field"),
    ({"record_id": "a", "action": "edit", "field": "output", "new": "   "}, "non-empty"),
    ({"record_id": "a", "action": "edit", "field": "output", "new": "x" * 40_000}, "longer than"),
    ({"record_id": "a", "action": "choose", "chosen": "c1", "rejected": "c1"}, "different"),
    ({"record_id": "a", "action": "reject", "reason": "bad\x1b[31m"}, "control"),
])
def test_invalid_verdicts_are_refused(tmp_path, row, what):
    with pytest.raises(ValueError, match=what):
        append_review(tmp_path, row)
    assert not (tmp_path / REVIEWS).exists()


def test_a_bad_line_names_file_and_line(tmp_path):
    (tmp_path / REVIEWS).write_text('{"record_id": "a", "action": "accept"}\n{"record_id": "a", "action": "zap"}\n')
    with pytest.raises(UserError, match=r"reviews.jsonl:2: 'action'"):
        load_reviews(tmp_path)


def test_writes_wait_for_the_run_lock_of_a_pipeline_stage(tmp_path):
    make_run(tmp_path)
    with RunLock(tmp_path, "generate"):
        with pytest.raises(UserError, match="in use by generate.*verdicts can be written when it has finished"):
            append_review(tmp_path, {"record_id": "r-cats", "action": "accept"}, wait_s=0.2)
    append_review(tmp_path, {"record_id": "r-cats", "action": "accept"})
    assert [r["action"] for r in jsonl(tmp_path / REVIEWS)] == ["accept"]


def _writer(run: str, who: str, n: int) -> None:
    for i in range(n):
        append_review(run, {"record_id": f"{who}-{i}", "action": "reject", "reason": "x" * 300, "reviewer": who})


def test_two_writers_lose_no_verdict(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 60)) for w in ("ana", "bo")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = jsonl(tmp_path / REVIEWS)
    assert len(rows) == 120 and len({r["record_id"] for r in rows}) == 120


def test_a_torn_tail_is_cut_before_the_next_verdict(tmp_path):
    (tmp_path / REVIEWS).write_text('{"record_id": "a", "action": "accept"}\n{"record_id": "b", "act')
    append_review(tmp_path, {"record_id": "c", "action": "accept"})
    assert [r["record_id"] for r in jsonl(tmp_path / REVIEWS)] == ["a", "c"]


def test_apply_keeps_both_texts_in_lineage(tmp_path):
    run = make_run(tmp_path / "run")
    _verdicts(run, {"record_id": "r-tea", "action": "edit", "field": "output", "new": "Steep at 80C."},
              {"record_id": "r-cats", "action": "reject", "reason": "dull"})
    recs = {r.id: r for r in apply_reviews(read_records(run), load_reviews(run))}
    assert "r-cats" not in recs
    tea = recs["r-tea"]
    assert tea.output == "Steep at 80C."
    edit = tea.lineage["human_edits"][0]
    assert edit["old"] == "Heat water to 80C and steep for two minutes." and edit["new"] == "Steep at 80C."
    again = apply_reviews([tea], load_reviews(run))[0]   # a curated copy reviewed again: one entry
    assert len(again.lineage["human_edits"]) == 1 and again.lineage["human_edits"][0]["old"] == edit["old"]


def test_export_honours_rejections_edits_and_choices(tmp_path):
    run = make_run(tmp_path / "run")
    _verdicts(run,
              {"record_id": "r-cats", "action": "reject", "reason": "dull"},
              {"record_id": "r-tea", "action": "edit", "field": "candidate", "candidate": "deepseek#0",
               "new": "Water at 80C, two minutes, no longer."},
              {"record_id": "r-spring", "action": "choose", "chosen": "local#0", "rejected": "local#1"},
              {"record_id": "r-sky", "action": "accept"})
    assert run_cli("export", str(run), "--format", "dpo", "--out", str(tmp_path / "dpo.jsonl")).returncode == 0
    dpo = {r["id"]: r for r in jsonl(tmp_path / "dpo.jsonl")}
    # cats: the judge's pair, removed by the person; spring: the judge tied, the person chose
    assert set(dpo) == {"r-tea", "r-spring"}
    assert dpo["r-tea"]["chosen"][0]["content"] == "Water at 80C, two minutes, no longer."
    assert dpo["r-spring"]["basis"] == "human" and dpo["r-spring"]["chosen_id"] == "local#0"
    assert run_cli("export", str(run), "--out", str(tmp_path / "sft.jsonl")).returncode == 0
    assert "r-cats" not in {r["id"] for r in jsonl(tmp_path / "sft.jsonl")}
    proc = run_cli("export", str(run), "--reviewed-only", "--out", str(tmp_path / "mine.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["id"] for r in jsonl(tmp_path / "mine.jsonl")) == ["r-sky", "r-spring", "r-tea"]


def test_reviewed_only_without_reviews_is_one_line(tmp_path):
    run = make_run(tmp_path / "run")
    assert_user_error(run_cli("export", str(run), "--reviewed-only", "--out", str(tmp_path / "o.jsonl")),
                      "--reviewed-only", "reviews.jsonl")


def test_filter_and_dedup_honour_reviews_of_a_file_in_the_run(tmp_path):
    run = make_run(tmp_path / "run")
    _verdicts(run, {"record_id": "r-sum", "action": "reject"},
              {"record_id": "r-tea", "action": "edit", "field": "instruction", "new": "Explain how to brew oolong tea."})
    out = tmp_path / "kept.jsonl"
    proc = run_cli("filter", str(run / "curated" / "clean.jsonl"), "--out", str(out), "--no-rules")
    assert proc.returncode == 0, proc.stderr
    kept = {r["id"]: r for r in jsonl(out)}
    assert "r-sum" not in kept and kept["r-tea"]["instruction"] == "Explain how to brew oolong tea."
    assert kept["r-tea"]["review"]["edited"] == ["instruction"]
    stage = jsonl(run / "stages.jsonl")[-1]
    assert stage["counts"]["reviews"] == {"human_rejected": 1, "human_edited": 1}
    proc = run_cli("dedup", str(run), "--out", str(tmp_path / "d.jsonl"))
    assert proc.returncode == 0 and "r-sum" not in {r["id"] for r in jsonl(tmp_path / "d.jsonl")}


def test_review_summary_counts_overruled_judge(tmp_path):
    run = make_run(tmp_path / "run")
    _verdicts(run,
              {"record_id": "r-cats", "action": "reject"},                     # judge kept a pair: overruled
              {"record_id": "r-tea", "action": "choose", "chosen": "deepseek#0", "rejected": "local#0"},  # agrees
              {"record_id": "r-spring", "action": "choose", "chosen": "local#1", "rejected": "local#0"},  # tied
              {"record_id": "r-sky", "action": "edit", "field": "output", "new": "Rayleigh."})
    s = review_summary(run)
    assert s == {"reviewed": 4, "accepted": 3, "rejected": 1, "edited": 1, "chose_pair": 2,
                 "overruled_judge": 2, "reviewers": ["t"]}
    assert os.path.getsize(run / REVIEWS) > 0 and all(json.loads(l) for l in (run / REVIEWS).read_text().splitlines())


def test_the_data_card_counts_reviews(tmp_path):
    run = make_run(tmp_path / "run")
    _verdicts(run, {"record_id": "r-cats", "action": "reject"},
              {"record_id": "r-spring", "action": "choose", "chosen": "local#1", "rejected": "local#0"})
    proc = run_cli("report", str(run))
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((run / "card" / "report.json").read_text())
    assert rep["reviews"]["reviewed"] == 2 and rep["reviews"]["overruled_judge"] == 2
    md = (run / "card" / "card.md").read_text()
    assert "Human review" in md and "overruled the judge" in md
