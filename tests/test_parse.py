"""Parsing messy teacher output: task lists and instance JSON."""

import json
from pathlib import Path

import pytest

from datakit.generate.parse import parse_instance, parse_json_object, parse_task_items, parse_task_list

CORPUS = Path(__file__).parent / "data" / "task_lists.jsonl"


def test_numbering_styles_and_chatter():
    text = """Sure! Here are some new tasks for you:

1. Write a limerick about a forgetful robot.
2) Explain why the sky looks blue at noon.
(3) Convert 5 miles to kilometres.
Task 4: Summarize the plot of a heist movie in two sentences.
**5.** Classify the tone of a tweet as angry or calm.
6 - Suggest three names for a bakery.

I hope these tasks help you build your dataset!"""
    assert parse_task_list(text) == [
        "Write a limerick about a forgetful robot.",
        "Explain why the sky looks blue at noon.",
        "Convert 5 miles to kilometres.",
        "Summarize the plot of a heist movie in two sentences.",
        "Classify the tone of a tweet as angry or calm.",
        "Suggest three names for a bakery.",
    ]


def test_chinese_lists():
    text = "好的，以下是新任务：\n1、写一首关于春天的五言绝句。\n2．把下面的句子翻译成英文。\n第3条：判断这句话的情感是正面还是负面。\n（4）用三句话解释什么是通货膨胀。\n一、列出五种常见的中药材。\n希望对你有帮助！"
    assert parse_task_list(text) == [
        "写一首关于春天的五言绝句。",
        "把下面的句子翻译成英文。",
        "判断这句话的情感是正面还是负面。",
        "用三句话解释什么是通货膨胀。",
        "列出五种常见的中药材。",
    ]


def test_labels_continuations_and_template_echo():
    text = ("9. Instruction: Write a haiku about tea.\n"
            "Input: none\nOutput: Steam curls...\n"
            "10. Rewrite the sentence below so that it\n   sounds more formal.\n"
            "11. \"Name the capital of Peru.\"")
    assert parse_task_list(text) == ["Write a haiku about tea.",
                                     "Rewrite the sentence below so that it sounds more formal.",
                                     "Name the capital of Peru."]


def test_truncated_answer_drops_the_cut_item():
    text = "1. Write a poem about rivers.\n2. Explain how a bicycle gear"
    assert parse_task_list(text, truncated=True) == ["Write a poem about rivers."]
    assert parse_task_list(text, truncated=False)[-1] == "Explain how a bicycle gear"


def test_bullets_only_when_nothing_is_numbered():
    assert parse_task_list("- Plan a picnic menu.\n- Describe a sunrise.") == ["Plan a picnic menu.",
                                                                               "Describe a sunrise."]
    # under a numbered item a bullet is that task's detail (example material), not a task
    assert parse_task_list("1. Plan a picnic\n- a stray bullet") == ["Plan a picnic"]


def test_empty_and_listless_answers():
    assert parse_task_list(None) == []
    assert parse_task_list("") == []
    assert parse_task_list("I cannot help with that.") == []
    assert parse_task_list("1.\n2.   \n") == []


def test_instance_json_variants():
    assert parse_instance('{"input": "2+2", "output": "4"}') == ("2+2", "4")
    assert parse_instance('Here you go:\n```json\n{"output": "positive", "input": "Great food!"}\n```') == \
        ("Great food!", "positive")
    assert parse_instance('blah {"input": "", "output": 42} trailing') == ("", "42")
    assert parse_instance('{"输入": "你好", "输出": "Hello"}') == ("你好", "Hello")
    assert parse_instance('{"input": "x", "output": ""}') is None
    assert parse_instance('{"input": "x"}') is None
    assert parse_instance("no json here") is None
    assert parse_instance('{"output": "ok", "input": null}') == ("", "ok")
    assert parse_json_object('[1, 2]') is None


def corpus():
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_corpus_covers_what_hosted_teachers_write():
    rows = corpus()
    assert len(rows) >= 60
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["lang"] for r in rows} == {"en", "zh", "mixed"}
    assert sum(r["truncated"] for r in rows) >= 4
    texts = "\n".join(r["text"] for r in rows)
    for form in ("### 9.", "## Task 9", "**Task 9:**", "**Creative Writing**:", "**Creative Writing** -",
                 "- **Category:**", "   - ", "Input:", "例如：", "```", "任务9：", "希望这些任务对你有帮助！"):
        assert form in texts, form


@pytest.mark.parametrize("row", corpus(), ids=lambda r: r["id"])
def test_corpus_every_task_verbatim_and_nothing_else(row):
    assert parse_task_list(row["text"], truncated=row["truncated"]) == row["instructions"]


# The two cases of issue 13, item 8, as the stand-in for a GPT-4-class teacher wrote them.
def test_bold_category_label_is_not_part_of_the_instruction():
    text = "Here are 8 new tasks:\n\n9. **Creative Writing**: Write a poem about the sea.\n10. **Math**: What is 7 x 8?"
    assert parse_task_list(text) == ["Write a poem about the sea.", "What is 7 x 8?"]


def test_markdown_heading_items_are_found():
    text = "### 9. Write a poem about the sea.\n### 10. Explain why the sky is blue.\n"
    assert parse_task_list(text) == ["Write a poem about the sea.", "Explain why the sky is blue."]


def test_example_material_is_returned_beside_the_instruction():
    text = ("9. Translate the sentence into French.\n   Input: \"Where is the library?\"\n"
            "10. Find the bug:\n   ```python\n   def add(a, b):\n       return a - b\n   ```\n"
            "11. **Planning**\n   - Plan a picnic for six people.\n   - Keep it vegetarian.\n12. Say hello.")
    items = parse_task_items(text)
    assert [(i.instruction, i.example) for i in items] == [
        ("Translate the sentence into French.", "\"Where is the library?\""),
        ("Find the bug:", "def add(a, b):\n    return a - b"),
        ("Plan a picnic for six people.", "- Keep it vegetarian."),
        ("Say hello.", "")]


def test_truncated_drops_the_last_item_in_every_layout():
    for text in ("### Task 9\nWrite a poem.\n\n### Task 10\nExplain tides", "9. **A**: Write a poem.\n10. **B**: Expl",
                 "- Write a poem.\n- Expl", "任务9：写一首诗。\n任务10：解释"):
        assert parse_task_list(text, truncated=True) == [parse_task_list(text)[0]]
