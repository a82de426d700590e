"""Bad input, for every command and every input it reads: one line naming the file (and line and
field where that applies), exit 2, no traceback, no partial output. Inputs that are odd but
valid (CRLF, a BOM, mixed zh/en) are read like any other. The CLI runs in-process (``main``):
the same code path as the console script, without a process start per case."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from datakit.records import write_table

# a row every reader accepts: a record, and a seed task too (name, instances) for generate --seeds
GOOD = {"id": "a1", "name": "tides", "instruction": "Explain how tides work to a child.", "input": "",
        "output": "The moon pulls.", "is_classification": False,
        "instances": [{"input": "", "output": "The moon pulls."}]}
DEAD = "http://127.0.0.1:9/v1"   # nothing listens: a command that got past its input would say so


def cli(argv: list[str], capsys) -> tuple[int, str]:
    from datakit.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    return e.value.code, capsys.readouterr().err


def one_line(code: int, err: str, *fragments: str) -> str:
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, lines
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def rows_text(n: int = 3) -> str:
    return "".join(json.dumps(dict(GOOD, id=f"a{i}", instruction=f"{GOOD['instruction']} Case {i}.")) + "\n"
                   for i in range(n))


# each case: (name, how to make the input file at path, fragments the line must hold)
CASES = {
    "missing": (lambda p: None, ["not found"]),
    "empty": (lambda p: p.write_text(""), []),
    "directory": (lambda p: p.mkdir(), []),
    "malformed_line_3": (lambda p: p.write_text(rows_text(2) + '{"id": "x", "instruction": \n' + rows_text(1)),
                         [":3"]),
    "wrong_type": (lambda p: p.write_text(rows_text(1) + json.dumps(dict(GOOD, instruction=5)) + "\n"),
                   [":2", "instruction"]),
    "missing_field": (lambda p: p.write_text(rows_text(1) + json.dumps(
        {k: v for k, v in GOOD.items() if k != "instruction"}) + "\n"),
                      [":2", "instruction"]),
    "not_an_object": (lambda p: p.write_text(rows_text(1) + "[1, 2]\n"), [":2"]),
    "invalid_utf8": (lambda p: p.write_bytes(rows_text(1).encode() + b'{"instruction": "caf\xe9 au lait"}\n'),
                     [":2"]),
    "wrong_parquet_schema": (None, []),
}


def make_input(kind: str, folder: Path, suffix: str = ".jsonl") -> Path:
    if kind == "wrong_parquet_schema":
        p = folder / "in.parquet"
        write_table(p, [{"text": "no instruction here", "n": 1}])
        return p
    p = folder / f"in{suffix}"
    CASES[kind][0](p)
    return p


def run_dir_with(records: Path, folder: Path) -> Path:
    """A run directory whose records.jsonl is the bad input (respond/judge read it there)."""
    run = folder / "run"
    run.mkdir()
    if records.is_dir():
        (run / "records.jsonl").mkdir()
    elif records.exists():
        os.replace(records, run / "records.jsonl")
    return run


# command -> argv builder (input path, output folder) -> argv; out: what must not exist after
COMMANDS = {
    "generate": lambda i, o: ["generate", "--seeds", i, "--out", o / "run", "--base-url", DEAD, "--model", "m",
                              "--num", "2"],
    "dedup": lambda i, o: ["dedup", i, "-o", o / "out.jsonl"],
    "filter": lambda i, o: ["filter", i, "-o", o / "out.jsonl"],
    "export": lambda i, o: ["export", i, "--out", o / "out.jsonl"],
    "respond": lambda i, o: ["respond", i, "--base-url", DEAD, "--model", "m"],
    "judge": lambda i, o: ["judge", i, "--base-url", DEAD, "--model", "m"],
    "train": lambda i, o: ["train", "--data", i, "--model", "bundled", "--out", o / "t", "--no-validate"],
}
SKIP = {("generate", "wrong_parquet_schema"), ("respond", "wrong_parquet_schema"), ("judge", "wrong_parquet_schema"),
        # train reads conversations, not records: its field checks are in tests/test_train.py
        ("train", "wrong_type"), ("train", "missing_field")}


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, command, kind):
    if (command, kind) in SKIP:
        pytest.skip("not an input of this command (see SKIP)")
    src = tmp_path / "src"
    src.mkdir()
    inp = make_input(kind, src)
    if command in ("respond", "judge"):
        inp = run_dir_with(inp, src) if kind != "missing" else src / "nope"
    out = tmp_path / "out"
    out.mkdir()
    code, err = cli(COMMANDS[command](inp, out), capsys)
    frags = CASES[kind][1]
    if command in ("respond", "judge") and kind not in ("missing",):
        frags = [f if not f.startswith(":") else "records.jsonl" + f for f in frags]
    line = one_line(code, err, *frags)
    assert "127.0.0.1:9" not in line, "the input should be refused before any teacher is contacted"
    assert list(out.iterdir()) == [], "partial output"


def test_a_50_mb_single_line(tmp_path, capsys):
    """One record 50 MB long (no newline at all): read as one record, or refused in one line."""
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps(dict(GOOD, output="x" * (50 << 20))), encoding="utf-8")
    code, err = cli(["export", big, "--out", tmp_path / "o.jsonl"], capsys)
    assert code == 0, err
    assert (tmp_path / "o.jsonl").stat().st_size > 50 << 20
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"{" + b"a" * (50 << 20))
    one_line(*cli(["dedup", garbage, "-o", tmp_path / "d.jsonl"], capsys), "garbage.jsonl:1")
    assert not (tmp_path / "d.jsonl").exists()


@pytest.mark.parametrize("variant", ["crlf", "bom", "zh_en"])
@pytest.mark.parametrize("command", ["dedup", "filter", "export"])
def test_crlf_bom_and_mixed_languages_are_read_like_any_file(tmp_path, capsys, command, variant):
    rows = [dict(GOOD, id=f"a{i}", instruction=f"Explain tides, case {i}: 解释潮汐现象 {i} for a child.")
            for i in range(4)]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if variant == "crlf":
        data = text.replace("\n", "\r\n").encode()
    elif variant == "bom":
        data = b"\xef\xbb\xbf" + text.encode()
    else:
        data = text.encode()
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(data)
    code, err = cli(COMMANDS[command](inp, tmp_path), capsys)
    assert code == 0, err
    out = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert out and "潮汐" in json.dumps(out, ensure_ascii=False)


@pytest.mark.parametrize("argv, fragment", [
    (["export", "{run}", "--out", "{o}/x.jsonl", "--format", "sft", "--max-len", "10"], "--tokenizer"),
    (["export", "{run}", "--out", "{o}/x.jsonl", "--eval-fraction", "1.5"], "--eval-fraction"),
    (["dedup", "{run}/records.jsonl", "-o", "{o}/x.jsonl", "--threshold", "2"], "--threshold"),
    (["respond", "{run}", "--n", "0", "--base-url", DEAD, "--model", "m"], "--n"),
    (["generate", "--num", "0", "--out", "{o}/r", "--base-url", DEAD, "--model", "m"], "num"),
    (["judge", "{run}", "--config", "{o}/nope.toml"], "nope.toml"),
    (["generate", "--out", "{o}/r", "--model", "m"], "--base-url"),
])
def test_conflicting_or_invalid_options(tmp_path, capsys, argv, fragment):
    run = tmp_path / "run"
    run.mkdir()
    write_table(run / "records.jsonl", [GOOD])
    o = tmp_path / "o"
    o.mkdir()
    code, err = cli([a.format(run=run, o=o) for a in argv], capsys)
    one_line(code, err, fragment)
    assert list(o.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere; see test_rel_disk for read-only mounts")
@pytest.mark.parametrize("command", ["dedup", "filter", "export"])
def test_unwritable_output_path(tmp_path, capsys, command):
    inp = tmp_path / "in.jsonl"
    inp.write_text(rows_text(3))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        one_line(*cli(COMMANDS[command](inp, ro), capsys), str(ro))
    finally:
        ro.chmod(0o700)
