"""Config loading and validation: every problem names the file and the field."""

import pytest

from datakit.config import load_config
from datakit.errors import UserError


def write(tmp_path, text):
    p = tmp_path / "datakit.toml"
    p.write_text(text)
    return p


def test_full_config_loads(tmp_path):
    p = write(tmp_path, """
concurrency = 32
[[teachers]]
name = "ds"
base_url = "https://api.deepseek.com/v1"
model = "deepseek-chat"
api_key_env = "DEEPSEEK_API_KEY"
roles = ["generate"]
weight = 2
price_input = 0.27
[[teachers]]
name = "qwen"
base_url = "https://dashscope.aliyuncs.com/compatible-mode/v1"
model = "qwen-plus"
api_key_env = "DASHSCOPE_API_KEY"
roles = ["respond", "judge"]
[generate]
num = 500
""")
    cfg = load_config(p, {"generate.num": 7, "concurrency": None})
    assert cfg.concurrency == 32 and cfg.generate.num == 7
    assert [t.name for t in cfg.teachers_for("judge")] == ["qwen"]
    assert cfg.teachers[0].weight == 2.0
    assert "api_key" not in str(cfg.snapshot()).replace("api_key_env", "")


@pytest.mark.parametrize("text, fragment", [
    ("concurrency = 0", "datakit.toml: concurrency: must be at least 1"),
    ("concurrenc = 3", "datakit.toml: concurrenc: unknown setting"),
    ('[generate]\nnum = "ten"', "datakit.toml: generate.num: expected an integer"),
    ('[generate]\nrouge_threshold = 1.5', "generate.rouge_threshold: must be between 0 and 1"),
    ('[[teachers]]\nname="a"\nbase_url="ftp://x"\nmodel="m"', "teachers[0].base_url: must start with http"),
    ('[[teachers]]\nname="a"\nbase_url="http://x"\nmodel="m"\nweight=-1', "teachers[0].weight: must be a positive"),
    ('[[teachers]]\nname="a"\nbase_url="http://x"\nmodel="m"\nroles=["grade"]', "teachers[0].roles: unknown role"),
    ('[[teachers]]\nname="a"\nbase_url="http://x"', "teachers[0].model: required setting is missing"),
    ('[[teachers]]\nname="a"\nbase_url="http://x"\nmodel="m"\napi_key="sk-123"', "must not be written in config files"),
    ("concurrency = [", "not valid TOML"),
])
def test_bad_values_name_the_field(tmp_path, text, fragment):
    p = write(tmp_path, text)
    with pytest.raises(UserError) as e:
        load_config(p)
    assert fragment in str(e.value)
    assert "sk-123" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="nope.toml: config file not found"):
        load_config(tmp_path / "nope.toml")
