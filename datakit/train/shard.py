"""Sharded training (``--shard``): FSDP2 (``torch.distributed.fsdp.fully_shard``) over the decoder.

Data parallelism copies the whole (4-bit) model to every GPU; with ``--shard`` each of the N
processes keeps 1/N of every parameter instead: the frozen base weights (in 4-bit, stored by
bitsandbytes in the compute dtype, ``bnb_4bit_quant_storage``, so that FSDP sees ordinary bf16
tensors it can cut up), the LoRA weights, their gradients and the optimiser state. Each decoder
layer is one FSDP unit, gathered just before it runs and freed after; what is left (embeddings,
final norm, output layer) is the root unit (:func:`make_root`), whose forward is the trainer's
loss forward, so FSDP's root hooks run on every step.

Everything here is collective: every rank calls it, in the same order, with the same shapes.
The trainer keeps that true by giving every rank the same number of micro-batches per step
(:func:`share`: a rank short of one repeats a micro-batch with its loss multiplied by zero).
Checkpoints hold full (gathered) tensors, written by rank 0, so an adapter saved by a sharded
run is an ordinary PEFT adapter; bitsandbytes' small quantisation constants (``absmax``) stay
whole on every rank.
"""

from __future__ import annotations

from typing import Any

from datakit.errors import UserError


def check(cfg, world: int) -> None:
    """Refuse ``--shard`` where it cannot work, in one line, before anything loads."""
    if not cfg.shard:
        return
    if world < 2:
        raise UserError("--shard splits the model across several processes and this run has one: "
                        "start it with `make finetune` on 2 or more GPUs (or torchrun --nproc_per_node N)",
                        field="shard")
    if cfg.optimizer == "paged_adamw_8bit":
        raise UserError("--shard keeps the optimiser state sharded with AdamW; paged 8-bit AdamW "
                        "cannot step sharded parameters: use --optimizer auto or adamw", field="optimizer")


def decoder_layers(model) -> list[tuple[str, Any]]:
    """The decoder layers of a (PEFT-wrapped) causal LM, with their names in ``model``: the
    modules whose class the model lists in ``_no_split_modules`` (as transformers' own
    "transformer-based" wrap policy picks them)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kinds = set(getattr(base, "_no_split_modules", None) or [])
    return [(n, m) for n, m in model.named_modules() if type(m).__name__ in kinds]


def wrap_plan(model) -> list[str]:
    """The FSDP units, in the order they are wrapped: every decoder layer, then ``""``, the root
    (embeddings, final norm and output layer: every parameter that no layer holds)."""
    layers = decoder_layers(model)
    if not layers:
        raise UserError("--shard: this model lists no decoder layer class (_no_split_modules), so "
                        "there is nothing to shard by layer", field="shard")
    return [n for n, _ in layers] + [""]


def make_root(model, nll):
    """The root FSDP unit: holds ``model`` and runs ``nll(model, batch)`` as its forward."""
    import torch

    class _Root(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, t):
            return nll(self.model, t)

    return _Root()


def shard_model(model, device, nll):
    """Wrap ``model`` as :func:`wrap_plan` says (collective); gradients are summed over the ranks,
    not averaged, as in the data-parallel path. Returns the root, also kept on the model as
    ``datakit_shard_root`` for :func:`datakit.train.trainer.forward_nll`."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    modules = dict(model.named_modules())
    units = [fully_shard(modules[n], mesh=mesh) for n in wrap_plan(model)[:-1]]
    root = fully_shard(make_root(model, nll), mesh=mesh)
    for unit in units + [root]:
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no PREMUL_SUM)
    object.__setattr__(model, "datakit_shard_root", root)  # not a submodule: no cycle
    return root


def share(batches: list, world: int, rank: int) -> list[tuple[Any, bool]]:
    """This rank's micro-batches of one step (or of the eval set), each with ``real``: when the
    ranks' shares differ, a short rank repeats its first batch (or the step's first) as padding,
    to be run with zero weight, so that every rank gathers and reduces the same number of times."""
    mine = batches[rank::world]
    n = -(-len(batches) // world)
    pad = (mine or batches)[:1]
    return [(b, True) for b in mine] + [(pad[0], False)] * (n - len(mine)) if pad else []


def _full(t):
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def scalar(t) -> float:
    return float(_full(t))


def adapter_state(model, rank: int) -> dict[str, Any] | None:
    """The trainable parameters gathered whole (collective), by parameter name; on rank 0 only."""
    out = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            full = _full(p.detach())
            if rank == 0:
                out[n] = full.cpu()
    return out if rank == 0 else None


def optimizer_state(opt, rank: int) -> dict | None:
    """``opt.state_dict()`` with every sharded tensor gathered whole (collective); on rank 0 only."""
    sd = opt.state_dict()
    for idx in sorted(sd["state"]):
        st = sd["state"][idx] = dict(sd["state"][idx])  # a copy: the optimiser's own dict is live
        for k in sorted(st):
            if hasattr(st[k], "shape"):
                st[k] = _full(st[k]).cpu() if rank == 0 else _full(st[k])
    return sd if rank == 0 else None


def _to_like(full, like):
    """``full`` cut as ``like`` is (this rank's shard), or as it is when ``like`` is not sharded."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(like, DTensor) and tuple(full.shape) == tuple(like.shape):
        return distribute_tensor(full.to(like.device), like.device_mesh, like.placements, src_data_rank=None)
    return full


def load_adapter(model, saved: dict) -> None:
    """Copy a saved PEFT adapter (file keys) into the sharded parameters; every rank reads it
    and keeps its own shard (no communication)."""
    import torch
    from peft import get_peft_model_state_dict

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    names = list(params)
    # PEFT's own key mapping, run on parameter indices: file key -> parameter name
    keyed = get_peft_model_state_dict(model, state_dict={n: torch.tensor(i) for i, n in enumerate(names)})
    with torch.no_grad():
        for key, idx in keyed.items():
            p = params[names[int(idx)]]
            p.copy_(_to_like(saved[key].to(p.dtype), p))


def load_optimizer(opt, params: list, sd: dict) -> None:
    """Load a gathered optimiser state, each tensor cut like its parameter."""
    for idx, st in sd["state"].items():
        p = params[int(idx)]
        for k, v in st.items():
            if hasattr(v, "shape"):
                st[k] = _to_like(v, p)
    opt.load_state_dict(sd)
