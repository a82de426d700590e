"""Parsing messy teacher output: task lists and instance JSON."""

from datakit.generate.parse import parse_instance, parse_json_object, parse_task_list


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
    assert parse_task_list("1. Plan a picnic\n- a stray bullet") == ["Plan a picnic - a stray bullet"]


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
