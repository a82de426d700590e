"""CUDA graphs for the training step: capture a micro-batch's forward and backward once, replay it.

At micro-batch 1 a QLoRA step on a 7B model launches ~10,000 kernels from Python (every LoRA
layer, its dequantisation, checkpointing's recompute, the loss), and the GPU waits on the CPU:
measured on an H100, 0.47–0.60 s a step eagerly against 0.25–0.28 s replayed as a graph
(``bench/graph_step.py``). A graph replays fixed kernels on fixed addresses, so this module

* lays each micro-batch out in **fixed shapes** (:func:`static_tensors`): the token count rounded up
  to a multiple of :data:`GRANULE` (the pad tokens form one extra sequence that no loss sees), the
  sequence count rounded up to a power of two (empty sequences), and the labelled positions
  rounded up to a multiple of :data:`GRANULE` (pad entries weighted 0), so the few shapes a run
  meets each get one graph;
* runs the run's first micro-batch eagerly (its real work, and the warm-up capture needs), then
  captures it (:class:`GraphRunner`) and replays the capture once on the same inputs and random
  state as a check; a later micro-batch of a known shape copies its tensors into the graph's inputs
  and replays it; a new shape is captured straight into the one memory pool all graphs share
  (they never run at once) and replayed, so graphs never need memory beside the pool's;
* accumulates the adapter gradients into the ``.grad`` tensors that exist before the first capture,
  so the trainer must zero them (never drop them) after each optimiser step.

Dropout and checkpointing's recompute stay random per replay: PyTorch registers the generator with
the graph and advances it each replay. If a capture fails (an operation that cannot be captured,
in a model family or a kernel), the check disagrees, or a run meets more than :data:`MAX_GRAPHS`
shapes, the graphs and their memory are dropped, the run says so once and goes on eagerly; the
micro-batch that tried is computed eagerly and counts.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from datakit.train import data as D

GRANULE = 512  # token counts are rounded up to a multiple of this
MAX_GRAPHS = 32  # shapes beyond this run eagerly (each graph costs a capture and its outputs' memory)
CHECK_RTOL = 1e-2  # the first replay's loss against the eager run of the same micro-batch (measured: <= 3e-4)
CHECKED = "nll_sum"  # the counter compared (every objective returns it)
# the gradients the check replay adds against those the eager run added; bf16 with flash
# attention's atomic backward puts two eager runs ~2% apart on a 7B model (BENCHMARKS.md), so only
# a gross difference (a recompute with other dropout masks, a stale input) fails
CHECK_GRAD_RTOL = 0.25


def _round(n: int) -> int:
    return max(GRANULE, -(-n // GRANULE) * GRANULE)


def padded_shape(n_tokens: int, n_seqs: int, n_targets: int | None = None) -> tuple[int, ...]:
    """(tokens, sequences[, targets]) of the graph that takes a batch of this size: tokens and
    targets rounded up to a multiple of :data:`GRANULE` (targets never above tokens), sequences
    (with the pad sequence when there are pad tokens) to a power of two, at least 4."""
    tokens = _round(n_tokens)
    need = n_seqs + (1 if tokens > n_tokens else 0)
    seqs = 4
    while seqs < need:
        seqs *= 2
    if n_targets is None:
        return tokens, seqs
    return tokens, seqs, min(tokens, _round(n_targets))


def static_tensors(batch: D.Batch, device, n_pairs: int | None = None) -> tuple[tuple[int, ...], dict[str, Any]]:
    """The batch in the fixed shapes of its graph: (shape key, tensors).

    Same keys as :func:`datakit.train.trainer.batch_tensors`, with the labelled positions padded
    up to the shape's target count (pad entries point at position 0, target 0) and ``weight``
    (1.0 for the real ones, 0.0 for the padding); with ``n_pairs`` (DPO) also ``pair_weight``
    (1.0 for the real pairs). ``max_len`` is the padded length, an upper bound the attention
    kernel accepts. Only the labelled positions go through the output layer, as without graphs."""
    n, s = batch.n_tokens, len(batch.cu_seqlens) - 1
    sel = [i for i, x in enumerate(batch.targets) if x != D.IGNORE]
    tokens, seqs, n_sel = padded_shape(n, s, len(sel))
    pad, tpad = tokens - n, n_sel - len(sel)
    cu = list(batch.cu_seqlens) + ([tokens] if pad else [])
    cu += [tokens] * (seqs + 1 - len(cu))
    t = {
        "input_ids": torch.tensor(batch.input_ids + [0] * pad, dtype=torch.long)[None],
        "position_ids": torch.tensor(batch.position_ids + list(range(pad)), dtype=torch.long)[None],
        "cu": torch.tensor(cu, dtype=torch.int32),
        "sel": torch.tensor(sel + [0] * tpad, dtype=torch.long),
        "targets": torch.tensor([batch.targets[i] for i in sel] + [0] * tpad, dtype=torch.long),
        "weight": torch.tensor([1.0] * len(sel) + [0.0] * tpad, dtype=torch.float32),
        # a pad entry adds 0 (its nll and count are weighted 0) to sequence 0
        "seq_of_target": torch.tensor([batch.seq_index[i] for i in sel] + [0] * tpad, dtype=torch.long),
    }
    if n_pairs is not None:
        t["pair_weight"] = torch.tensor([1.0] * n_pairs + [0.0] * (seqs // 2 - n_pairs), dtype=torch.float32)
    t = {k: v.to(device, non_blocking=True) for k, v in t.items()}
    t["max_len"] = tokens
    t["n_seqs"] = seqs
    return (tokens, seqs, n_sel), t


class GraphRunner:
    """Runs ``fn(tensors) -> {name: scalar tensor}`` (forward, loss and ``backward()``) as one
    CUDA graph per shape key. ``params``: the trainable parameters whose ``.grad`` the graphs
    accumulate into (allocated here, zero, before the first capture)."""

    def __init__(self, params, notice: Callable[[str], None] | None = None, max_graphs: int = MAX_GRAPHS):
        self.params = list(params)
        self.notice = notice or (lambda msg: None)
        self.max_graphs = max_graphs
        self.graphs: dict[Any, tuple[dict, torch.cuda.CUDAGraph, dict]] = {}
        self.pool = None
        self.failed: str | None = None
        self.failed_trace = ""  # the exception's traceback, when a capture or check failed
        self.n_graphs = 0  # graphs held when close() dropped them
        self.replays = 0
        self.eager = 0
        self.check_diff: float | None = None  # the first graph's replay against its eager run: loss
        self.check_grad_diff: float | None = None  # ... and the adapter gradients it adds
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    @property
    def active(self) -> bool:
        return self.failed is None

    def run(self, key, tensors: dict[str, Any], fn: Callable[[dict], dict]) -> dict[str, torch.Tensor]:
        entry = self.graphs.get(key)
        if entry is not None:
            inputs, graph, outputs = entry
            for k, v in tensors.items():
                if isinstance(v, torch.Tensor):
                    inputs[k].copy_(v, non_blocking=True)
            graph.replay()
            self.replays += 1
            return outputs
        if not self.failed and len(self.graphs) >= self.max_graphs:
            self._give_up(f"more than {self.max_graphs} micro-batch shapes", None)
        if self.failed:
            self.eager += 1
            return fn(tensors)
        if self.pool is None:
            self.eager += 1
            return self._first(key, tensors, fn)
        return self._another(key, tensors, fn)

    def _another(self, key, tensors: dict[str, Any], fn) -> dict[str, torch.Tensor]:
        """A new shape once a graph exists: captured straight into the shared pool and replayed for
        this micro-batch. An eager run first would need its own memory beside the pool's (for
        large micro-batches twice the peak); the first capture did the warm-up."""
        inputs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in tensors.items()}
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                outputs = fn(inputs)
        except Exception as e:  # noqa: BLE001 - as in _first: say it once, go on eagerly
            graph = None  # noqa: F841 - destroyed now: it unregisters from the generator
            self._give_up("capture failed", e)
            self.eager += 1
            return fn(tensors)
        self.graphs[key] = (inputs, graph, outputs)
        graph.replay()
        self.replays += 1
        return outputs

    def _give_up(self, why: str, e: BaseException | None) -> None:
        """Graphs off for the rest of the run: their memory freed, the random generator usable
        outside a graph again, one notice. (A capture runs nothing: the gradients are untouched.)"""
        import traceback

        detail = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300] if e is not None else ""
        self.failed = f"{why}: {detail}" if detail else why
        self.failed_trace = "".join(traceback.format_exception(e)) if e is not None else ""
        self.graphs.clear()
        self.pool = None
        _reset_generator()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        self.notice(f"CUDA graphs: {self.failed}; the run goes on without them")

    def _first(self, key, tensors: dict[str, Any], fn) -> dict[str, torch.Tensor]:
        """The run's first micro-batch: run eagerly on a side stream (the real work, and the warm-up
        capture needs), then capture a graph of the same call for the next ones, and replay it
        once on the same inputs and random state as a check: the loss within :data:`CHECK_RTOL`
        and the gradients within :data:`CHECK_GRAD_RTOL` of the eager run's. The gradients the
        check replay added are taken back."""
        rng = torch.cuda.get_rng_state()  # the check replays with the eager run's random numbers
        before = [p.grad.clone() for p in self.params]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = {k: v.detach().clone() for k, v in fn(tensors).items()}
        torch.cuda.current_stream().wait_stream(side)
        inputs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in tensors.items()}
        keep = [p.grad.clone() for p in self.params]  # with the eager run's share: what the step keeps
        graph = torch.cuda.CUDAGraph()
        replayed = False
        try:
            with torch.cuda.graph(graph):
                outputs = fn(inputs)
            after = torch.cuda.get_rng_state()
            torch.cuda.set_rng_state(rng)  # the same dropout masks as the eager run
            graph.replay()
            torch.cuda.synchronize()
            torch.cuda.set_rng_state(after)
            replayed = True
            a, b = float(outputs[CHECKED]), float(out[CHECKED])
            self.check_diff = abs(a - b) / max(abs(b), 1e-6)
            self.check_grad_diff = _grad_diff(before, keep, self.params)
            if not self.check_diff <= CHECK_RTOL:
                raise RuntimeError(f"the replayed graph's loss differs from the eager one by "
                                   f"{self.check_diff:.2e} (relative)")
            if not self.check_grad_diff <= CHECK_GRAD_RTOL:
                raise RuntimeError(f"the replayed graph's gradients differ from the eager ones by "
                                   f"{self.check_grad_diff:.2e} (relative)")
        except Exception as e:  # noqa: BLE001 - any capture failure: say it once, go on eagerly
            graph = None  # noqa: F841 - destroyed now: it unregisters from the generator
            self._restore(keep)
            self._give_up("the first graph's check failed" if replayed else "the first capture failed", e)
            return out
        self._restore(keep)
        self.pool = graph.pool()
        self.graphs[key] = (inputs, graph, outputs)
        return out

    def _restore(self, grads) -> None:
        """Put the gradients back as they were before the capture (and the check replay)."""
        torch.cuda.synchronize()
        with torch.no_grad():
            for p, g in zip(self.params, grads):
                p.grad.copy_(g)

    def close(self) -> None:
        """Training is over: drop the graphs and give their memory back (the summary stays)."""
        self.n_graphs = len(self.graphs) or self.n_graphs
        self.graphs.clear()
        self.pool = None
        torch.cuda.synchronize()
        torch.cuda.empty_cache()

    def summary(self) -> dict[str, Any]:
        return {"graphs": len(self.graphs) or self.n_graphs, "replays": self.replays, "eager": self.eager,
                "check_rel_diff": self.check_diff, "check_grad_rel_diff": self.check_grad_diff, **({"failed": self.failed} if self.failed else {})}


def _grad_diff(before, mid, params) -> float:
    """||replayed - eager|| / ||eager|| of the gradient contributions: eager = mid - before,
    replayed = now - mid."""
    num = den = 0.0
    with torch.no_grad():
        for b, m, p in zip(before, mid, params):
            e = (m - b).float()
            num += float(((p.grad.float() - m) - e).square().sum())
            den += float(e.square().sum())
    return (num / den) ** 0.5 if den > 0 else 0.0


def _reset_generator() -> None:
    """After a failed capture: a capture that broke off leaves the device's default random generator
    marked as capturing, and every later random op (dropout) outside a graph would fail with
    "Offset increment outside graph capture". Give it a fresh state with the same seed and offset."""
    try:
        gen = torch.cuda.default_generators[torch.cuda.current_device()]
        gen.graphsafe_set_state(gen.clone_state())
    except (AttributeError, RuntimeError):  # an older torch without graph-safe generator states
        pass


MODES = ("auto", "on", "off")


def check(mode: str, device, shard: bool) -> None:
    """Before the model loads: ``on`` where graphs cannot run is a one-line error."""
    from datakit.errors import UserError

    if mode not in MODES:
        raise UserError(f"unknown cuda_graphs {mode!r} (use one of {', '.join(MODES)})", field="cuda_graphs")
    if mode == "on" and getattr(device, "type", str(device)) != "cuda":
        raise UserError("--cuda-graphs on: CUDA graphs need a CUDA GPU", field="cuda_graphs")
    if mode == "on" and shard:
        raise UserError("--cuda-graphs on: not with --shard (FSDP gathers weights inside the step)",
                        field="cuda_graphs")


def make_runner(mode: str, device, shard: bool, master, notice=None) -> GraphRunner | None:
    """The run's graph runner, or None (off, no CUDA, sharded, or float32 adapters whose
    gradients the optimiser owns directly)."""
    check(mode, device, shard)
    if mode == "off" or getattr(device, "type", str(device)) != "cuda" or shard or master.same:
        return None
    return GraphRunner(master.model_params, notice)
