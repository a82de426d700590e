"""Training defaults that fit a CPU.

The trainer's defaults are sized for a GPU (2048-token rows, 4 micro-batches per step: ~8k
tokens a step). A CPU trains a 135M model at ~100 tokens/s, so one such step takes over a
minute and the progress bar stands still. When no CUDA GPU is visible, every setting below
that the user did not give (as a flag or in ``--config``) takes the CPU value instead, and the
command says which.
"""

from __future__ import annotations

from typing import Any

CPU_DEFAULTS: dict[str, Any] = {
    "batch_size": 1,                 # one packed row per micro-batch
    "grad_accum": 1,                 # one micro-batch per optimizer step: the bar moves every few seconds
    "max_len": 512,                  # tokens per packed row (datakit's exports fit; longer ones are counted)
    "gradient_checkpointing": False,  # memory is no issue for small models on a CPU; saves the recompute
    "samples": 1,                    # samples.md (0 when validating: validation.json holds the answers)
}


def calm_threads() -> None:
    """Make OpenMP threads sleep, not spin, while they wait (unless the user chose otherwise).

    On a small CPU that other processes also use (a CI runner, a laptop), torch's two spinning
    threads fight them for the cores and a training step or a generated token becomes 3-8x
    slower (measured on a busy 2-core machine: loading plus 6 steps of the README run 312 s
    spinning vs 110 s passive; 96 generated tokens 83 s vs 13 s). Read by the OpenMP runtime
    when torch loads: call it before that."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def user_settings(config_file: str | None, opts: dict[str, Any]) -> set[str]:
    """Names of the settings the user gave: flags that are not None, and keys of the config file."""
    from datakit.train.config import load_config_file

    given = {k for k, v in opts.items() if v is not None}
    if config_file:
        given |= set(load_config_file(config_file))
    return given


def apply_cpu_defaults(config_file: str | None, opts: dict[str, Any], *, on_cpu: bool | None = None,
                       validating: bool = False) -> tuple[dict[str, Any], str | None]:
    """``opts`` with the CPU defaults filled in where the user gave nothing, and one line saying
    which were used (None on a GPU, or when the user set them all). ``validating``: the run ends
    with a validation, whose base and tuned answers make the samples redundant."""
    if on_cpu is None:
        on_cpu = not cuda_available()
    if not on_cpu:
        return opts, None
    given = user_settings(config_file, opts)
    defaults = {**CPU_DEFAULTS, "samples": 0} if validating else CPU_DEFAULTS
    used = {k: v for k, v in defaults.items() if k not in given}
    if not used:
        return opts, None
    shown = " ".join(_flag(k, v) for k, v in used.items())
    return {**opts, **used}, f"no CUDA GPU: CPU defaults {shown} (set any of them to override)"


def _flag(name: str, value: Any) -> str:
    name = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} {value}"


def quiet_libraries() -> None:
    """datakit shows its own progress and notices: keep the libraries' deprecation warnings and
    loading bars (GGUF de-quantisation, weight loading) out of the terminal."""
    import logging
    import os
    import warnings

    # bitsandbytes (imported by peft) logs a warning at import on CPUs with AVX512-BF16 when the
    # optional `kernels` package is missing ("Failed to load CPU gemm_4bit_forward ..."): the
    # trainer never uses its CPU 4-bit path, so only its errors may reach the terminal
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader uses a bare tqdm
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*Could not find a config file.*")
    warnings.filterwarnings("ignore", message=".*None of the inputs have requires_grad.*")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
