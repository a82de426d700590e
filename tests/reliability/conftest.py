"""Shared pieces of the reliability suite (see docs/RELIABILITY.md): the tests folder on the
import path for ``helpers``, teacher configs for the scripted fault server, and small run
builders. Every test here runs real components: the fault server on 127.0.0.1, real files,
real SQLite, real processes for kill -9."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# fake secrets: set for the whole suite, so that every run here also proves they leak nowhere
SECRETS = {"OPENAI_API_KEY": "sk-rel-0p3nai-SECRET-4f1c9e", "ANTHROPIC_API_KEY": "sk-ant-rel-SECRET-77aa",
           "DEEPSEEK_API_KEY": "sk-ds-rel-SECRET-b0b0", "HF_TOKEN": "hf_relSECRETtoken9"}


def teacher_toml(path: Path, base_url: str, *, timeout: float = 1.0, max_retries: int = 8,
                 concurrency: int = 4, key_env: str | None = None) -> Path:
    """A config with one teacher on ``base_url`` (short timeout: the hang fault costs that)."""
    key = f'api_key_env = "{key_env}"\n' if key_env else ""
    path.write_text(f'concurrency = {concurrency}\n[[teachers]]\nname = "s"\nbase_url = "{base_url}"\n'
                    f'model = "m"\ntimeout = {timeout}\nmax_retries = {max_retries}\n{key}', encoding="utf-8")
    return path


ASPECTS = ["clarity", "feasibility", "instruction_following", "helpfulness", "correctness", "harmlessness"]


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def rel_responder(body: dict) -> str:
    """Deterministic answers for every prompt datakit sends: task lists and instances for
    generate (the server's defaults), a candidate answer for respond, rubric scores and pairwise
    winners for judge (a function of the texts judged, so a rerun judges the same way)."""
    from datakit.teachers.fake_server import default_responder

    msg = body["messages"][-1]["content"]
    if "[RESPONSE A]" in msg:
        a = _between(msg, "[RESPONSE A]", "[END OF RESPONSE A]")
        b = _between(msg, "[RESPONSE B]", "[END OF RESPONSE B]")
        return json.dumps({"winner": "A" if len(a) >= len(b) else "B", "reason": "longer"})
    if "[RESPONSE]" in msg:
        resp = _between(msg, "[RESPONSE]", "[END OF RESPONSE]")
        s = 3 + len(resp) % 7
        return json.dumps({a: {"score": s, "rationale": "ok"} for a in ASPECTS})
    if msg.startswith("Explain topic number"):  # respond: the record's instruction (make_run)
        t = body.get("temperature", 0.7)
        return f"An answer at t={t} " + "with detail " * (int(t * 10) % 4 + 1) + f"to: {msg[-60:]}"
    return default_responder(body)


def make_run(path: Path, n: int) -> Path:
    """A run directory with ``n`` accepted records, as generate leaves it (for respond/judge)."""
    from datakit.records import write_table

    path.mkdir(parents=True, exist_ok=True)
    write_table(path / "records.jsonl", [{"id": f"r{i:03d}", "instruction": f"Explain topic number {i} simply.",
                                          "output": f"generated {i}", "lineage": {"teacher": "gen", "model": "g"}}
                                         for i in range(n)])
    return path


def without_cached(obj):
    """A log row without the ``cached`` flags (a rerun serves answers from the cache)."""
    if isinstance(obj, dict):
        return {k: without_cached(v) for k, v in obj.items() if k != "cached"}
    if isinstance(obj, list):
        return [without_cached(v) for v in obj]
    return obj
