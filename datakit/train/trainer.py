"""The training loop: SFT and DPO with LoRA/QLoRA, evaluation, best checkpoint, resume.

Library entry point: :func:`train` (a :class:`~datakit.train.config.TrainConfig` in, the
summary dict out). ``on_event(kind, data)`` receives ``start``, ``step``, ``eval``, ``phase`` and
``notice`` events for a progress display; the library itself prints nothing.

Several GPUs: started by ``torchrun``/``accelerate launch`` (``WORLD_SIZE`` > 1), every process
loads the model on its own GPU, takes every ``world``-th micro-batch of the same fixed schedule,
and the LoRA gradients are summed with one all-reduce per optimiser step (data parallel). Only
rank 0 writes files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from datakit.errors import UserError
from datakit.records import JsonlAppender, atomic_write_json, truncate_jsonl
from datakit.train import data as D
from datakit.train.config import TrainConfig

Event = Callable[[str, dict], None]


def _noop(kind: str, data: dict) -> None:
    pass


# --------------------------------------------------------------------------- tensors

def batch_tensors(batch: D.Batch, device) -> dict[str, Any]:
    import torch

    ids = torch.tensor(batch.input_ids, dtype=torch.long, device=device)
    tgt = torch.tensor(batch.targets, dtype=torch.long, device=device)
    sel = (tgt != D.IGNORE).nonzero().squeeze(1)
    return {
        "input_ids": ids[None],
        "position_ids": torch.tensor(batch.position_ids, dtype=torch.long, device=device)[None],
        "cu": torch.tensor(batch.cu_seqlens, dtype=torch.int32, device=device),
        "max_len": max(b - a for a, b in zip(batch.cu_seqlens, batch.cu_seqlens[1:])),
        "sel": sel,
        "targets": tgt[sel],
        "seq_of_target": torch.tensor(batch.seq_index, dtype=torch.long, device=device)[sel],
        "n_seqs": len(batch.cu_seqlens) - 1,
    }


def forward_nll(model, t: dict[str, Any], *, autocast_dtype=None):
    """Per-target negative log-likelihoods (float32) of one flat batch."""
    import torch

    from datakit.train.losses import token_nll
    from datakit.train.model import decoder_and_head

    decoder, head = decoder_and_head(model)
    dev = t["input_ids"].device
    ctx = torch.autocast(dev.type, dtype=autocast_dtype) if autocast_dtype is not None else _nullctx()
    with ctx:
        out = decoder(input_ids=t["input_ids"], position_ids=t["position_ids"], use_cache=False,
                      cu_seq_lens_q=t["cu"], cu_seq_lens_k=t["cu"], max_length_q=t["max_len"],
                      max_length_k=t["max_len"])
        hidden = out.last_hidden_state[0].index_select(0, t["sel"])
    w = head.weight
    hidden = hidden.to(w.dtype)
    return token_nll(hidden, w, t["targets"], bias=getattr(head, "bias", None))


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def seq_logps(model, t, n_seqs: int, autocast_dtype=None):
    """Summed log-probabilities of each sequence's labelled tokens, and their counts."""
    import torch

    nll = forward_nll(model, t, autocast_dtype=autocast_dtype)
    sums = torch.zeros(n_seqs, dtype=torch.float32, device=nll.device).index_add(0, t["seq_of_target"], -nll)
    counts = torch.zeros(n_seqs, dtype=torch.float32, device=nll.device).index_add(
        0, t["seq_of_target"], torch.ones_like(nll))
    return sums, counts


# --------------------------------------------------------------------------- run state

def _fingerprint(cfg: TrainConfig, data_sha: str) -> str:
    keep = {k: v for k, v in cfg.to_dict().items()
            if k not in ("out", "resume", "eval_every", "save_every", "log_every", "samples",
                         "sample_tokens", "merge", "max_steps", "extra")}
    keep["data_sha"] = data_sha
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_sha(path: str | None) -> str:
    if not path:
        return ""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written folder into place (the old one is removed only after)."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def make_optimizer(params, cfg: TrainConfig, device, notice: Callable[[str], None]):
    import torch

    kind = cfg.optimizer
    if kind == "auto":
        kind = "paged_adamw_8bit" if device.type == "cuda" else "adamw"
    if kind == "paged_adamw_8bit":
        if device.type != "cuda":
            notice("paged 8-bit AdamW needs a CUDA GPU: using AdamW")
        else:
            import bitsandbytes as bnb

            return bnb.optim.PagedAdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay), kind
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay), "adamw"


# --------------------------------------------------------------------------- the run

class Run:
    """One training run; :meth:`execute` does everything :func:`train` promises."""

    def __init__(self, cfg: TrainConfig, on_event: Event | None = None):
        self.cfg = cfg.check()
        self.out = Path(cfg.out)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.emit = (on_event or _noop) if self.rank == 0 else _noop
        self.notices: list[str] = []

    def notice(self, msg: str) -> None:
        self.notices.append(msg)
        if self.rank == 0:
            self.emit("notice", {"message": msg})

    # ---- data

    def _read(self):
        cfg = self.cfg
        reader = D.read_sft_rows if cfg.method == "sft" else D.read_dpo_rows
        rows = reader(cfg.data)
        if cfg.eval_data:
            train_rows, eval_rows = rows, reader(cfg.eval_data)
        else:
            train_rows, eval_rows = D.split_eval(rows, cfg.eval_fraction, cfg.seed)
        return train_rows, eval_rows

    def _encode(self, tok, rows):
        cfg = self.cfg
        if cfg.method == "sft":
            return D.encode_sft(tok, rows, cfg.max_len)
        return D.encode_dpo(tok, rows, cfg.max_len)

    def _micro_batches(self, n_items: int, epochs: float):
        cfg = self.cfg
        if cfg.method == "sft":
            return D.sft_schedule(self.train_ex, max_len=cfg.max_len, batch_size=cfg.batch_size,
                                  pack_rows=cfg.pack, epochs=epochs, seed=cfg.seed)
        return D.dpo_schedule(n_items, batch_size=cfg.batch_size, epochs=epochs, seed=cfg.seed)

    def _seqs(self, micro: list[int], items) -> list[D.Example]:
        if self.cfg.method == "sft":
            return [items[i] for i in micro]
        out = []
        for i in micro:
            out.extend([items[i].chosen, items[i].rejected])
        return out

    def _targets_in(self, micro: list[int], items) -> int:
        return sum(sum(ex.trained[1:]) for ex in self._seqs(micro, items))

    # ---- model

    def _setup_model(self):
        import torch

        from datakit.train import model as M

        cfg = self.cfg
        if self.world > 1 and not torch.distributed.is_initialized():
            if not torch.cuda.is_available():
                raise UserError("several processes need CUDA GPUs (run one process on a CPU)")
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            torch.distributed.init_process_group("nccl")
        self.device = M.pick_device()
        self.dtype = M.compute_dtype(self.device)
        # on CUDA the adapters are stored in the compute dtype (float32 masters in the optimiser),
        # so nothing needs autocast; on the CPU everything is float32
        self.autocast = None
        lora_dtype = self.dtype if self.device.type == "cuda" else None
        load_4bit = cfg.load_4bit
        if load_4bit and self.device.type != "cuda":
            self.notice("no CUDA GPU: 4-bit loading needs one here, so this run is plain LoRA in float32")
            load_4bit = False
        self.load_4bit = load_4bit
        self.emit("phase", {"name": f"loading {self.spec.label}"})
        model = M.load_model(self.spec, load_4bit=load_4bit, device=self.device, dtype=self.dtype)
        self.model = M.add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                                target_modules=cfg.target_modules,
                                gradient_checkpointing=cfg.gradient_checkpointing, lora_dtype=lora_dtype,
                                reentrant=True)
        self.trainable, self.total_params = M.count_params(self.model)

    # ---- steps

    def _sft_loss(self, micro, items, denom):
        t = batch_tensors(D.make_batch(self._seqs(micro, items)), self.device)
        nll = forward_nll(self.model, t, autocast_dtype=self.autocast)
        return nll.sum() / denom, {"nll_sum": float(nll.detach().sum()), "n": int(nll.numel()),
                                   "tokens": int(t["input_ids"].shape[1])}

    def _dpo_terms(self, micro, items):
        import torch

        seqs = self._seqs(micro, items)
        t = batch_tensors(D.make_batch(seqs), self.device)
        n = len(seqs)
        logp, counts = seq_logps(self.model, t, n, self.autocast)
        with torch.no_grad(), self.model.disable_adapter():
            ref, _ = seq_logps(self.model, t, n, self.autocast)
        from datakit.train.losses import dpo_loss

        losses, rewards = dpo_loss(logp[0::2], logp[1::2], ref[0::2], ref[1::2], self.cfg.beta)
        sft = -logp[0::2] / counts[0::2].clamp(min=1)
        return losses, sft, rewards, int(t["input_ids"].shape[1])

    def _dpo_loss(self, micro, items, denom):
        losses, sft, rewards, tokens = self._dpo_terms(micro, items)
        total = losses + self.cfg.sft_weight * sft if self.cfg.sft_weight else losses
        margin = rewards["chosen"] - rewards["rejected"]
        return total.sum() / denom, {
            "nll_sum": float(total.detach().sum()), "n": int(losses.numel()), "tokens": tokens,
            "dpo_sum": float(losses.detach().sum()),
            "chosen_sum": float(rewards["chosen"].sum()), "rejected_sum": float(rewards["rejected"].sum()),
            "margin_sum": float(margin.sum()), "acc_sum": float((margin > 0).float().sum())}

    def evaluate(self) -> dict[str, float] | None:
        import torch

        if not self.eval_items:
            return None
        self.model.eval()
        totals: dict[str, float] = {}
        micro = (self._micro_batches_eval())
        with torch.no_grad():
            for k, mb in enumerate(micro):
                if k % self.world != self.rank:
                    continue
                _, info = (self._sft_loss if self.cfg.method == "sft" else self._dpo_loss)(mb, self.eval_items, 1.0)
                for key, v in info.items():
                    totals[key] = totals.get(key, 0.0) + v
        totals = self._all_sum(totals)
        self.model.train()
        res = {"eval_loss": totals["nll_sum"] / max(1, totals["n"])}
        if self.cfg.method == "dpo":
            res["eval_accuracy"] = totals["acc_sum"] / max(1, totals["n"])
            res["eval_margin"] = totals["margin_sum"] / max(1, totals["n"])
        return res

    def _micro_batches_eval(self):
        cfg = self.cfg
        if cfg.method == "sft":
            groups = D.pack(self.eval_items, cfg.max_len) if cfg.pack else [[i] for i in range(len(self.eval_items))]
            return [[i for g in groups[s: s + cfg.batch_size] for i in g] for s in range(0, len(groups), cfg.batch_size)]
        idx = list(range(len(self.eval_items)))
        return [idx[s: s + cfg.batch_size] for s in range(0, len(idx), cfg.batch_size)]

    def _all_sum(self, d: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return d
        import torch

        keys = sorted(d) or ["nll_sum", "n"]
        v = torch.tensor([d.get(k, 0.0) for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(v)
        return dict(zip(keys, v.tolist()))

    # ---- checkpoints

    def _save_adapter(self, folder: Path, extra: dict | None = None) -> None:
        tmp = folder.with_name(folder.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        self.model.save_pretrained(str(tmp))
        if extra is not None:
            atomic_write_json(tmp / "state.json", extra)
        return tmp

    def save_checkpoint(self, step: int, best: float | None) -> None:
        import torch

        if self.rank != 0:
            return
        folder = self.out / "checkpoint-last"
        tmp = self._save_adapter(folder)
        torch.save({"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                    "rng": {"python": random.getstate(), "torch": torch.get_rng_state()}},
                   tmp / "trainer_state.pt")
        atomic_write_json(tmp / "state.json", {"step": step, "best_eval_loss": best,
                                               "fingerprint": self.fingerprint,
                                               "tokens_seen": self.tokens_seen})
        _replace_dir(tmp, folder)

    def try_resume(self) -> tuple[int, float | None]:
        import torch

        state_file = self.out / "checkpoint-last" / "state.json"
        if not self.cfg.resume or not state_file.is_file():
            return 0, None
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") != self.fingerprint:
            raise UserError("holds a run with other settings or data; use another --out, or --no-resume "
                            "to start over", path=str(self.out))
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = self.out / "checkpoint-last"
        set_peft_model_state_dict(self.model, load_file(str(folder / "adapter_model.safetensors")))
        self.master.reload()
        ts = torch.load(folder / "trainer_state.pt", map_location="cpu", weights_only=False)
        self.opt.load_state_dict(ts["optimizer"])
        self.sched.load_state_dict(ts["scheduler"])
        random.setstate(ts["rng"]["python"])
        torch.set_rng_state(ts["rng"]["torch"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        step = int(state["step"])
        if self.rank == 0:
            truncate_jsonl(self.out / "metrics.jsonl", lambda r: r.get("step", 0) <= step)
        self.notice(f"resumed from step {step} (checkpoint-last)")
        return step, state.get("best_eval_loss")

    # ---- main

    def execute(self) -> dict[str, Any]:
        import torch

        from datakit.train import model as M

        cfg = self.cfg
        t_start = time.time()
        train_rows, eval_rows = self._read()
        self.spec = M.resolve_model(cfg.model)
        tok, had_template = M.load_tokenizer(self.spec)
        self.tok = tok
        if not had_template:
            self.notice("the model has no chat template: using ChatML")
        self.train_ex, train_stats = self._encode(tok, train_rows)
        self.eval_items, eval_stats = self._encode(tok, eval_rows) if eval_rows else ([], D.EncodeStats())
        if not self.train_ex:
            raise UserError(f"nothing to train on: all {train_stats.examples} sequences lost their "
                            f"assistant tokens to truncation (--max-len {cfg.max_len})", path=cfg.data)
        if train_stats.truncated:
            self.notice(f"{train_stats.truncated} of {train_stats.examples} training sequences were longer than "
                        f"--max-len {cfg.max_len} and were truncated ({train_stats.lost_tokens} tokens cut, "
                        f"{train_stats.dropped_empty} dropped with nothing left to train)")
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self._setup_model()

        n_items = len(self.train_ex)
        per_epoch = len(self._micro_batches(n_items, 1.0))
        per_step = cfg.grad_accum * self.world
        if cfg.max_steps:
            epochs = max(cfg.epochs, math.ceil(cfg.max_steps * per_step / max(1, per_epoch)))
            micro = self._micro_batches(n_items, float(epochs))
            total_steps = min(cfg.max_steps, math.ceil(len(micro) / per_step))
        else:
            micro = self._micro_batches(n_items, cfg.epochs)
            total_steps = max(1, math.ceil(len(micro) / per_step))
        self.fingerprint = _fingerprint(cfg, _file_sha(cfg.data) + _file_sha(cfg.eval_data))
        self.master = M.Fp32Master(p for p in self.model.parameters() if p.requires_grad)
        params = self.master.params
        self.opt, opt_name = make_optimizer(params, cfg, self.device, self.notice)
        warmup = max(1, int(round(cfg.warmup_ratio * total_steps))) if cfg.warmup_ratio > 0 else 0
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(total_steps, warmup))
        self.tokens_seen = 0
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        start, best = self.try_resume()
        if start == 0 and self.rank == 0 and (self.out / "metrics.jsonl").exists():
            (self.out / "metrics.jsonl").unlink()
        save_every = cfg.save_every or cfg.eval_every
        self.emit("start", {"total_steps": total_steps, "start_step": start, "trainable": self.trainable,
                            "total_params": self.total_params, "device": str(self.device),
                            "load_4bit": self.load_4bit, "train_items": n_items,
                            "eval_items": len(self.eval_items), "optimizer": opt_name})
        metrics_log = JsonlAppender(self.out / "metrics.jsonl") if self.rank == 0 else None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        loss_fn = self._sft_loss if cfg.method == "sft" else self._dpo_loss
        self.model.train()
        first_loss = last_loss = None
        last_eval = None
        run_tokens = 0
        run_time = 0.0
        try:
            for step in range(start, total_steps):
                t0 = time.time()
                mbs = micro[step * per_step: (step + 1) * per_step]
                if cfg.method == "sft":
                    denom = sum(self._targets_in(mb, self.train_ex) for mb in mbs)
                else:
                    denom = sum(len(mb) for mb in mbs)
                denom = max(1, denom)
                agg: dict[str, float] = {}
                for k, mb in enumerate(mbs):
                    if k % self.world != self.rank:
                        continue
                    loss, info = loss_fn(mb, self.train_ex, denom)
                    loss.backward()
                    for key, v in info.items():
                        agg[key] = agg.get(key, 0.0) + v
                self.master.pull_grads()
                if self.world > 1:
                    self._all_reduce_grads(params)
                agg = self._all_sum(agg)
                gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                lr = self.sched.get_last_lr()[0]
                self.opt.step()
                self.master.push()
                self.sched.step()
                self.opt.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                dt = time.time() - t0
                tokens = int(agg.get("tokens", 0))
                self.tokens_seen += tokens
                run_tokens += tokens
                run_time += dt
                loss_v = agg.get("nll_sum", 0.0) / max(1, agg.get("n", 1))
                first_loss = loss_v if first_loss is None else first_loss
                last_loss = loss_v
                row: dict[str, Any] = {"step": step + 1, "loss": round(loss_v, 6), "lr": lr,
                                       "grad_norm": round(float(gnorm), 6), "tokens": tokens,
                                       "tokens_per_s": round(tokens / dt, 1) if dt > 0 else None,
                                       "peak_mem_gib": self._peak_gib()}
                if cfg.method == "dpo":
                    n = max(1, agg.get("n", 1))
                    row.update({"dpo_loss": round(agg["dpo_sum"] / n, 6),
                                "rewards_chosen": round(agg["chosen_sum"] / n, 6),
                                "rewards_rejected": round(agg["rejected_sum"] / n, 6),
                                "reward_margin": round(agg["margin_sum"] / n, 6),
                                "reward_accuracy": round(agg["acc_sum"] / n, 4)})
                done = step + 1
                if done % cfg.eval_every == 0 or done == total_steps:
                    ev = self.evaluate()
                    if ev is not None:
                        row.update({k: round(v, 6) for k, v in ev.items()})
                        last_eval = ev["eval_loss"]
                        self.emit("eval", {"step": done, **ev})
                        if best is None or ev["eval_loss"] < best:
                            best = ev["eval_loss"]
                            if self.rank == 0:
                                tmp = self._save_adapter(self.out / "best", {"step": done, "eval_loss": best})
                                _replace_dir(tmp, self.out / "best")
                if metrics_log is not None:
                    metrics_log.write_batch([row])
                if done % save_every == 0 or done == total_steps:
                    self.save_checkpoint(done, best)
                self.emit("step", {**row, "total_steps": total_steps})
        finally:
            if metrics_log is not None:
                metrics_log.close()

        summary: dict[str, Any] = {}
        if self.rank == 0:
            self.emit("phase", {"name": "saving adapter, plot and samples"})
            tmp = self._save_adapter(self.out / "adapter")
            tok.save_pretrained(str(tmp))
            _replace_dir(tmp, self.out / "adapter")
            from datakit.train.report import plot_losses, write_samples

            rows = list(_read_metrics(self.out / "metrics.jsonl"))
            plot_losses(rows, self.out / "loss.png", title=f"{cfg.method.upper()} {self.spec.label}")
            samples = write_samples(self, eval_rows or train_rows, self.out / "samples.md")
            summary = {
                "method": cfg.method, "model": self.spec.label, "data": cfg.data, "out": str(self.out),
                "device": str(self.device), "world_size": self.world, "load_4bit": self.load_4bit,
                "optimizer": opt_name, "steps": total_steps, "resumed_from": start,
                "train_items": n_items, "eval_items": len(self.eval_items),
                "train_encoding": train_stats.to_dict(), "eval_encoding": eval_stats.to_dict(),
                "first_loss": first_loss, "last_loss": last_loss,
                "final_eval_loss": last_eval, "best_eval_loss": best,
                "trainable_params": self.trainable, "total_params": self.total_params,
                "tokens_seen": self.tokens_seen,
                "tokens_per_s": round(run_tokens / run_time, 1) if run_time else None,
                "peak_mem_gib": self._peak_gib(), "samples": samples,
                "wall_s": round(time.time() - t_start, 1), "notices": self.notices,
                "config": cfg.to_dict(),
                "files": {"adapter": "adapter/", "best": "best/" if (self.out / "best").exists() else None,
                          "metrics": "metrics.jsonl", "plot": "loss.png", "samples": "samples.md"},
            }
            if cfg.merge:
                self.emit("phase", {"name": "merging the adapter into full weights"})
                summary["files"]["merged"] = merge_adapter(self.spec, self.out / "adapter", self.out / "merged")
            atomic_write_json(self.out / "summary.json", summary)
        if self.world > 1:
            torch.distributed.barrier()
        return summary

    def _peak_gib(self) -> float | None:
        import torch

        if self.device.type != "cuda":
            return None
        return round(torch.cuda.max_memory_allocated(self.device) / 2 ** 30, 2)

    def _all_reduce_grads(self, params) -> None:
        import torch

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        off = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[off: off + n].view_as(p).clone()
            off += n


def _read_metrics(path: Path):
    from datakit.records import read_jsonl

    if path.exists():
        yield from read_jsonl(path)


def merge_adapter(spec, adapter_dir: Path, out_dir: Path) -> str:
    """Full-precision base + adapter, merged and saved (on the CPU, in bf16)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": torch.bfloat16}
    if spec.gguf_file:
        kwargs["gguf_file"] = spec.gguf_file
    base = AutoModelForCausalLM.from_pretrained(spec.source, **kwargs)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    merged.save_pretrained(str(tmp))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(tmp))
    _replace_dir(tmp, out_dir)
    return out_dir.name + "/"


def train(cfg: TrainConfig, on_event: Event | None = None) -> dict[str, Any]:
    """Run a LoRA/QLoRA SFT or DPO training run as ``cfg`` says; returns the summary."""
    return Run(cfg, on_event).execute()
