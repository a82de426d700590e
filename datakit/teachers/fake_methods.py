"""Scripted answers for the methods of ``evolve`` and ``converse`` on the fake server:
``FakeOpenAIServer(responder=methods_responder)``. Deterministic (a function of the request
body), so a replayed request gets the same answer."""

from __future__ import annotations

import random
from typing import Any

from datakit.teachers.fake_server import _THINGS, _TOPICS, _body_rng, _wants_json, canned_task, default_responder
_CONSTRAINTS = ["Use at most 80 words.", "Give two examples from different countries.",
                "Explain each step of your reasoning.", "Add a short summary table in plain text.",
                "Avoid any technical jargon.", "End with one question for the reader.",
                "Compare it with one common alternative.", "Name one risk and how to reduce it."]


def _evolve_answer(body: dict[str, Any], text: str, rng: random.Random) -> str:
    """Answers to an evolve prompt, with every kind of failure the filters must catch."""
    parent = text.split("Original task:\n", 1)[1].strip()
    roll = rng.random()
    for limit, answer in ((0.06, "NO CHANGE"), (0.11, "I'm sorry, but I can't help with that."),
                          (0.19, f"#Rewritten Prompt#: {parent} Explain why."), (0.26, parent),
                          (0.30, "")):
        if roll < limit:
            return answer
    if "How to rewrite it:" in text:
        return f"{parent} {' '.join(rng.sample(_CONSTRAINTS, 2))}"
    return canned_task(rng)


def _converse_answer(text: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.2:
        return "[DONE]"
    if roll < 0.25:
        return "?"
    return (f"Thanks. Could you say more about {rng.choice(_TOPICS)} and add {rng.choice(_THINGS)}? "
            f"(follow-up #{rng.randrange(10**6)})")


def methods_responder(body: dict[str, Any]) -> str:
    """:func:`default_responder`, plus scripted answers to ``evolve`` prompts (good rewrites,
    NO CHANGE, refusals, leaks, copies of the parent, empty answers), to the ``converse`` user
    simulator (follow-ups, [DONE], bad turns) and to multi-turn assistant requests."""
    rng = _body_rng(body)
    msgs = body.get("messages") or []
    text = str(msgs[-1].get("content", "")) if msgs else ""
    if "Original task:\n" in text:
        return _evolve_answer(body, text, rng)
    if text.startswith("You play the user"):
        return _converse_answer(text, rng)
    if len(msgs) > 1 and not _wants_json(body):
        return (f"Here is more on that: {rng.choice(_TOPICS)} matters because of {rng.choice(_TOPICS)}. "
                f"(answer #{rng.randrange(10**6)})")
    return default_responder(body)
