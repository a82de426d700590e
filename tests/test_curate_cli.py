"""`datakit filter` and `datakit dedup` end to end, on real files, through the CLI entry point."""

import json

import pyarrow.parquet as pq
import pytest

from datakit.cli import main
from datakit.curate._synth import Synth


def run(*args):
    with pytest.raises(SystemExit) as e:
        main(list(map(str, args)))
    return e.value.code


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _read(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


@pytest.fixture
def corpus(tmp_path):
    texts, src = Synth(21).corpus(400, dup_rate=0.3, max_edits=1)
    rows = [{"id": f"r{i}", "instruction": t, "output": "o", "extra": {"k": i}} for i, t in enumerate(texts)]
    _write(tmp_path / "in.jsonl", rows)
    return tmp_path, rows, src


def test_dedup_keeps_fields_order_and_writes_removed(corpus, capsys):
    d, rows, src = corpus
    assert run("dedup", d / "in.jsonl", "--out", d / "out.jsonl") == 0
    out = _read(d / "out.jsonl")
    removed = _read(d / "out.jsonl.removed.jsonl")
    assert len(out) + len(removed) == len(rows) and removed
    ids = [r["id"] for r in out]
    assert ids == sorted(ids, key=lambda x: int(x[1:]))  # input order
    assert out[0] == rows[0]  # every field kept, unchanged
    kept = set(ids)
    for r in removed:
        assert r["reason"] == "near_duplicate" and r["duplicate_of"] in kept
    err = capsys.readouterr().err
    assert "clusters found" in err and "removed" in err


def test_filter_and_parquet_output(corpus):
    d, rows, _ = corpus
    assert run("filter", d / "in.jsonl", "--rouge-l", "0.7", "--out", d / "novel.parquet") == 0
    kept = pq.read_table(d / "novel.parquet").to_pylist()
    removed = _read(d / "novel.parquet.removed.jsonl")
    assert len(kept) + len(removed) == len(rows)
    assert {r["reason"] for r in removed} <= {"rouge_l", "too_short", "too_long", "blacklisted",
                                              "starts_with_punctuation", "non_printable", "repetitive"}
    assert any(r["reason"] == "rouge_l" and r["similarity"] > 0.7 for r in removed)


def test_decontamination_counts_per_file(corpus, capsys):
    d, rows, _ = corpus
    _write(d / "eval_a.jsonl", [{"question": rows[i]["instruction"]} for i in (5, 6, 7)])
    _write(d / "eval_b.jsonl", [{"question": "A completely unrelated benchmark question here"}])
    assert run("dedup", d / "in.jsonl", "--against", d / "eval_a.jsonl", d / "eval_b.jsonl",
               "--out", d / "decon.jsonl") == 0
    removed = [r for r in _read(d / "decon.jsonl.removed.jsonl") if r["reason"] == "contaminated"]
    assert {r["id"] for r in removed} >= {"r5", "r6", "r7"}
    assert all(r["matched_file"].endswith("eval_a.jsonl") for r in removed)


@pytest.mark.parametrize("content,needle", [
    (b'{"id": 1, "instruction": "ok then fine"}\nnot json\n', "in.jsonl:2: not valid JSON"),
    (b'{"id": 1, "prompt": "x"}\n', "in.jsonl:1: instruction: missing field"),
    (b'{"id": 1, "instruction": ["x"]}\n', "instruction: expected text"),
    (b"", "no records in input"),
])
def test_bad_input_one_line_exit_2_no_output(tmp_path, capsys, content, needle):
    (tmp_path / "in.jsonl").write_bytes(content)
    assert run("dedup", tmp_path / "in.jsonl", "--out", tmp_path / "o.jsonl") == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.removed.jsonl").exists()


def test_mixed_schemas_to_parquet_fail_cleanly(tmp_path, capsys):
    _write(tmp_path / "a.jsonl", [{"id": "a", "instruction": "write a poem about cats", "meta": 1}])
    _write(tmp_path / "b.jsonl", [{"id": "b", "instruction": "list three colours now", "meta": {"x": 1}}])
    assert run("filter", tmp_path / "a.jsonl", tmp_path / "b.jsonl", "--out", tmp_path / "o.parquet") == 2
    assert "mixed schemas" in capsys.readouterr().err
    assert list(tmp_path.glob("o.parquet*")) == []


def test_missing_file_and_folder_output(corpus, capsys):
    d, rows, _ = corpus
    assert run("dedup", d / "nope.jsonl", "--out", d / "x.jsonl") == 2
    assert "nope.jsonl: file not found" in capsys.readouterr().err
    assert run("dedup", d / "in.jsonl", "--out", str(d / "outdir") + "/") == 0
    assert (d / "outdir" / "in.jsonl").exists() and (d / "outdir" / "removed.jsonl").exists()


def test_dedup_names_a_denied_permission_not_mixed_schemas(corpus, capsys):
    """An output folder that cannot be written is reported as such (old main: 'mixed schemas')."""
    import os

    d, rows, src = corpus
    locked = d / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that ignores folder permissions (root without CAP_DAC_OVERRIDE off)")
        code = run("dedup", d / "in.jsonl", "--out", locked / "out.jsonl")
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    assert code == 2 and "Permission denied" in err and "mixed" not in err


def test_dedup_full_disk_is_reported_as_such(corpus, capsys, monkeypatch):
    """A full disk (ENOSPC) names itself. The disk cannot be filled here safely, so the write
    call raises the OSError a full disk gives (mocked: the only stand-in in this file)."""
    import errno

    import datakit.curate.dedup as dedup_mod

    def full(path, rows):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    d, rows, src = corpus
    monkeypatch.setattr(dedup_mod, "write_table", full)
    code = run("dedup", d / "in.jsonl", "--out", d / "out.jsonl")
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "mixed" not in err


def test_greedy_option_relies_on_clicks_private_parser_api(tmp_path):
    """`--against a b c` (a shell glob) needs click's private OptionParser._long_opt: pinned,
    and this test fails loudly if a click upgrade moves it."""
    import click
    from click.parser import _OptionParser

    from datakit.cli.curate_cmds import _Greedy

    assert isinstance(getattr(_OptionParser(), "_long_opt", None), dict), click.__version__

    @click.command()
    @click.option("--against", cls=_Greedy, multiple=True)
    @click.option("--out")
    def cmd(against, out):
        click.echo(f"{','.join(against)}|{out}")

    from click.testing import CliRunner

    res = CliRunner().invoke(cmd, ["--against", "a", "b", "c", "--out", "o"])
    assert res.output.strip() == "a,b,c|o", res.output
