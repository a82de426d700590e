"""Plot for BENCHMARKS.md: the two default-config goals of issue 15 after the seeded dropout and
the memory plan.

    python bench/plot_fit.py [--results bench/results] [--out bench/results/fit_goals.png]

Left: the 7B shape, best micro-batch with the default LoRA dropout (0.05), tokens/s per
micro-batch before (dropout keeping its mask: ``train_gpu_h100_graphs_final.json``) and after
(``train_gpu_h100_seeded_dropout.json``), then with the mask made inside the LoRA products and the
loss kernel (``…_dropout_gemm.json``), with ``--lora-dropout 0`` (``…_dropout_gemm_drop0.json``)
and the 14,400 goal. Right: the Qwen2.5-1.5B shape's default SFT through ``datakit train`` by
stage (``train_small_h100.json``, ``…_graphs_final.json``, ``…_fit.json``, ``…_nll_kernel.json``) against 25% of its
bound.
"""

from __future__ import annotations

import json
from pathlib import Path

from _plot import start

BOUND_1P5B = 129_900  # tokens/s: 6·N FLOPs a token at the H100's measured bf16 rate (BENCHMARKS.md)


def _rows(path: Path) -> dict[int, float]:
    """Micro-batch -> tokens/s without checkpointing (0: out of memory; missing: not run)."""
    d = json.loads(path.read_text())
    return {r["micro_batch"]: r.get("tokens_per_s") or 0 for r in d["datakit"]["rows"] if r["config"] == "datakit-no-ckpt"}


def _default_sft(path: Path, name: str = "sft-packed-mb1 (default)") -> float:
    d = json.loads(path.read_text())
    return next(r["tokens_per_s"] for r in d["runs"] if r["run"] == name)


def main() -> None:
    res, out, plt = start(__doc__, "bench/results/fit_goals.png")
    before = _rows(res / "train_gpu_h100_graphs_final.json")
    after = _rows(res / "train_gpu_h100_seeded_dropout.json")
    inside = _rows(res / "train_gpu_h100_dropout_gemm.json")
    zero = _rows(res / "train_gpu_h100_dropout_gemm_drop0.json")
    fig, (a, b) = plt.subplots(1, 2, figsize=(12.5, 4.6))
    mbs = [4, 6]  # micro-batch 8 does not fit with any of them
    width = 0.2
    for k, (label, rows, color) in enumerate([("dropout 0.05, mask kept", before, "#bbbbbb"),
                                               ("dropout 0.05, seeded mask as a tensor", after, "#9ecae1"),
                                               ("dropout 0.05, mask inside the products\n+ loss kernel (now, default)",
                                                inside, "#1f77b4"),
                                               ("now, --lora-dropout 0", zero, "#c6dbef")]):
        xs = [i + (k - 1.5) * width for i in range(len(mbs))]
        vals = [rows.get(m) for m in mbs]
        a.bar(xs, [v or 0 for v in vals], width, label=label, color=color)
        for x, v in zip(xs, vals):
            text = "not run" if v is None else (f"{v / 1000:.1f}k" if v else "OOM")
            a.text(x, v + 150 if v else 300, text, ha="center", fontsize=7, rotation=0 if v else 90)
    a.axhline(14_400, color="crimson", ls="--", lw=1)
    a.text(-0.45, 14_650, "goal 14,400", color="crimson", fontsize=8)
    a.set_xticks(range(len(mbs)), [f"micro-batch {m}" for m in mbs])
    a.set_ylabel("tokens/s (no checkpointing)")
    a.set_ylim(0, 21_000)
    a.set_title("Qwen2.5-7B shape, QLoRA, one H100")
    a.legend(fontsize=8, loc="upper right")
    stages = [("before graphs", _default_sft(res / "train_small_h100.json")),
              ("CUDA graphs", _default_sft(res / "train_small_h100_graphs_final.json")),
              ("+ memory plan", _default_sft(res / "train_small_h100_fit.json")),
              ("+ loss kernel\n(now, default)", _default_sft(res / "train_small_h100_nll_kernel.json")),
              ("now, --fit off", _default_sft(res / "train_small_h100_nll_kernel.json", "sft-packed-mb1 --fit off"))]
    colors = ["#bbbbbb", "#9ecae1", "#6baed6", "#1f77b4", "#9ecae1"]
    b.bar(range(len(stages)), [v for _, v in stages], color=colors)
    for i, (_, v) in enumerate(stages):
        b.text(i, v + 400, f"{v / 1000:.1f}k\n{v / BOUND_1P5B:.0%}", ha="center", fontsize=8)
    b.axhline(0.25 * BOUND_1P5B, color="crimson", ls="--", lw=1)
    b.text(-0.4, 0.25 * BOUND_1P5B + 700, "goal: 25% of the bound", color="crimson", fontsize=8)
    b.set_xticks(range(len(stages)), [s for s, _ in stages], fontsize=8)
    b.set_ylabel("tokens/s")
    b.set_ylim(0, 45_000)
    b.set_title("Qwen2.5-1.5B shape, default SFT via `datakit train`")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
