"""The trainer on exported conversations (`converse` -> `export` SFT): every assistant turn is a
training target, no user or system turn is, and (slow) a few real steps on the bundled model."""

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from datakit.errors import UserError  # noqa: E402
from datakit.export import ExportOptions, export  # noqa: E402
from datakit.train import data as D  # noqa: E402

from test_converse import conversed  # noqa: E402,F401  (the fixture: a run and its conversations)


@pytest.fixture(scope="module")
def exported(conversed, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("conv_sft") / "sft.jsonl"
    export(conversed / "converse", out, ExportOptions(system="Be helpful."))
    return out


def test_every_assistant_turn_is_trained(exported):
    from datakit.train.model import find_bundled_gguf, load_tokenizer, resolve_model

    try:
        find_bundled_gguf()
    except UserError as e:
        pytest.skip(str(e))
    tok, _ = load_tokenizer(resolve_model("bundled"))
    convs = D.read_sft_rows(exported)
    assert convs and all(sum(m["role"] == "assistant" for m in c) >= 2 for c in convs)
    for msgs in convs:
        ex = D.encode(tok, msgs)
        trained = "".join(tok.decode([i]) for i, t in zip(ex.ids, ex.trained) if t)
        untrained = "".join(tok.decode([i]) for i, t in zip(ex.ids, ex.trained) if not t)
        assert trained == "".join(m["content"] + "<|im_end|>\n" for m in msgs if m["role"] == "assistant")
        for m in msgs:
            if m["role"] != "assistant":
                assert m["content"] in untrained


@pytest.mark.slow
def test_sft_on_exported_conversations_with_the_bundled_model(exported, tmp_path, capsys):
    from datakit.cli import main
    from datakit.train.model import find_bundled_gguf

    gguf = find_bundled_gguf()
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(exported), "--model", str(gguf), "--out", str(out), "--max-steps", "3",
              "--eval-every", "3", "--max-len", "160", "--batch-size", "2", "--grad-accum", "1",
              "--samples", "0", "--eval-fraction", "0"])
    assert e.value.code == 0, capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 3 and s["first_loss"] > 0
