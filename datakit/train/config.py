"""The training run's settings: one dataclass, filled from defaults, a ``--config`` file and flags.

A config file is TOML (``.toml``) or JSON (``.json``) whose keys are the field names below
(``lora_r = 8``, ``max_steps = 200`` ...), optionally under a ``[train]`` table. Flags given on
the command line win over the file. Every value is checked here so that a bad one is a
one-line :class:`~datakit.errors.UserError`, never a traceback from deep inside torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from datakit.errors import UserError

METHODS = ("sft", "dpo")


@dataclass
class TrainConfig:
    data: str = ""
    model: str = ""
    out: str = ""
    method: str = "sft"
    eval_data: str | None = None
    eval_fraction: float = 0.05
    eval_every: int = 50
    save_every: int | None = None  # defaults to eval_every
    max_steps: int | None = None
    epochs: float = 1.0
    lr: float = 2e-4
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # micro-batch: batch_size packed rows of max_len tokens, or as many DPO pairs / unpacked
    # examples as fit in batch_size x max_len tokens (batch_tokens 0: batch_size of them)
    batch_size: int = 1
    # tokens a micro-batch of DPO pairs or unpacked SFT examples may hold (chosen + rejected
    # count both); None: batch_size x max_len, the size of a packed SFT micro-batch; 0: count
    # batch_size examples or pairs instead of tokens
    batch_tokens: int | None = None
    grad_accum: int = 4
    max_len: int = 2048
    pack: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    load_4bit: bool = True
    # None: on, unless the memory plan (fit) finds that the step runs without it; true/false: kept
    gradient_checkpointing: bool | None = None
    optimizer: str = "auto"  # auto: paged 8-bit AdamW on CUDA, AdamW elsewhere
    kernels: str = "auto"  # auto: Liger's RMSNorm/RoPE/SwiGLU on CUDA when installed; liger; torch
    cuda_graphs: str = "auto"  # auto/on: replay each micro-batch shape's forward+backward as a CUDA graph; off
    # auto: on one CUDA GPU, run several of a step's micro-batches as one pass (and drop
    # checkpointing) when measured memory allows (datakit.train.fit); off: as configured
    fit: str = "auto"
    beta: float = 0.1
    sft_weight: float = 0.0
    seed: int = 42
    merge: bool = False
    samples: int = 4
    sample_tokens: int = 96
    resume: bool = True
    log_every: int = 1
    shard: bool = False  # FSDP across the processes (datakit.train.shard) instead of data parallel
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def micro_budget(self) -> int | None:
        """Token budget of one micro-batch of DPO pairs or unpacked SFT examples (None: count
        ``batch_size`` of them); packed SFT rows are ``batch_size`` rows of ``max_len``."""
        if self.batch_tokens == 0:
            return None
        return self.batch_tokens or self.batch_size * self.max_len

    def check(self) -> "TrainConfig":
        def bad(name: str, msg: str) -> UserError:
            return UserError(msg, field=name)

        if not self.data:
            raise bad("data", "no training data given (--data)")
        if not self.model:
            raise bad("model", "no model given (--model: a hub id, a folder or a .gguf file)")
        if not self.out:
            raise bad("out", "no output folder given (--out)")
        if self.method not in METHODS:
            raise bad("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("batch_size", "grad_accum", "lora_r", "lora_alpha", "eval_every", "log_every",
                     "sample_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(name, f"must be a whole number >= 1, got {v!r}")
        if self.batch_tokens is not None and (not isinstance(self.batch_tokens, int)
                                              or isinstance(self.batch_tokens, bool) or self.batch_tokens < 0):
            raise bad("batch_tokens", f"must be a whole number >= 0, got {self.batch_tokens!r}")
        if not isinstance(self.max_len, int) or self.max_len < 16:
            raise bad("max_len", f"must be a whole number >= 16, got {self.max_len!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise bad("max_steps", f"must be a whole number >= 1, got {self.max_steps!r}")
        if self.save_every is not None and (not isinstance(self.save_every, int) or self.save_every < 1):
            raise bad("save_every", f"must be a whole number >= 1, got {self.save_every!r}")
        if not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            raise bad("epochs", f"must be > 0, got {self.epochs!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise bad("lr", f"must be between 0 and 1, got {self.lr!r}")
        if not (0 <= self.warmup_ratio < 1):
            raise bad("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio!r}")
        if not (0 <= self.eval_fraction < 1):
            raise bad("eval_fraction", f"must be in [0, 1), got {self.eval_fraction!r}")
        if not (0 <= self.lora_dropout < 1):
            raise bad("lora_dropout", f"must be in [0, 1), got {self.lora_dropout!r}")
        if not (isinstance(self.beta, (int, float)) and self.beta > 0):
            raise bad("beta", f"must be > 0, got {self.beta!r}")
        if not (isinstance(self.sft_weight, (int, float)) and self.sft_weight >= 0):
            raise bad("sft_weight", f"must be >= 0, got {self.sft_weight!r}")
        if self.optimizer not in ("auto", "paged_adamw_8bit", "adamw"):
            raise bad("optimizer", f"must be auto, paged_adamw_8bit or adamw, got {self.optimizer!r}")
        if self.kernels not in ("auto", "liger", "torch"):
            raise bad("kernels", f"must be auto, liger or torch, got {self.kernels!r}")
        if self.cuda_graphs not in ("auto", "on", "off"):
            raise bad("cuda_graphs", f"must be auto, on or off, got {self.cuda_graphs!r}")
        if self.fit not in ("auto", "off"):
            raise bad("fit", f"must be auto or off, got {self.fit!r}")
        if self.gradient_checkpointing is not None and not isinstance(self.gradient_checkpointing, bool):
            raise bad("gradient_checkpointing", f"must be true or false, got {self.gradient_checkpointing!r}")
        if isinstance(self.target_modules, str) and self.target_modules != "all-linear":
            self.target_modules = [t.strip() for t in self.target_modules.split(",") if t.strip()]
        if not self.target_modules:
            raise bad("target_modules", "is empty")
        return self


_FIELD_NAMES = {f.name for f in fields(TrainConfig)} - {"extra"}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict of TrainConfig fields."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError("config file not found", path=str(path)) from None
    except OSError as e:
        raise UserError(f"cannot read config ({e.strerror})", path=str(path)) from None
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"not valid JSON ({getattr(e, 'msg', e)})", path=str(path)) from None
    else:
        import tomllib

        try:
            obj = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"not valid TOML ({e})", path=str(path)) from None
    if not isinstance(obj, dict):
        raise UserError("expected a table of settings", path=str(path))
    if isinstance(obj.get("train"), dict):
        obj = obj["train"]
    obj = {k.replace("-", "_"): v for k, v in obj.items()}
    unknown = sorted(set(obj) - _FIELD_NAMES)
    if unknown:
        raise UserError(f"unknown setting(s): {', '.join(unknown)}", path=str(path))
    return obj


def make_config(file: str | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the file's values, then the non-None overrides; checked."""
    values: dict[str, Any] = {}
    from_file: dict[str, Any] = load_config_file(file) if file else {}
    values.update(from_file)
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    unknown = sorted(set(values) - _FIELD_NAMES)
    if unknown:
        raise UserError(f"unknown setting(s): {', '.join(unknown)}")
    try:
        return TrainConfig(**values).check()
    except UserError as e:  # a bad value the file gave: name the file too
        if e.path is None and e.field in from_file and e.field not in given:
            raise UserError(str(e).removeprefix(f"{e.field}: "), path=str(file), field=e.field) from None
        raise
