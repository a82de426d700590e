"""``datakit train``: LoRA/QLoRA SFT or DPO on an export (the library is datakit.train)."""

from __future__ import annotations

import contextlib
import os

import click

from datakit.errors import UserError


@click.command("train")
@click.option("--data", "data", type=str, help="SFT or DPO export (.jsonl or .parquet).")
@click.option("--model", type=str, help="Hub id, local model folder, a .gguf file, or 'bundled' (SmolLM2-135M).")
@click.option("--out", type=str, help="Output folder (adapter, metrics.jsonl, loss.png, samples.md, summary.json).")
@click.option("--method", type=click.Choice(["sft", "dpo"]), default=None, help="Training objective [sft].")
@click.option("--config", "config_file", type=str, default=None, help="TOML or JSON file of settings; flags win.")
@click.option("--eval-data", type=str, default=None, help="Held-out file (default: --eval-fraction of --data).")
@click.option("--eval-fraction", type=float, default=None, help="Share of --data held out [0.05].")
@click.option("--eval-every", type=int, default=None, help="Evaluate every N optimizer steps [50].")
@click.option("--save-every", type=int, default=None, help="Checkpoint every N steps [= --eval-every].")
@click.option("--max-steps", type=int, default=None, help="Stop after N optimizer steps.")
@click.option("--epochs", type=float, default=None, help="Passes over the data [1].")
@click.option("--lr", type=float, default=None, help="Peak learning rate, cosine with warm-up [2e-4].")
@click.option("--warmup-ratio", type=float, default=None, help="Share of steps spent warming up [0.03].")
@click.option("--batch-size", type=int, default=None,
              help="Micro-batch: packed rows, or batch-size x max-len tokens of pairs/examples [1].")
@click.option("--batch-tokens", type=int, default=None,
              help="DPO pairs / unpacked examples: tokens per micro-batch [batch-size x max-len; 0: count "
                   "--batch-size items].")
@click.option("--grad-accum", type=int, default=None, help="Micro-batches per optimizer step [4].")
@click.option("--max-len", type=int, default=None, help="Tokens per row; longer examples are truncated [2048].")
@click.option("--pack/--no-pack", default=None, help="Pack several examples per row [pack].")
@click.option("--lora-r", type=int, default=None, help="LoRA rank [16].")
@click.option("--lora-alpha", type=int, default=None, help="LoRA alpha [32].")
@click.option("--lora-dropout", type=float, default=None, help="LoRA dropout [0.05].")
@click.option("--kernels", type=click.Choice(["auto", "liger", "torch"]), default=None,
              help="GPU kernels for RMSNorm/RoPE/SwiGLU: Liger's when installed (auto), insist (liger), "
                   "or PyTorch's (torch) [auto].")
@click.option("--cuda-graphs", type=click.Choice(["auto", "on", "off"]), default=None,
              help="Replay each micro-batch shape's forward and backward as a CUDA graph (GPU; auto: unless "
                   "--shard; on: insist) [auto].")
@click.option("--fit", type=click.Choice(["auto", "off"]), default=None,
              help="One CUDA GPU: run several of a step's micro-batches as one pass, and drop checkpointing, "
                   "when measured memory allows (same maths) [auto].")
@click.option("--target-modules", type=str, default=None, help="Comma-separated module names [all-linear].")
@click.option("--4bit/--no-4bit", "load_4bit", default=None, help="QLoRA 4-bit NF4 base (CUDA) [4bit].")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              help="Recompute activations in backward [on; on a GPU, off when --fit auto finds room].")
@click.option("--beta", type=float, default=None, help="DPO beta [0.1].")
@click.option("--sft-weight", type=float, default=None, help="DPO: weight of an SFT loss on the chosen reply [0].")
@click.option("--seed", type=int, default=None, help="Seed for data order and initialisation [42].")
@click.option("--merge", is_flag=True, default=None, help="Also write merged full weights to OUT/merged.")
@click.option("--samples", type=int, default=None, help="Held-out prompts answered before/after [4].")
@click.option("--sample-tokens", type=int, default=None, help="New tokens per sample answer [96].")
@click.option("--shard", is_flag=True, default=None,
              help="Split the model, LoRA and optimiser state across the processes (FSDP) instead of copying it.")
@click.option("--resume/--no-resume", default=None, help="Resume from OUT/checkpoint-last if present [resume].")
@click.option("--validate/--no-validate", "do_validate", default=True,
              help="At the end, judge base vs tuned on held-out prompts (validation.json) [validate].")
@click.option("--val-prompts", type=int, default=None, help="Held-out prompts answered and judged [32; 8 on a CPU].")
@click.option("--val-tokens", type=int, default=None, help="New tokens per validation answer [384; 96 on a CPU].")
@click.option("--judge", "judge_teacher", default=None,
              help="Judge teacher name from --judge-config (default: its 'judge' role, or the bundled teacher).")
@click.option("--judge-config", type=click.Path(dir_okay=False), default=None,
              help="datakit TOML config with the teachers (as --config of `datakit judge`).")
@click.option("--judge-base-url", default=None, help="One OpenAI-compatible judge: its base URL.")
@click.option("--judge-model", default=None, help="Model name for --judge-base-url.")
@click.option("--judge-api-key-env", default=None, help="Environment variable holding the judge's key.")
def train_cmd(config_file, do_validate, val_prompts, val_tokens, judge_teacher, judge_config, judge_base_url,
              judge_model, judge_api_key_env, **opts):
    """Fine-tune a model on an export with LoRA/QLoRA (SFT or DPO), then judge tuned vs base."""
    from datakit.train.config import make_config
    from datakit.runs import RunLock
    from datakit.train.cpu_defaults import apply_cpu_defaults, calm_threads, quiet_libraries
    from datakit.train.validate import ValidateOptions

    cfg0 = make_config(config_file, **opts)  # bad settings fail here, before anything heavy loads
    vopts = ValidateOptions(val_prompts=val_prompts, max_new_tokens=val_tokens, judge=judge_teacher).check()
    judge = _judge_config(judge_config, judge_base_url, judge_model, judge_api_key_env, judge_teacher) \
        if do_validate else None
    calm_threads()
    quiet_libraries()  # before torch loads: it imports tqdm, which reads TQDM_DISABLE once
    if judge is not None and not (cfg0.eval_data or cfg0.eval_fraction > 0):
        from datakit.cli.common import console

        console.print("[yellow]notice:[/] no held-out split (--eval-fraction 0, no --eval-data): no validation")
        judge = None
    if judge is not None and cfg0.shard:  # rank 0 alone cannot generate with a sharded model
        from datakit.cli.common import console

        console.print(f"[yellow]notice:[/] --shard: no validation in the run; afterwards: datakit validate {cfg0.out}")
        judge = None
    opts, cpu_line = apply_cpu_defaults(config_file, opts, validating=judge is not None)
    cfg = make_config(config_file, **opts)
    lock = RunLock(cfg.out, "datakit train") if os.environ.get("RANK", "0") == "0" else None
    with lock or contextlib.nullcontext():  # one writer per --out (rank 0 writes for all ranks)
        run = _run_with_progress(cfg, cpu_line)
        summary, validation, error = run.summary, None, None
        if summary and judge is not None:
            validation, error = _validate_after_training(cfg.out, judge, vopts, (run.tok, run.model, run.device))
    _print_summary(summary, validation)
    if error is not None:
        raise error


def _judge_config(path, base_url, model, api_key_env, teacher):
    """The datakit config the judge comes from, checked before training starts."""
    from datakit.cli.common import config_from_options
    from datakit.train.pair_judge import judge_name

    if bool(base_url) != bool(model):
        raise UserError("--judge-base-url and --judge-model go together",
                        field="--judge-model" if base_url else "--judge-base-url")
    if api_key_env and not base_url:
        raise UserError("--judge-api-key-env needs --judge-base-url and --judge-model", field="--judge-api-key-env")
    cfg = config_from_options(path, base_url, model, api_key_env, None)
    judge_name(cfg, teacher)
    return cfg


def _validate_after_training(out, judge, vopts, loaded):
    """Validation at the end of a run: a problem there must not hide the finished training, so
    it comes back as an error to raise after the summary, with the command that redoes it."""
    from datakit.cli.validate_cmds import run_validation

    try:
        return run_validation(out, judge, vopts, loaded=loaded), None
    except UserError as e:
        return None, UserError(f"validation: {e} (training is done; rerun it with `datakit validate {out}`)")


def _run_with_progress(cfg, first_notice=None):
    """Train with a progress bar; ``first_notice`` is shown with the run's first event (once the
    data has been read: a bad file still ends in its one error line alone)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from datakit.train.trainer import Run

    console = Console(stderr=True)
    state = {"task": None, "eval": None, "first": first_notice}
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=False)

    def on_event(kind, d):
        if state["first"]:
            progress.console.print(f"[yellow]notice:[/] {state['first']}")
            state["first"] = None
        if kind == "notice":
            progress.console.print(f"[yellow]notice:[/] {d['message']}")
        elif kind == "phase":
            progress.console.print(f"[dim]{d['name']}…[/]")
        elif kind == "start":
            progress.console.print(
                f"[dim]{d['device']}, {'4-bit NF4' if d['load_4bit'] else 'full-precision'} base, "
                f"{d['trainable']:,} trainable of {d['total_params']:,} parameters, "
                f"{d['train_items']} train / {d['eval_items']} eval items, {d['optimizer']}[/]")
            state["task"] = progress.add_task(cfg.method.upper(), total=d["total_steps"],
                                              completed=d["start_step"], info="")
            progress.start()
        elif kind == "eval":
            state["eval"] = d["eval_loss"]
        elif kind == "step" and state["task"] is not None:
            parts = [f"loss {d['loss']:.4f}"]
            if state["eval"] is not None:
                parts.append(f"eval {state['eval']:.4f}")
            if d.get("tokens_per_s"):
                parts.append(f"{d['tokens_per_s']:,.0f} tok/s")
            if d.get("peak_mem_gib") is not None:
                parts.append(f"{d['peak_mem_gib']:.1f} GiB")
            if "reward_accuracy" in d:
                parts.append(f"acc {d['reward_accuracy']:.2f}")
            progress.update(state["task"], completed=d["step"], info=" · ".join(parts))

    run = Run(cfg, on_event)
    try:
        run.summary = run.execute()  # the run (and its model) stays, for the validation
        return run
    finally:
        progress.stop()


def _print_summary(s, validation=None):
    if not s:  # not rank 0
        return
    from datakit.cli.validate_cmds import validation_rows

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"datakit train · {s['method']} · {s['out']}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")

    def f(v, fmt="{:.4f}"):
        return "—" if v is None else fmt.format(v)

    enc = s["train_encoding"]
    rows = [
        ("model", s["model"]),
        ("device", f"{s['device']} × {s['world_size']}" + (" · 4-bit NF4" if s["load_4bit"] else "")),
        ("steps", f"{s['steps']}" + (f" (resumed at {s['resumed_from']})" if s["resumed_from"] else "")),
        ("train / eval items", f"{s['train_items']} / {s['eval_items']}"),
        ("truncated", f"{enc['truncated']} of {enc['examples']} ({enc['lost_tokens']} tokens cut, "
                      f"{enc['dropped_empty']} dropped)"),
        ("train loss first → last", f"{f(s['first_loss'])} → {f(s['last_loss'])}"),
        ("eval loss final / best", f"{f(s['final_eval_loss'])} / {f(s['best_eval_loss'])}"),
        ("tokens/s", f(s["tokens_per_s"], "{:,.0f}")),
        ("peak GPU memory", f(s["peak_mem_gib"], "{:.2f} GiB")),
        ("trainable params", f"{s['trainable_params']:,}"),
        ("files", ", ".join([v for v in s["files"].values() if v] + (["validation.json"] if validation else []))),
        *validation_rows(validation),
    ]
    for k, v in rows:
        t.add_row(k, str(v))
    Console().print(t)


COMMANDS = [train_cmd]

__all__ = ["COMMANDS", "UserError"]
