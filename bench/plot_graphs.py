"""Plot for BENCHMARKS.md: the 7B QLoRA step at micro-batch 1 with checkpointing, eager and as CUDA graphs.

    python bench/plot_graphs.py [--results bench/results] [--out bench/results/graphs_mb1.png]

Reads bench/train_gpu.py's JSON of three interleaved baseline/datakit runs plus an eager datakit
run (``train_gpu_h100_graphs_mb1_x3.json``) and the Qwen2.5-1.5B ``datakit train`` runs
(``train_small_h100_graphs.json``); draws every measured step time and the tokens/s per run.
"""

from __future__ import annotations

import json

from _plot import start


def main() -> None:
    res, out, plt = start(__doc__, "bench/results/graphs_mb1.png")
    big = json.loads((res / "train_gpu_h100_graphs_mb1_x3.json").read_text())
    groups = {"transformers + peft + bnb\n(baseline)": [], "datakit eager": [], "datakit, CUDA graphs\n(default)": []}
    for key, run in big.items():
        if not isinstance(run, dict) or "rows" not in run:
            continue
        row = next(r for r in run["rows"] if r["micro_batch"] == 1 and not r.get("oom"))
        name = ("transformers + peft + bnb\n(baseline)" if key.startswith("baseline") else
                "datakit eager" if key == "datakit_eager" else "datakit, CUDA graphs\n(default)")
        groups[name].extend(row["step_times"])
    small = json.loads((res / "train_small_h100_graphs.json").read_text())
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, times) in enumerate(groups.items()):
        a.scatter([i] * len(times), [2048 / t for t in times], alpha=0.6, s=18)
    a.set_xticks(range(len(groups)), list(groups), fontsize=8)
    a.set_ylabel("tokens/s per step")
    a.set_ylim(0, None)
    a.set_title("7B shape, micro-batch 1, checkpointing (H100)", fontsize=10)
    names, vals, colors = [], [], []
    for r in small["runs"]:
        if r.get("rc") != 0:
            continue
        names.append(r["run"].replace(" (default)", "").replace(" --cuda-graphs off", "\ngraphs off"))
        vals.append(r["tokens_per_s"])
        colors.append("tab:gray" if r.get("cuda_graphs") == "off" else "tab:blue")
    b.barh(names, vals, color=colors)
    b.set_xlabel("tokens/s (median of steps 3-12)")
    b.set_title("Qwen2.5-1.5B shape through datakit train", fontsize=10)
    b.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print("wrote", out)


if __name__ == "__main__":
    main()
