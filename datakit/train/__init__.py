"""The built-in QLoRA validation trainer: SFT and DPO on datakit's exports.

Library use::

    from datakit.train import TrainConfig, train
    summary = train(TrainConfig(data="sft.jsonl", model="Qwen/Qwen2.5-0.5B-Instruct", out="runs/t").check())

See docs/TRAINING.md.
"""

from datakit.train.config import TrainConfig, make_config
from datakit.train.trainer import train

__all__ = ["TrainConfig", "make_config", "train"]
