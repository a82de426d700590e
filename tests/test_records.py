"""Record files: torn-line tolerant reader, clear errors, atomic writes, Parquet round trip."""

import json

import pytest

from datakit.errors import UserError
from datakit.records import (JsonlAppender, Record, Verdict, atomic_write_json, read_jsonl, read_records,
                             read_table, truncate_jsonl, write_table)


def test_torn_last_line_is_skipped_but_bad_middle_line_is_an_error(tmp_path):
    p = tmp_path / "log.jsonl"
    with JsonlAppender(p) as log:
        log.write_batch([{"id": 1}, {"id": 2}])
    with open(p, "ab") as f:
        f.write(b'{"id": 3, "instr')  # what kill -9 leaves behind mid-write
    assert [r["id"] for r in read_jsonl(p)] == [1, 2]
    p.write_text('{"id": 1}\n{oops\n{"id": 3}\n')
    with pytest.raises(UserError, match=r"log.jsonl:2: not valid JSON"):
        list(read_jsonl(p))
    p.write_text('{"id": 1}\n[1, 2]\n')
    with pytest.raises(UserError, match=r":2: expected a JSON object"):
        list(read_jsonl(p))


def test_truncate_keeps_committed_rows_and_drops_torn_tail(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 3, "x"')
    assert truncate_jsonl(p, lambda r: r["step"] <= 2) == 1
    assert p.read_text() == '{"step":1}\n{"step":2}\n'


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"k": "值"})
    assert json.loads((tmp_path / "a.json").read_text()) == {"k": "值"}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_record_round_trip_keeps_unknown_fields():
    r = Record.from_dict({"id": "x", "instruction": "Do it well.", "source": "mine", "score": 3})
    r.add_verdict(Verdict("length", False, 2, "too_short"))
    d = r.to_dict()
    assert d["source"] == "mine" and d["score"] == 3
    assert d["status"] == "rejected" and d["reason"] == "too_short"
    assert Record.from_dict(d).to_dict() == d


def test_missing_id_is_made_from_content():
    a = Record.from_dict({"instruction": "Same"})
    b = Record.from_dict({"instruction": "Same"})
    assert a.id == b.id and a.id.startswith("r-")


def test_parquet_and_jsonl_tables(tmp_path):
    rows = [{"id": "a", "instruction": "one", "n": 1}, {"id": "b", "instruction": "two", "n": 2}]
    for name in ("t.jsonl", "t.parquet"):
        write_table(tmp_path / name, rows)
        assert read_table(tmp_path / name) == rows
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="bad.parquet: cannot read Parquet"):
        read_table(tmp_path / "bad.parquet")
    (tmp_path / "r.jsonl").write_text('{"id": "a", "instruction": 5}\n')
    with pytest.raises(UserError, match="r.jsonl:1: instruction:"):
        read_records(tmp_path / "r.jsonl")


def test_a_run_directory_yields_only_committed_records(tmp_path):
    from datakit.runs import RunDir

    run = RunDir(tmp_path)
    (tmp_path / "records.jsonl").write_text(
        '{"id": "a", "instruction": "one", "lineage": {"round": 1}}\n'
        '{"id": "b", "instruction": "two", "lineage": {"round": 2}}\n')
    run.commit({"round": 1})
    assert [r.id for r in read_records(tmp_path)] == ["a"]
    run.commit({"round": 2})
    assert [r.id for r in read_records(tmp_path)] == ["a", "b"]


def test_appender_cuts_a_torn_tail_before_writing(tmp_path):
    """kill -9 mid-write leaves a last line without its newline; the next writer must not glue
    its rows to it (on old main every later read failed with 'not valid JSON' at that line)."""
    from datakit.records import JsonlAppender, cut_torn_tail

    p = tmp_path / "log.jsonl"
    p.write_bytes(b'{"id": 1}\n{"id": 2}\n{"id": 3, "instr')
    with JsonlAppender(p) as app:
        app.write_batch([{"id": 4}, {"id": 5}])
    assert [r["id"] for r in read_jsonl(p, tolerate_torn_tail=False)] == [1, 2, 4, 5]
    assert cut_torn_tail(p) == 0  # a clean file is left alone
    p.write_bytes(b'{"id": ' + b"x" * 200_000)  # a torn first line longer than one read block
    assert cut_torn_tail(p) == 200_007 and p.read_bytes() == b""
