"""Persona-seeded generation (`generate` with `generate.personas`) on the scripted server, and
the bundled personas in seeds/personas/."""

import json
from collections import Counter

from datakit.generate.personas import load_personas, pick_persona
from datakit.teachers.fake_methods import methods_responder
from datakit.teachers.fake_server import FakeOpenAIServer
from helpers import REPO, assert_user_error, jsonl, run_cli


def test_bundled_personas_meet_the_brief():
    ps = load_personas(REPO / "seeds" / "personas")
    langs = Counter(p.lang for p in ps)
    assert len(ps) >= 190 and langs["zh"] >= 90 and langs["en"] >= 90
    assert len({p.id for p in ps}) == len(ps) and len({p.text for p in ps}) == len(ps)
    zh = [p for p in ps if p.lang == "zh"]
    assert all(any("\u4e00" <= c <= "\u9fff" for c in p.text) for p in zh)


def test_persona_choice_is_a_pure_function_of_seed_round_request():
    ps = load_personas(REPO / "seeds" / "personas")
    a = [pick_persona(ps, 0, r, j).id for r in range(1, 6) for j in range(4)]
    assert a == [pick_persona(ps, 0, r, j).id for r in range(1, 6) for j in range(4)]
    assert len(set(a)) > 10  # it rotates through the file
    assert a != [pick_persona(ps, 1, r, j).id for r in range(1, 6) for j in range(4)]


def _generate(srv, out, tmp_path, personas):
    cfg = tmp_path / f"{out.name}.toml"
    cfg.write_text("[generate]\n" + (f'personas = "{personas}"\n' if personas else ""))
    return run_cli("generate", "--num", "24", "--out", str(out), "--config", str(cfg),
                   "--base-url", srv.base_url, "--model", "fake")


def test_generate_with_personas_records_who_asked(tmp_path):
    seen = []

    def responder(body):
        seen.append(body["messages"][-1]["content"])
        return methods_responder(body)

    by_id = {p.id: p.text for p in load_personas(REPO / "seeds" / "personas")}
    with FakeOpenAIServer(responder=responder) as srv:
        p = _generate(srv, tmp_path / "pers", tmp_path, REPO / "seeds" / "personas")
        assert p.returncode == 0, p.stderr
        plain = _generate(srv, tmp_path / "plain", tmp_path, None)
        assert plain.returncode == 0, plain.stderr
    recs = jsonl(tmp_path / "pers" / "records.jsonl")
    assert len(recs) == 24
    task_prompts = [s for s in seen if "Write " in s and "new tasks" in s]
    for r in recs:
        lin = r["lineage"]
        assert lin["persona"] in by_id
        assert lin["prompt"]["name"] == "generate_tasks_persona" and len(lin["prompt"]["sha256"]) == 64
        assert any(by_id[lin["persona"]] in s for s in task_prompts)
    assert len({r["lineage"]["persona"] for r in recs}) >= 2
    # personas draw from their own RNG: the same demos as the run without personas
    plain_recs = jsonl(tmp_path / "plain" / "records.jsonl")
    assert "persona" not in plain_recs[0]["lineage"]
    demos = lambda rows: {(r["lineage"]["round"], r["lineage"]["request"]): r["lineage"]["demo_ids"] for r in rows}
    shared = demos(recs).keys() & demos(plain_recs).keys()
    assert shared and all(demos(recs)[k] == demos(plain_recs)[k] for k in shared)
    snap = json.loads((tmp_path / "pers" / "config.json").read_text())
    assert snap["config"]["generate"]["personas"].endswith("personas")


def test_bad_personas_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"id": "a", "persona": "a baker"}\n{"id": "b", "persona": ""}\n')
    with FakeOpenAIServer() as srv:
        proc = _generate(srv, tmp_path / "r", tmp_path, bad)
    assert_user_error(proc, "p.jsonl:2: persona: missing or empty text")
    bad.write_text('{"id": "a", "persona": "a baker"}\n{"id": "a", "persona": "a tailor"}\n')
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[generate]\npersonas = "{bad}"\n')
    assert_user_error(run_cli("generate", "--config", str(cfg), "--out", str(tmp_path / "r2")),
                      "duplicate persona id 'a'")
    assert not (tmp_path / "r2").exists()


def test_generate_takes_personas_from_the_command_line(tmp_path):
    """`datakit generate --personas FILE` (not only the config) conditions task requests."""
    from datakit.teachers.fake_server import FakeOpenAIServer
    from helpers import jsonl, run_cli

    with FakeOpenAIServer() as srv:
        proc = run_cli("generate", "--num", "6", "--out", str(tmp_path / "run"), "--base-url", srv.base_url,
                       "--model", "fake", "--personas", "seeds/personas")
    assert proc.returncode == 0, proc.stderr
    recs = jsonl(tmp_path / "run" / "records.jsonl")
    assert recs and all(r["lineage"].get("persona") for r in recs)
    assert all(r["lineage"]["prompt"]["name"] == "generate_tasks_persona" for r in recs)
