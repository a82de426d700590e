"""The training loop: SFT and DPO with LoRA/QLoRA, evaluation, best checkpoint, resume.

Library entry point: :func:`train` (a :class:`~datakit.train.config.TrainConfig` in, the
summary dict out). ``on_event(kind, data)`` receives ``start``, ``step``, ``eval``, ``phase`` and
``notice`` events for a progress display; the library itself prints nothing.

Several processes: started by ``torchrun``/``accelerate launch`` (``WORLD_SIZE`` > 1), every
process loads the model on its own GPU (NCCL; on a CPU-only machine gloo, which the tests use),
takes every ``world``-th micro-batch of each step of the same fixed schedule (:func:`data.shard`),
and the LoRA gradients are summed with one all-reduce per optimiser step (data parallel). A short
last step or a small eval set can leave a rank without a micro-batch: it still joins every
collective with the same shapes (a zero gradient, zero counters), and losses are normalised by
the step's labelled tokens over all ranks. A checkpoint records the number of processes; resuming
it with another number is refused. Only rank 0 writes files. With ``--shard`` the model is
split across the processes instead of copied (:mod:`datakit.train.shard`).
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

    sel = [i for i, x in enumerate(batch.targets) if x != D.IGNORE]  # on the host: no device sync
    sel_t = torch.tensor(sel, dtype=torch.long)
    return {
        "input_ids": torch.tensor(batch.input_ids, dtype=torch.long, device=device)[None],
        "position_ids": torch.tensor(batch.position_ids, dtype=torch.long, device=device)[None],
        "cu": torch.tensor(batch.cu_seqlens, dtype=torch.int32, device=device),
        "max_len": max(b - a for a, b in zip(batch.cu_seqlens, batch.cu_seqlens[1:])),
        "sel": sel_t.to(device),
        "targets": torch.tensor([batch.targets[i] for i in sel], dtype=torch.long, device=device),
        "seq_of_target": torch.tensor(batch.seq_index, dtype=torch.long)[sel_t].to(device),
        "n_seqs": len(batch.cu_seqlens) - 1,
    }


def forward_nll(model, t: dict[str, Any]):
    """Per-target negative log-likelihoods (float32) of one flat batch (through the FSDP root
    when the model is sharded, so that its hooks gather the weights). A batch laid out for a CUDA
    graph (:func:`datakit.train.graphs.static_tensors`) carries ``weight``: 0 where a position has
    no target."""
    root = getattr(model, "datakit_shard_root", None)
    nll = root(t) if root is not None else model_nll(model, t)
    return nll * t["weight"] if "weight" in t else nll


def model_nll(model, t: dict[str, Any]):
    from datakit.train.losses import token_nll
    from datakit.train.model import decoder_and_head

    decoder, head = decoder_and_head(model)
    out = decoder(input_ids=t["input_ids"], position_ids=t["position_ids"], use_cache=False,
                  cu_seq_lens_q=t["cu"], cu_seq_lens_k=t["cu"], max_length_q=t["max_len"],
                  max_length_k=t["max_len"])
    hidden = out.last_hidden_state[0].index_select(0, t["sel"])
    w = head.weight
    return token_nll(hidden.to(w.dtype), w, t["targets"], bias=getattr(head, "bias", None))


def seq_logps(model, t, n_seqs: int):
    """Summed log-probabilities of each sequence's labelled tokens, and their counts."""
    import torch

    nll = forward_nll(model, t)
    sums = torch.zeros(n_seqs, dtype=torch.float32, device=nll.device).index_add(0, t["seq_of_target"], -nll)
    ones = t["weight"] if "weight" in t else torch.ones_like(nll)
    counts = torch.zeros(n_seqs, dtype=torch.float32, device=nll.device).index_add(0, t["seq_of_target"], ones)
    return sums, counts


# --------------------------------------------------------------------------- objectives
# tensors in, tensors out: no host sync, so that a CUDA graph can capture them (datakit.train.graphs)

def sft_objective(model, t: dict[str, Any], denom):
    """The SFT loss of one micro-batch (summed NLL / ``denom``, the step's labelled tokens) and
    its counters as tensors."""
    nll = forward_nll(model, t)
    total = nll.sum()
    return total / denom, {"nll_sum": total.detach()}


def dpo_objective(model, t: dict[str, Any], denom, beta: float, sft_weight: float):
    """The DPO loss of one micro-batch of pairs (chosen, rejected, chosen, ...; ``denom``: the
    step's pairs), with the policy and the adapter-disabled reference, and its counters."""
    import torch

    from datakit.train.losses import dpo_loss

    n = t["n_seqs"]
    logp, counts = seq_logps(model, t, n)
    with torch.no_grad(), model.disable_adapter():
        ref, _ = seq_logps(model, t, n)
    losses, rewards = dpo_loss(logp[0::2], logp[1::2], ref[0::2], ref[1::2], beta)
    total = losses - sft_weight * logp[0::2] / counts[0::2].clamp(min=1) if sft_weight else losses
    margin = rewards["chosen"] - rewards["rejected"]
    pw = t.get("pair_weight")  # a graph's layout: 0 for its empty pad pairs
    if pw is not None:
        total, losses = total * pw, losses * pw
    w = 1.0 if pw is None else pw
    stats = {"nll_sum": total.detach().sum(), "dpo_sum": losses.detach().sum(),
             "chosen_sum": (rewards["chosen"] * w).sum(), "rejected_sum": (rewards["rejected"] * w).sum(),
             "margin_sum": (margin * w).sum(), "acc_sum": ((margin > 0).float() * w).sum()}
    return total.sum() / denom, stats


def _numbers(stats: dict) -> dict[str, float]:
    """Counter tensors as numbers, with one device sync for all of them."""
    import torch

    if not stats:
        return {}
    vals = torch.stack([v.detach().float().reshape(()) for v in stats.values()]).tolist()
    return dict(zip(stats, vals))


# --------------------------------------------------------------------------- run state

def _fingerprint(cfg: TrainConfig, data_sha: str, world: int = 1) -> str:
    """What a checkpoint must share with a run to be resumed by it: the settings that shape the
    optimisation, the data, and the number of processes (it decides which micro-batches make up
    a step). A single process adds nothing, so single-process checkpoints keep their old key."""
    keep = {k: v for k, v in cfg.to_dict().items()
            if k not in ("out", "resume", "eval_every", "save_every", "log_every", "samples",
                         "sample_tokens", "merge", "max_steps", "extra", "batch_tokens", "shard",
                         "kernels", "cuda_graphs", "fit")}  # the same maths, faster (older checkpoints have no such keys)
    keep["gradient_checkpointing"] = cfg.gradient_checkpointing is not False  # None (auto) keys as the old default
    keep["data_sha"] = data_sha
    if (cfg.method == "dpo" or not cfg.pack) and cfg.micro_budget():
        # micro-batches sized in tokens; packed SFT and counted micro-batches (batch_tokens 0)
        # keep the key their checkpoints had before the token budget existed
        keep["micro_budget"] = cfg.micro_budget()
    if world != 1:
        keep["world_size"] = world
    if cfg.shard:  # its optimiser is AdamW whatever "auto" would pick
        keep["shard"] = True
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
        kind = "paged_adamw_8bit" if device.type == "cuda" and not cfg.shard else "adamw"
    if kind == "paged_adamw_8bit":
        if device.type != "cuda":
            notice("paged 8-bit AdamW needs a CUDA GPU: using AdamW")
        else:
            import bitsandbytes as bnb

            return bnb.optim.PagedAdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay), kind
    # on a GPU the fused kernel: one launch for all adapter tensors (+25% at micro-batch 1 on an H100)
    fused = device.type == "cuda" and not cfg.shard
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None), "adamw"


# the counters every rank sums after a step or an evaluation: always these, in this order, so the
# all-reduce has the same shape on every rank (a rank that got no micro-batch sends zeros)
STAT_KEYS = {
    "sft": ("nll_sum", "n", "tokens"),
    "dpo": ("nll_sum", "n", "tokens", "dpo_sum", "chosen_sum", "rejected_sum", "margin_sum", "acc_sum"),
}


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
        self.graphs = None  # a datakit.train.graphs.GraphRunner once planned, when CUDA graphs are on
        from datakit.train import shard as S

        S.check(self.cfg, self.world)

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
                                  pack_rows=cfg.pack, epochs=epochs, seed=cfg.seed, budget=cfg.micro_budget())
        return D.dpo_schedule(n_items, batch_size=cfg.batch_size, epochs=epochs, seed=cfg.seed,
                              sizes=D.pair_sizes(self.train_ex), budget=cfg.micro_budget())

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

    def _init_processes(self) -> None:
        """Join the process group when started by torchrun (NCCL on GPUs, gloo on the CPU)."""
        import torch

        if self.world == 1 or torch.distributed.is_initialized():
            return
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            torch.distributed.init_process_group("nccl")
        else:
            torch.distributed.init_process_group("gloo")

    def _setup_model(self):
        from datakit.train import model as M

        cfg = self.cfg
        self._init_processes()
        self.device = M.pick_device()
        from datakit.train import kernels as K

        K.check(cfg.kernels, self.device)  # before the model loads
        from datakit.train import graphs as G

        G.check(cfg.cuda_graphs, self.device, cfg.shard)
        self.dtype = M.compute_dtype(self.device)
        # on CUDA the adapters are stored in the compute dtype (float32 masters in the optimiser);
        # on the CPU everything is float32
        lora_dtype = self.dtype if self.device.type == "cuda" else None
        load_4bit = cfg.load_4bit
        if load_4bit and self.device.type != "cuda":
            self.notice("no CUDA GPU: 4-bit loading needs one here, so this run is plain LoRA in float32")
            load_4bit = False
        self.load_4bit = load_4bit
        if cfg.shard and cfg.samples:
            self.notice("--shard: no before/after samples (rank 0 alone cannot run a sharded model); "
                        "`datakit validate OUT` answers held-out prompts with the saved adapter")
            cfg.samples = 0
        self.emit("phase", {"name": f"loading {self.spec.label}"})
        t0 = time.time()
        model = M.load_model(self.spec, load_4bit=load_4bit, device=self.device, dtype=self.dtype,
                             quant_storage=self.dtype if cfg.shard else None)
        self.load_s = round(time.time() - t0, 1)
        self.model = M.add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                                target_modules=cfg.target_modules,
                                gradient_checkpointing=cfg.gradient_checkpointing is not False, lora_dtype=lora_dtype,
                                reentrant=True, fused=not cfg.shard)
        self.kernels = K.apply(self.model, cfg.kernels, self.device)
        self.trainable, self.total_params = M.count_params(self.model)
        if cfg.shard:
            from datakit.train import shard as S

            S.shard_model(self.model, self.device, model_nll)

    # ---- losses

    def _tensors(self, micro, items, padded: bool = False):
        """A micro-batch on the device: (graph shape key or None, tensors, its counts). ``padded``:
        in the fixed shapes of a CUDA graph (:func:`datakit.train.graphs.static_tensors`)."""
        batch = D.make_batch(self._seqs(micro, items))
        pairs = len(micro) if self.cfg.method == "dpo" else None
        counts = {"n": pairs if pairs is not None else batch.n_targets, "tokens": batch.n_tokens}
        if padded:
            from datakit.train.graphs import static_tensors

            key, t = static_tensors(batch, self.device, pairs)
            return key, t, counts
        return None, batch_tensors(batch, self.device), counts

    def _objective(self, t, denom):
        if self.cfg.method == "sft":
            return sft_objective(self.model, t, denom)
        return dpo_objective(self.model, t, denom, self.cfg.beta, self.cfg.sft_weight)

    def _loss(self, micro, items, denom):
        """One micro-batch's loss (a tensor) and its counters (numbers), eagerly."""
        _, t, counts = self._tensors(micro, items)
        loss, stats = self._objective(t, denom)
        return loss, {**_numbers(stats), **counts}

    def _fwd_bwd(self, t) -> dict:
        """Forward, loss and backward of one micro-batch (``t["denom"]``: the step's count, a
        tensor in a graph); the counters as tensors. What a CUDA graph captures."""
        loss, stats = self._objective(t, t["denom"])
        (loss * t["scale"] if "scale" in t else loss).backward()
        return stats

    def _micro_step(self, mb, denom, real: bool) -> dict[str, float]:
        """Forward and backward of one of this rank's micro-batches: replayed as a CUDA graph of
        its shape when graphs are on, else eagerly (``real`` False: a sharded run's padding,
        computed with zero weight). Returns its counters (none for padding)."""
        import torch

        if self.graphs is not None and self.graphs.active and real:
            key, t, counts = self._tensors(mb, self.train_ex, padded=True)
            t["denom"] = torch.full((), float(denom), dtype=torch.float32, device=self.device)
            stats = self.graphs.run(key, t, self._fwd_bwd)
        else:
            _, t, counts = self._tensors(mb, self.train_ex)
            t["denom"] = denom
            if not real:
                t["scale"] = 0.0
            stats = self._fwd_bwd(t)
        return {**_numbers(stats), **counts} if real else {}

    # ---- evaluation

    def evaluate(self) -> dict[str, float] | None:
        """Loss (and DPO reward accuracy and margin) over the whole held-out set, on every rank:
        each takes its share of the batches, and the sums are added up across ranks."""
        import torch

        if not self.eval_items:
            return None
        self.model.eval()
        totals: dict[str, float] = {}
        with torch.no_grad():
            for mb, real in self._share(self._micro_batches_eval()):
                _, info = self._loss(mb, self.eval_items, 1.0)
                for key, v in (info.items() if real else ()):
                    totals[key] = totals.get(key, 0.0) + v
        totals = self._all_sum(totals)
        self.model.train()
        n = max(1, totals["n"])
        res = {"eval_loss": totals["nll_sum"] / n}
        if self.cfg.method == "dpo":
            res["eval_accuracy"] = totals["acc_sum"] / n
            res["eval_margin"] = totals["margin_sum"] / n
        return res

    def _micro_batches_eval(self):
        cfg = self.cfg
        if cfg.method == "sft" and cfg.pack:
            groups = D.pack(self.eval_items, cfg.max_len)
            return [[i for g in groups[s: s + cfg.batch_size] for i in g] for s in range(0, len(groups), cfg.batch_size)]
        sizes = [len(ex) for ex in self.eval_items] if cfg.method == "sft" else D.pair_sizes(self.eval_items)
        return D.eval_batches(self.eval_items, sizes, batch_size=cfg.batch_size, budget=cfg.micro_budget())

    # ---- across ranks

    def _share(self, batches: list) -> list:
        """This rank's micro-batches, each with ``real`` (False: padding, run with zero weight so
        that a sharded model's gathers happen as often on every rank)."""
        if self.cfg.shard:
            from datakit.train.shard import share

            return share(batches, self.world, self.rank)
        return [(mb, True) for mb in D.shard(batches, self.world, self.rank)]

    def _all_sum(self, d: dict[str, float]) -> dict[str, float]:
        """The method's counters summed over the ranks; a counter a rank lacks counts as 0."""
        keys = STAT_KEYS[self.cfg.method]
        vals = [float(d.get(k, 0.0)) for k in keys]
        if self.world > 1:
            import torch

            v = torch.tensor(vals, dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(v)
            vals = v.tolist()
        return dict(zip(keys, vals))

    def _all_reduce_grads(self, params) -> None:
        """Sum the LoRA gradients over the ranks (one flat tensor, the same size on every rank;
        a rank without a micro-batch this step adds zeros)."""
        import torch

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        off = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[off: off + n].view_as(p).clone()
            off += n

    def _same_start(self) -> None:
        """Every rank must resume from the same step, or their collectives would not pair up:
        all ranks compare (one all-reduce each for the lowest and highest) and stop together."""
        if self.world == 1:
            return
        import torch

        lo = torch.tensor([self.start_step], dtype=torch.int64, device=self.device)
        hi = lo.clone()
        torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
        if int(lo) != int(hi):
            raise UserError(f"the processes found different checkpoints (steps {int(lo)} to {int(hi)}): "
                            "--out must be one folder that every process sees", path=str(self.out))

    def _barrier(self) -> None:
        if self.world > 1:
            import torch

            torch.distributed.barrier()

    # ---- checkpoints

    def _adapter_state(self) -> dict | None:
        """Sharded: the adapter gathered whole (every rank calls this; rank 0 gets it)."""
        if not self.cfg.shard:
            return None
        from datakit.train.shard import adapter_state

        return adapter_state(self.model, self.rank)

    def _save_adapter(self, folder: Path, extra: dict | None = None, state: dict | None = None) -> Path:
        """Write the adapter (``state``: gathered from a sharded model) to ``folder``.tmp and
        return that path (the caller adds to it and swaps it into place)."""
        tmp = folder.with_name(folder.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        self.model.save_pretrained(str(tmp), **({"state_dict": state} if state is not None else {}))
        if extra is not None:
            atomic_write_json(tmp / "state.json", extra)
        return tmp

    def save_checkpoint(self, step: int, best: float | None) -> None:
        import torch

        adapter = self._adapter_state()
        if self.cfg.shard:
            from datakit.train.shard import optimizer_state

            opt_state = optimizer_state(self.opt, self.rank)
        if self.rank != 0:
            return
        opt_state = opt_state if self.cfg.shard else self.opt.state_dict()
        folder = self.out / "checkpoint-last"
        tmp = self._save_adapter(folder, state=adapter)
        torch.save({"optimizer": opt_state, "scheduler": self.sched.state_dict(),
                    "rng": {"python": random.getstate(), "torch": torch.get_rng_state()}},
                   tmp / "trainer_state.pt")
        atomic_write_json(tmp / "state.json", {"step": step, "best_eval_loss": best,
                                               "fingerprint": self.fingerprint,
                                               "world_size": self.world, "data_sha": self.data_sha,
                                               "tokens_seen": self.tokens_seen})
        _replace_dir(tmp, folder)

    def _check_resumable(self, state: dict) -> None:
        world = int(state.get("world_size", 1))
        if world != self.world:
            raise UserError(f"checkpoint-last was written by {world} process(es) and this run has "
                            f"{self.world}: a step is grad_accum x processes micro-batches, so resume with "
                            f"{world}, or --no-resume to start over", path=str(self.out))
        if state.get("fingerprint") != self.fingerprint:
            raise UserError("holds a run with other settings or data; use another --out, or --no-resume "
                            "to start over", path=str(self.out))

    def try_resume(self) -> tuple[int, float | None]:
        import torch

        state_file = self.out / "checkpoint-last" / "state.json"
        if not self.cfg.resume or not state_file.is_file():
            return 0, None
        state = json.loads(state_file.read_text())
        self._check_resumable(state)
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = self.out / "checkpoint-last"
        saved = load_file(str(folder / "adapter_model.safetensors"))
        ts = torch.load(folder / "trainer_state.pt", map_location="cpu", weights_only=False)
        if self.cfg.shard:
            from datakit.train import shard as S

            S.load_adapter(self.model, saved)
            self.master.reload()
            S.load_optimizer(self.opt, self.master.params, ts["optimizer"])
        else:
            set_peft_model_state_dict(self.model, saved)
            self.master.reload()
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

    # ---- the steps of a run

    def execute(self) -> dict[str, Any]:
        """Set up, resume, train (evaluating and checkpointing as it goes), save, finish."""
        self.t_start = time.time()
        self._set_up()
        self._plan()
        self._resume()
        self._train_loop()
        self._save()
        return self._finish()

    def _set_up(self) -> None:
        """Read and tokenize the data, load the model with its adapters."""
        import torch

        from datakit.train import model as M

        cfg = self.cfg
        self.train_rows, self.eval_rows = self._read()
        self.spec = M.resolve_model(cfg.model)
        self.tok, had_template = M.load_tokenizer(self.spec)
        if not had_template:
            self.notice("the model has no chat template: using ChatML")
        self.train_ex, self.train_stats = self._encode(self.tok, self.train_rows)
        self.eval_items, self.eval_stats = (self._encode(self.tok, self.eval_rows) if self.eval_rows
                                            else ([], D.EncodeStats()))
        st = self.train_stats
        if not self.train_ex:
            raise UserError(f"nothing to train on: all {st.examples} sequences lost their "
                            f"assistant tokens to truncation (--max-len {cfg.max_len})", path=cfg.data)
        if st.truncated:
            self.notice(f"{st.truncated} of {st.examples} training sequences were longer than "
                        f"--max-len {cfg.max_len} and were truncated ({st.lost_tokens} tokens cut, "
                        f"{st.dropped_empty} dropped with nothing left to train)")
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self._setup_model()

    def _plan(self) -> None:
        """The micro-batch schedule, the number of steps, the optimiser and its schedule."""
        import torch

        from datakit.train import model as M

        cfg = self.cfg
        n_items = len(self.train_ex)
        per_epoch = len(self._micro_batches(n_items, 1.0))
        self.per_step = cfg.grad_accum * self.world
        if cfg.max_steps:
            epochs = max(cfg.epochs, math.ceil(cfg.max_steps * self.per_step / max(1, per_epoch)))
            self.micro = self._micro_batches(n_items, float(epochs))
            self.total_steps = min(cfg.max_steps, math.ceil(len(self.micro) / self.per_step))
        else:
            self.micro = self._micro_batches(n_items, cfg.epochs)
            self.total_steps = max(1, math.ceil(len(self.micro) / self.per_step))
        self.data_sha = _file_sha(cfg.data) + _file_sha(cfg.eval_data)
        self.fingerprint = _fingerprint(cfg, self.data_sha, self.world)
        self.master = M.Fp32Master(p for p in self.model.parameters() if p.requires_grad)
        self.opt, self.opt_name = make_optimizer(self.master.params, cfg, self.device, self.notice)
        from datakit.train import fit as F

        self.fit = F.plan(self)
        if self.fit.join > 1 or self.fit.checkpointing != (cfg.gradient_checkpointing is not False):
            self.notice(self.fit.describe(self.per_step))
        self._new_graph_runner()
        total = self.total_steps
        warmup = max(1, int(round(cfg.warmup_ratio * total))) if cfg.warmup_ratio > 0 else 0
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(total, warmup))
        self.tokens_seen = 0

    def _new_graph_runner(self) -> None:
        from datakit.train import graphs as G

        self.graphs = G.make_runner(self.cfg.cuda_graphs, self.device, self.cfg.shard, self.master, self.notice)

    def _resume(self) -> None:
        """Continue from checkpoint-last when it belongs to this run; announce the start."""
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        self.start_step, self.best = self.try_resume()
        self._same_start()
        if self.start_step == 0 and self.rank == 0 and (self.out / "metrics.jsonl").exists():
            (self.out / "metrics.jsonl").unlink()
        self.emit("start", {"total_steps": self.total_steps, "start_step": self.start_step,
                            "trainable": self.trainable, "total_params": self.total_params,
                            "device": str(self.device), "load_4bit": self.load_4bit,
                            "train_items": len(self.train_ex), "eval_items": len(self.eval_items),
                            "optimizer": self.opt_name, "kernels": self.kernels})

    def _train_loop(self) -> None:
        """The optimiser steps; each is logged, evaluated and checkpointed on schedule."""
        import torch

        self.first_loss = self.last_loss = self.last_eval = None
        self.run_tokens, self.run_time = 0, 0.0
        metrics_log = JsonlAppender(self.out / "metrics.jsonl") if self.rank == 0 else None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.model.train()
        save_every = self.cfg.save_every or self.cfg.eval_every
        try:
            for step in range(self.start_step, self.total_steps):
                row = self._train_step(step)
                done = step + 1
                if done % self.cfg.eval_every == 0 or done == self.total_steps:
                    self._eval_step(done, row)
                if metrics_log is not None:
                    metrics_log.write_batch([row])
                if done % save_every == 0 or done == self.total_steps:
                    self.save_checkpoint(done, self.best)
                self.emit("step", {**row, "total_steps": self.total_steps})
        finally:
            if metrics_log is not None:
                metrics_log.close()
            if self.graphs is not None:  # their memory pool is not needed for saving, samples, validation
                self.graphs.close()

    def _train_step(self, step: int) -> dict[str, Any]:
        """One optimiser step over this rank's share of the step's micro-batches; its log row.

        The loss is normalised by the step's labelled tokens (SFT) or pairs (DPO) over all its
        micro-batches, on every rank alike, so the summed gradients are the mean over the step."""
        import torch

        cfg = self.cfg
        t0 = time.time()
        mbs = self.micro[step * self.per_step: (step + 1) * self.per_step]
        if cfg.method == "sft":
            denom = max(1, sum(self._targets_in(mb, self.train_ex) for mb in mbs))
        else:
            denom = max(1, sum(len(mb) for mb in mbs))
        agg = self._passes(mbs, denom)
        params = self.master.params
        self.master.pull_grads(keep=self.graphs is not None)  # graphs accumulate into the same .grad
        if self.world > 1 and not cfg.shard:  # sharded: FSDP has summed them already
            self._all_reduce_grads(params)
        agg = self._all_sum(agg)
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if cfg.shard:
            from datakit.train.shard import scalar

            gnorm = scalar(gnorm)
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.master.push()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self._step_row(step, agg, lr, float(gnorm), time.time() - t0)

    def _passes(self, mbs, denom) -> dict[str, float]:
        """Forward and backward of the step's micro-batches, ``fit.join`` at a time; the counters
        summed. A pass that runs out of memory under a planned join (or without a planned
        checkpointing) steps the plan down and does the step again from zero gradients."""
        import torch

        from datakit.train import fit as F

        while True:
            agg: dict[str, float] = {}
            try:
                for mb, real in self._share(F.joined(mbs, self.fit.join)):
                    for key, v in self._micro_step(mb, denom, real).items():
                        agg[key] = agg.get(key, 0.0) + v
                return agg
            except torch.OutOfMemoryError:
                down = F.smaller(self.fit, self.cfg)
                if down is None:
                    raise
            self._zero_model_grads()
            if self.graphs is not None:  # captured for the old shapes (and checkpointing): drop them
                self.graphs.close()
                self._new_graph_runner()
            F.set_checkpointing(self.model, down.checkpointing)
            torch.cuda.empty_cache()
            self.fit = down
            self.notice(down.describe(self.per_step))

    def _zero_model_grads(self) -> None:
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.zero_()

    def _step_row(self, step: int, agg: dict[str, float], lr: float, gnorm: float, dt: float) -> dict[str, Any]:
        tokens = int(agg["tokens"])
        self.tokens_seen += tokens
        self.run_tokens += tokens
        self.run_time += dt
        n = max(1, agg["n"])
        loss_v = agg["nll_sum"] / n
        self.first_loss = loss_v if self.first_loss is None else self.first_loss
        self.last_loss = loss_v
        row: dict[str, Any] = {"step": step + 1, "loss": round(loss_v, 6), "lr": lr,
                               "grad_norm": round(gnorm, 6), "tokens": tokens,
                               "tokens_per_s": round(tokens / dt, 1) if dt > 0 else None,
                               "peak_mem_gib": self._peak_gib()}
        if self.cfg.method == "dpo":
            row.update({"pairs": int(agg["n"]), "pairs_per_s": round(agg["n"] / dt, 2) if dt > 0 else None,
                        "dpo_loss": round(agg["dpo_sum"] / n, 6),
                        "rewards_chosen": round(agg["chosen_sum"] / n, 6),
                        "rewards_rejected": round(agg["rejected_sum"] / n, 6),
                        "reward_margin": round(agg["margin_sum"] / n, 6),
                        "reward_accuracy": round(agg["acc_sum"] / n, 4)})
        return row

    def _eval_step(self, done: int, row: dict[str, Any]) -> None:
        """Evaluate (every rank), add the numbers to ``row``, keep the best adapter (rank 0)."""
        ev = self.evaluate()
        if ev is None:
            return
        row.update({k: round(v, 6) for k, v in ev.items()})
        self.last_eval = ev["eval_loss"]
        self.emit("eval", {"step": done, **ev})
        if self.best is None or ev["eval_loss"] < self.best:
            self.best = ev["eval_loss"]
            state = self._adapter_state()
            if self.rank == 0:
                tmp = self._save_adapter(self.out / "best", {"step": done, "eval_loss": self.best}, state)
                _replace_dir(tmp, self.out / "best")

    def _save(self) -> None:
        """Rank 0: the final adapter with its tokenizer, the loss plot and the samples."""
        self.samples_written = 0
        state = self._adapter_state()
        if self.rank != 0:
            return
        from datakit.train.report import plot_losses, write_samples

        self.emit("phase", {"name": "saving adapter, plot and samples"})
        tmp = self._save_adapter(self.out / "adapter", state=state)
        self.tok.save_pretrained(str(tmp))
        _replace_dir(tmp, self.out / "adapter")
        rows = list(_read_metrics(self.out / "metrics.jsonl"))
        plot_losses(rows, self.out / "loss.png", title=f"{self.cfg.method.upper()} {self.spec.label}")
        self.samples_written = write_samples(self, self.eval_rows or self.train_rows, self.out / "samples.md")

    def _finish(self) -> dict[str, Any]:
        """Rank 0: merge when asked and write summary.json; every rank waits for it, then returns
        the summary (empty on the other ranks)."""
        summary: dict[str, Any] = {}
        if self.rank == 0:
            summary = self._summary()
            if self.cfg.merge:
                self.emit("phase", {"name": "merging the adapter into full weights"})
                summary["files"]["merged"] = merge_adapter(self.spec, self.out / "adapter", self.out / "merged")
            atomic_write_json(self.out / "summary.json", summary)
        self._barrier()
        return summary

    def _summary(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "method": cfg.method, "model": self.spec.label, "data": cfg.data, "out": str(self.out),
            "device": str(self.device), "world_size": self.world, "load_4bit": self.load_4bit,
            "optimizer": self.opt_name, "kernels": self.kernels,
            "cuda_graphs": self.graphs.summary() if self.graphs is not None else "off",
            "fit": self.fit.summary(),
            "steps": self.total_steps, "resumed_from": self.start_step,
            "train_items": len(self.train_ex), "eval_items": len(self.eval_items),
            "train_encoding": self.train_stats.to_dict(), "eval_encoding": self.eval_stats.to_dict(),
            "first_loss": self.first_loss, "last_loss": self.last_loss,
            "final_eval_loss": self.last_eval, "best_eval_loss": self.best,
            "trainable_params": self.trainable, "total_params": self.total_params,
            "tokens_seen": self.tokens_seen,
            "tokens_per_s": round(self.run_tokens / self.run_time, 1) if self.run_time else None,
            "peak_mem_gib": self._peak_gib(), "peak_rss_gib": _peak_rss_gib(), "load_s": self.load_s,
            "samples": self.samples_written,
            "wall_s": round(time.time() - self.t_start, 1), "notices": self.notices,
            "config": cfg.to_dict(),
            "files": {"adapter": "adapter/", "best": "best/" if (self.out / "best").exists() else None,
                      "metrics": "metrics.jsonl", "plot": "loss.png", "samples": "samples.md"},
        }

    def _peak_gib(self) -> float | None:
        import torch

        if self.device.type != "cuda":
            return None
        return round(torch.cuda.max_memory_allocated(self.device) / 2 ** 30, 2)


def _peak_rss_gib() -> float | None:
    """This process's peak resident memory on the CPU (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)


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
