"""Property-based fuzzing (hypothesis) of the readers that take outside data: seed files, record
files, judge answers and the export of records. Whatever the bytes, a reader returns a result
or raises UserError (one line, naming the file); it never raises anything else, and export
writes nothing when it refuses."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datakit.errors import UserError
from datakit.export import ExportOptions, export
from datakit.judge.parse import ASPECTS, parse_pairwise, parse_pointwise
from datakit.records import read_records
from datakit.seeds import load_seeds

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=3), max_leaves=8)
KEYS = ["id", "name", "instruction", "input", "output", "instances", "is_classification", "candidates", "judge",
        "status", "messages", "lineage"]
# rows that look like records or seeds, with every field of any type or absent
rows = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)
candidate = st.fixed_dictionaries({"id": st.text(max_size=4), "output": st.text(max_size=20) | values},
                                  optional={"judge": st.dictionaries(st.sampled_from(["status", "score"]), values)})
record_rows = st.fixed_dictionaries({"instruction": st.text(min_size=1, max_size=40)},
                                    optional={"id": st.text(max_size=6) | values, "output": st.text(max_size=30) | values,
                                              "input": st.text(max_size=10) | values,
                                              "candidates": st.lists(candidate, max_size=3) | values,
                                              "status": st.sampled_from(["accepted", "rejected"]) | values})


def _file(data: bytes) -> Path:
    d = Path(tempfile.mkdtemp(prefix="fuzz"))
    p = d / "in.jsonl"
    p.write_bytes(data)
    return p


def _lines(objs: list) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objs).encode()


def _reads_or_refuses(reader, p: Path) -> None:
    try:
        reader(p)
    except UserError as e:
        assert "\n" not in str(e) and str(p) in str(e)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_are_read_or_refused(data):
    p = _file(data)
    _reads_or_refuses(load_seeds, p)
    _reads_or_refuses(read_records, p)


@FUZZ
@given(st.lists(rows | values, min_size=1, max_size=5), st.sampled_from(["", "\r\n", "\n\n"]))
def test_json_rows_of_any_shape_are_read_or_refused(objs, sep):
    p = _file(_lines(objs).replace(b"\n", sep.encode() or b"\n"))
    _reads_or_refuses(load_seeds, p)
    _reads_or_refuses(read_records, p)


@FUZZ
@given(st.text(max_size=400) | st.builds(lambda d: json.dumps(d), st.dictionaries(st.sampled_from(
    [*ASPECTS, "score", "overall", "winner", "reason"]), values, max_size=6)))
def test_any_judge_answer_parses_to_a_bounded_verdict(text):
    v = parse_pointwise(text)
    assert v.status in ("ok", "partial", "unparsed")
    assert v.score is None or 0 <= v.score <= 10
    assert parse_pairwise(text) in (None, "A", "B", "tie")


@FUZZ
@given(st.lists(record_rows, min_size=1, max_size=6), st.sampled_from(["sft", "dpo"]),
       st.sampled_from(["trl", "llamafactory"]))
def test_export_of_any_records_writes_rows_or_refuses_writing_nothing(objs, fmt, style):
    p = _file(_lines(objs))
    out = p.parent / ("out" if style == "llamafactory" else "out.jsonl")
    try:
        res = export(p, out, ExportOptions(format=fmt, style=style))
    except UserError as e:
        assert "\n" not in str(e)
        assert not out.exists()
        return
    assert res.n_train >= 1 and out.exists()
