"""`datakit dedup` at 1M, 3M and 10M short documents: wall time, CPU time and peak memory.

    python bench/bench_dedup_scale.py [N ...]        (default: 1000000 3000000 10000000)

Each N: the bench's synthetic corpus (``_synth.Synth(3).corpus(N, dup_rate=0.1)``, planted near
duplicates with 0-3 word edits) is written to /tmp/datakit-bench/dedup_N.jsonl, then
``python -m datakit dedup FILE -o OUT`` runs as its own process (streamed path: the inputs are
above ``DATAKIT_STREAM_BYTES``, which the bench sets to 0). Memory is sampled every 0.5 s,
summed over the process tree (the streamed path runs forked workers that share the texts):
PSS (shared pages split between processes: the memory really used) and RSS; CPU seconds are
the children's user + system time. The load average (``uptime``)
is printed beside each row: the machine is shared.

Quality, read from the output files (a kept row is its own cluster's representative, a removed
row names its representative in ``duplicate_of``):

* recall on planted pairs: of the planted copies whose exact Jaccard (Python sets of word
  3-grams, independent of datakit) with their source is at least 0.7, the share where the
  output does not keep both (at least one of the two removed); beside it, the share that ended
  in the source's cluster (the measure before clusters were split: a copy whose source is
  removed as a duplicate of a third document it is itself far from is rightly kept, and
  counts as a miss there);
* removed below the threshold: removed rows whose similarity to the representative they name
  is below 0.7 (before clusters were split, members joined through a chain of pairs were
  removed wholesale: 0.14 of the removals at 1M, 0.23 at 10M), and the same share checked
  independently on a sample of 20,000 removals with Python sets of word 3-grams;
* at 1M only, the in-memory path and the Ray engine (``--engine ray``, local Ray) are run too
  and their output files are compared byte for byte with the streamed local ones.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path("/tmp/datakit-bench")
ROOT = Path(__file__).resolve().parent.parent
THRESHOLD = 0.7


def shingles(text: str, n: int = 3) -> set[str]:
    from datakit.curate import minhash as mh

    w = mh._WORDS.findall(mh.normalize(text))
    return {" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


def make_corpus(n: int) -> tuple[Path, Path]:
    """The corpus file and a file of planted (copy, source) pairs at or above the threshold."""
    from datakit.curate._synth import Synth

    path, planted = DATA / f"dedup_{n}.jsonl", DATA / f"dedup_{n}.planted.json"
    if path.exists() and planted.exists():
        return path, planted
    DATA.mkdir(parents=True, exist_ok=True)
    texts, src = Synth(3).corpus(n, dup_rate=0.1)
    with open(path, "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"r{i}", "instruction": t}) + "\n")
    pairs = []
    for i, j in enumerate(src):
        if j >= 0:
            a, b = shingles(texts[i]), shingles(texts[j])
            if len(a & b) / len(a | b) >= THRESHOLD:
                pairs.append((i, j))
    planted.write_text(json.dumps(pairs))
    return path, planted


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of ``pid`` and all its descendants, summed (MiB). The workers share the
    texts with the main process (fork, copy on write): RSS counts those pages once per
    process, PSS splits them between the processes, so the PSS sum is the memory really used."""
    import psutil

    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        return 0.0, 0.0
    rss = pss = 0
    for p in procs:
        try:
            m = p.memory_full_info()
            rss, pss = rss + m.rss, pss + m.pss
        except psutil.Error:
            pass
    return rss / 2**20, pss / 2**20


def run_dedup(path: Path, out: Path, stream_bytes: int, *extra: str):
    """Wall seconds, CPU seconds, peak PSS and peak RSS (MiB, summed over the process tree,
    sampled; the RSS at least the kernel's peak of the largest process) and the curve of
    (seconds, RSS, PSS)."""
    env = {**os.environ, "DATAKIT_STREAM_BYTES": str(stream_bytes)}
    cmd = [sys.executable, "-m", "datakit", "dedup", str(path), "-o", str(out), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    curve = []
    while proc.poll() is None:
        curve.append((time.perf_counter() - t0, *memory_mb(proc.pid)))
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"dedup failed ({proc.returncode}): {err[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    peak_rss = max([after.ru_maxrss / 1024 if after.ru_maxrss > before.ru_maxrss else 0.0]
                   + [c[1] for c in curve])
    return wall, cpu, max(c[2] for c in curve), peak_rss, curve


def quality(path: Path, out: Path, planted: Path) -> tuple[int, int, float, float, float, float]:
    """(removed rows, planted pairs, recall (not both kept), recall (same cluster), share removed
    below the threshold as datakit reports it, the same share on a sample checked here)."""
    import random

    rep: dict[int, int] = {}
    below = 0
    removed_path = out.with_name(out.name + ".removed.jsonl")
    with open(removed_path) as f:
        for line in f:
            r = json.loads(line)
            rep[int(r["id"][1:])] = int(r["duplicate_of"][1:])
            below += r["similarity"] < THRESHOLD
    pairs = json.loads(planted.read_text())
    caught = sum(i in rep or j in rep for i, j in pairs)
    same = sum(rep.get(i, i) == rep.get(j, j) for i, j in pairs)
    sample = random.Random(0).sample(sorted(rep), min(20_000, len(rep)))
    want = set(sample) | {rep[i] for i in sample}
    text: dict[int, str] = {}
    with open(path) as f:
        for k, line in enumerate(f):
            if k in want:
                text[k] = json.loads(line)["instruction"]
    def jac(a: str, b: str) -> float:
        x, y = shingles(a), shingles(b)
        return len(x & y) / len(x | y)
    far = sum(jac(text[i], text[rep[i]]) < THRESHOLD for i in sample)
    n_p = max(1, len(pairs))
    return (len(rep), len(pairs), caught / n_p, same / n_p, below / max(1, len(rep)),
            far / max(1, len(sample)))


def main() -> None:
    ns = [int(a) for a in sys.argv[1:]] or [1_000_000, 3_000_000, 10_000_000]
    print(f"# bench_dedup_scale  {time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()}  "
          f"{os.cpu_count()} cores  python {platform.python_version()}")
    results = []
    for n in ns:
        path, planted = make_corpus(n)
        out = DATA / f"dedup_{n}.out.jsonl"
        load = os.getloadavg()
        wall, cpu, peak, peak_rss, curve = run_dedup(path, out, 0)
        load_end = os.getloadavg()
        removed, n_pairs, recall, same_cluster, below, below_checked = quality(path, out, planted)
        if n == 1_000_000:
            for name, stream_bytes, extra in (("in memory", 1 << 62, ()),
                                              ("streamed, --engine ray", 0, ("--engine", "ray"))):
                other = DATA / f"dedup_{n}.other.jsonl"
                mwall, mcpu, mpeak, _, _ = run_dedup(path, other, stream_bytes, *extra)
                same = all(Path(str(a)).read_bytes() == Path(str(b)).read_bytes() for a, b in
                           ((out, other), (f"{out}.removed.jsonl", f"{other}.removed.jsonl")))
                print(f"{name} at {n:,}: {mwall:.1f} s ({mcpu:.0f} CPU s), peak PSS {mpeak:,.0f} MiB; "
                      f"output identical to the streamed local one: {same}", flush=True)
        results.append((n, wall, cpu, peak, peak_rss, removed, n_pairs, recall, same_cluster, below,
                        below_checked, load, load_end, curve))
        print(f"N={n:,}: {wall:.1f} s ({cpu:.0f} CPU s), peak PSS {peak:,.0f} MiB (RSS summed {peak_rss:,.0f}), "
              f"removed {removed:,}, planted pairs {n_pairs:,}, recall {recall:.4f} (same cluster "
              f"{same_cluster:.4f}), removed below {THRESHOLD}: {below:.4f} (checked sample {below_checked:.4f}), "
              f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} -> {load_end[0]:.2f}", flush=True)
        out.unlink(missing_ok=True)
    print(f"\n| docs | wall s | CPU s | peak memory MiB (PSS, all processes) | removed | recall: planted pairs >= {THRESHOLD} "
          f"not both kept (same cluster) | removed below {THRESHOLD} to its representative (checked sample) "
          "| load avg (1 min) at start / end |"
          "\n|---:|---:|---:|---:|---:|---:|---:|---|")
    for n, wall, cpu, peak, _, removed, n_pairs, recall, same_cluster, below, below_checked, load, load_end, _ in results:
        print(f"| {n:,} | {wall:.0f} | {cpu:.0f} | {peak:,.0f} | {removed:,} | {recall:.4f} ({same_cluster:.4f}; "
              f"{n_pairs:,} pairs) | {below:.4f} ({below_checked:.4f}) | {load[0]:.2f} / {load_end[0]:.2f} |")
    plot(results)


def plot(results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for n, wall, *_, curve in results:
        t = [c[0] for c in curve]
        ax.plot(t, [c[2] / 1024 for c in curve], label=f"{n / 1e6:g}M docs ({wall:.0f} s)")
    ax.axhline(4, color="red", linestyle="--", linewidth=1, label="4 GiB goal")
    ax.set_xlabel("seconds")
    ax.set_ylabel("memory of `datakit dedup` and its workers (PSS, GiB)")
    ax.set_title("datakit dedup, streamed, 2 cores")
    ax.legend()
    dest = ROOT / "bench" / "results" / "dedup_scale.png"
    fig.tight_layout()
    fig.savefig(dest, dpi=110)
    print(f"\nplot: {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
