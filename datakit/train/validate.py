"""Did the data help? Base model vs tuned model on the run's held-out split.

:func:`validate` reads a finished train folder (``summary.json``), rebuilds its held-out split
exactly as the trainer made it (the ``--eval-data`` file, or the trainer's own
:func:`datakit.train.data.split_eval` over ``--data`` with the run's fraction and seed: rows
that were never trained on), and then

1. measures the eval loss (mean NLL per assistant token; for DPO runs, of the chosen reply) of
   the base model (adapter off) and of the tuned one (``best/``, else ``adapter/``);
2. lets both answer the same held-out prompts (greedy decoding, a new-token cap);
3. has a judge compare each pair in both orders (:mod:`datakit.train.pair_judge`) and counts
   win / tie / loss with a 95% interval (:mod:`datakit.train.winrate`);
4. writes ``validation.json`` into the train folder.

On a CPU it is a smoke run: fewer prompts (8) and shorter answers (96 tokens) by default.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from datakit.errors import UserError
from datakit.records import atomic_write_json

RESULT = "validation.json"
GPU_PROMPTS, CPU_PROMPTS = 32, 8
GPU_TOKENS, CPU_TOKENS = 384, 96

Event = Callable[[str, dict], None]


@dataclass
class ValidateOptions:
    val_prompts: int | None = None     # None: 32 on a GPU, 8 on a CPU
    max_new_tokens: int | None = None  # None: 384 on a GPU, 96 on a CPU
    judge: str | None = None           # a teacher name from the config; None: the 'judge' role / local
    judge_max_tokens: int = 256

    def check(self) -> "ValidateOptions":
        for v, flag in ((self.val_prompts, "--val-prompts"), (self.max_new_tokens, "--val-tokens")):
            if v is not None and v < 1:
                raise UserError(f"must be at least 1, got {v}", field=flag)
        return self


def _noop(kind: str, data: dict) -> None:
    pass


# --------------------------------------------------------------------------- the run and its split

def read_summary(train_dir: Path) -> dict[str, Any]:
    if not train_dir.is_dir():
        raise UserError("train folder not found", path=str(train_dir))
    path = train_dir / "summary.json"
    if not path.is_file():
        raise UserError("not a finished train run (no summary.json; run `datakit train` first)", path=str(train_dir))
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        summary["config"]["model"]
    except (ValueError, KeyError, TypeError):
        raise UserError("unreadable summary.json (no training config in it)", path=str(path)) from None
    return summary


def train_config(summary: dict[str, Any]):
    from datakit.train.config import TrainConfig

    known = set(TrainConfig.__dataclass_fields__)
    return TrainConfig(**{k: v for k, v in summary["config"].items() if k in known}).check()


def held_out_rows(tcfg, train_dir: Path) -> list:
    """The rows the run held out: never trained on (see the module docstring)."""
    from datakit.train import data as D

    for p in (tcfg.data, tcfg.eval_data):
        if p and not Path(p).exists():
            raise UserError("training data not found: validation rebuilds the held-out split from it "
                            "(run from the folder you trained in)", path=p)
    _check_same_data(tcfg, train_dir)
    reader = D.read_sft_rows if tcfg.method == "sft" else D.read_dpo_rows
    if tcfg.eval_data:
        return reader(tcfg.eval_data)
    return D.split_eval(reader(tcfg.data), tcfg.eval_fraction, tcfg.seed)[1]


def _check_same_data(tcfg, train_dir: Path) -> None:
    """Refuse when the data file changed since training: its split would no longer be the one
    held out then. The trainer's checkpoint records the data's hash (runs from before it did are
    taken as they are)."""
    from datakit.train import trainer

    state_file = train_dir / "checkpoint-last" / "state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    if "data_sha" not in state:  # a run from before the checkpoint kept it: nothing to compare
        return
    data_sha, eval_sha = trainer._file_sha(tcfg.data), trainer._file_sha(tcfg.eval_data)
    changed = [p for p, now, then in ((tcfg.data, data_sha, state["data_sha"][:len(data_sha)]),
                                      (tcfg.eval_data, eval_sha, state["data_sha"][len(data_sha):]))
               if now != then]
    if changed:
        raise UserError("the training data changed since this run was trained, so its held-out split cannot "
                        "be rebuilt; validate with the original file", path=changed[0])


def task_text(messages: list[dict]) -> str:
    """The prompt as the judge sees it: the user turn, or a role-labelled transcript."""
    turns = [m for m in messages if m["role"] != "system"]
    if len(turns) == 1 and len(messages) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def sizes(opts: ValidateOptions, on_cpu: bool, available: int, emit: Event) -> tuple[int, int]:
    """How many prompts and new tokens: the options, or defaults that fit the device."""
    n = opts.val_prompts if opts.val_prompts is not None else (CPU_PROMPTS if on_cpu else GPU_PROMPTS)
    tokens = opts.max_new_tokens or (CPU_TOKENS if on_cpu else GPU_TOKENS)
    if on_cpu and (opts.val_prompts is None or opts.max_new_tokens is None):
        emit("notice", {"message": f"no CUDA GPU: validation is a smoke run ({n} held-out prompts, answers "
                                   f"capped at {tokens} new tokens; --val-prompts / --val-tokens to change)"})
    if available < n:
        emit("notice", {"message": f"the held-out split has only {available} prompt(s) (asked for {n}); "
                                   f"--eval-fraction or --eval-data give more"})
    return min(n, available), tokens


# --------------------------------------------------------------------------- the models

def pick_adapter(train_dir: Path) -> tuple[Path, str]:
    best = train_dir / "best"
    if (best / "adapter_config.json").is_file():
        step = None
        if (best / "state.json").is_file():
            step = json.loads((best / "state.json").read_text()).get("step")
        return best, "best/" + (f" (step {step})" if step else "")
    if (train_dir / "adapter" / "adapter_config.json").is_file():
        return train_dir / "adapter", "adapter/ (final)"
    raise UserError("no adapter in the train folder (neither best/ nor adapter/)", path=str(train_dir))


def load_tuned(tcfg, summary: dict[str, Any], adapter_dir: Path):
    """Tokenizer, base model + adapter (peft), and the device, as the trainer loaded them."""
    from peft import PeftModel

    from datakit.train import model as M

    spec = M.resolve_model(tcfg.model)
    tok, _ = M.load_tokenizer(spec)
    device = M.pick_device()
    load_4bit = bool(summary.get("load_4bit")) and device.type == "cuda"
    base = M.load_model(spec, load_4bit=load_4bit, device=device, dtype=M.compute_dtype(device))
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    if not load_4bit:
        model.to(device)
    model.eval()
    return tok, model, device


def use_adapter(model, adapter_dir: Path) -> None:
    """Put the adapter saved in ``adapter_dir`` into a live peft model (the trainer's own, at the
    end of ``datakit train``: no second load of the base model)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(adapter_dir / "adapter_model.safetensors")))
    model.eval()


def _examples(tok, rows: list, tcfg) -> list:
    from datakit.train import data as D

    if tcfg.method == "sft":
        return D.encode_sft(tok, rows, tcfg.max_len)[0]
    return [p.chosen for p in D.encode_dpo(tok, rows, tcfg.max_len)[0]]


def eval_nll(model, tok, rows: list, tcfg, device) -> float | None:
    """Mean NLL per trained token over the rows, packed as the trainer packs them."""
    import torch

    from datakit.train import data as D
    from datakit.train.trainer import batch_tensors, forward_nll

    exs = _examples(tok, rows, tcfg)
    if not exs:
        return None
    groups = D.pack(exs, tcfg.max_len) if tcfg.pack else [[i] for i in range(len(exs))]
    total, count = 0.0, 0
    with torch.no_grad():
        for g in groups:
            nll = forward_nll(model, batch_tensors(D.make_batch([exs[i] for i in g]), device))
            total, count = total + float(nll.sum()), count + int(nll.numel())
    return round(total / count, 6) if count else None


def eval_losses(model, tok, rows: list, tcfg, device) -> dict[str, float | None]:
    with model.disable_adapter():
        base = eval_nll(model, tok, rows, tcfg, device)
    return {"base": base, "tuned": eval_nll(model, tok, rows, tcfg, device)}


def answer_both(model, tok, device, prompts: list[list[dict]], max_new: int, emit: Event,
                batch: int = 8) -> list[tuple[str, str]]:
    """(base answer, tuned answer) for each prompt; greedy, so a rerun gives the same texts.
    Base and tuned answer in the same batch (peft's mixed-adapter batches: half the steps); the
    progress counts generated tokens, so the bar moves on a CPU too."""
    from datakit.train.report import generate_answers

    out: list[tuple[str, str]] = []
    names = ["__base__", model.active_adapter]
    total = -(-len(prompts) // batch) * max_new
    done = [0]

    def step() -> None:
        done[0] += 1
        emit("progress", {"what": "answering (tokens)", "done": done[0], "total": total})

    for k, s in enumerate(range(0, len(prompts), batch)):
        chunk = prompts[s: s + batch]
        done[0] = k * max_new
        texts = generate_answers(tok, model, device, chunk + chunk, max_new,
                                 adapter_names=[n for n in names for _ in chunk], on_step=step)
        out += list(zip(texts[:len(chunk)], texts[len(chunk):]))
        emit("progress", {"what": "answering (tokens)", "done": (k + 1) * max_new, "total": total})
    return out


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- the whole check

def validate(train_dir: str | Path, dk_cfg: Any, opts: ValidateOptions | None = None,
             on_event: Event | None = None, *, loaded: tuple | None = None) -> dict[str, Any]:
    """Compare the tuned model with its base on the held-out split; writes ``validation.json``
    (schema in docs/TRAINING.md) and returns it. ``loaded``: (tokenizer, peft model, device) of
    the run that just trained, reused instead of loading the model again."""
    from datakit.train.pair_judge import judge_all
    from datakit.train.report import prompt_of

    train_dir, opts, emit = Path(train_dir), (opts or ValidateOptions()).check(), on_event or _noop
    summary = read_summary(train_dir)
    tcfg = train_config(summary)
    rows = held_out_rows(tcfg, train_dir)
    if not rows:
        raise UserError("the run has no held-out split to validate on (it was trained with --eval-fraction 0 "
                        "and no --eval-data)", path=str(train_dir))
    tok, model, device, adapter_label = _tuned_model(train_dir, tcfg, summary, loaded, emit)
    n, max_new = sizes(opts, device.type != "cuda", len(rows), emit)
    emit("phase", {"name": f"validation: eval loss of base and tuned on {len(rows)} held-out rows"})
    losses = eval_losses(model, tok, rows, tcfg, device)
    prompts = [prompt_of(r)[0] for r in rows[:n]]
    answers = answer_both(model, tok, device, prompts, max_new, emit)
    del model
    _free_memory()
    items = [{"prompt": task_text(p), "base": b, "tuned": t} for p, (b, t) in zip(prompts, answers)]
    progress = lambda done, total: emit("progress", {"what": "judging", "done": done, "total": total})  # noqa: E731
    judgements, who = judge_all(dk_cfg, items, train_dir, teacher=opts.judge, max_tokens=opts.judge_max_tokens,
                                on_progress=progress, on_status=lambda m: emit("phase", {"name": m}))
    result = assemble(who, losses, judgements, adapter=adapter_label, max_new_tokens=max_new,
                      held_out=len(rows), model=tcfg.model, method=tcfg.method,
                      eval_loss_of="chosen-reply tokens" if tcfg.method == "dpo" else "assistant tokens")
    atomic_write_json(train_dir / RESULT, result)
    return result


def _tuned_model(train_dir: Path, tcfg, summary: dict[str, Any], loaded: tuple | None, emit: Event):
    """(tokenizer, peft model with the best adapter, device, which adapter) for the check."""
    adapter_dir, label = pick_adapter(train_dir)
    if loaded is not None:
        tok, model, device = loaded
        use_adapter(model, adapter_dir)
        return tok, model, device, label
    emit("phase", {"name": f"validation: loading {tcfg.model} with {label}"})
    return (*load_tuned(tcfg, summary, adapter_dir), label)


def assemble(who: dict[str, Any], losses: dict[str, Any], judgements: list[dict[str, Any]], **extra: Any
             ) -> dict[str, Any]:
    """validation.json: the judge, eval losses, counts, interval, verdict and every judgement."""
    from datakit.train.winrate import tally

    t = tally(judgements)
    keep = ("prompt", "base", "tuned", "ab", "ba", "outcome", "orders_agree", "raw_ab", "raw_ba")
    return {"judge": {"teacher": who.get("teacher") or "", "model": who.get("model") or "",
                      "bundled": bool(who.get("bundled"))},
            "n_prompts": t["n_prompts"], "eval_loss": losses,
            **{k: t[k] for k in ("wins", "ties", "losses", "unparsed", "win_rate", "ci95", "verdict",
                                 "disagreed", "ci_method")},
            "judged_in_both_orders": True, **extra,
            "judgements": [{k: j[k] for k in keep if k in j} for j in judgements]}
