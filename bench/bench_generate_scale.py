"""`datakit generate --num 100000` against the scripted server, bound by the teacher's rate limits.

    python bench/bench_generate_scale.py [--num 100000] [--rpm 24000] [--tpm 0] [--check 5]

The scripted server (``datakit.teachers.fake_server --latency 0.2 --lists varied``: 200 ms per
answer, task lists of varied made-up tasks so that 100k distinct ones pass the ROUGE-L filter)
runs as its own process; ``datakit generate`` runs as another, with a config whose teacher has
``rpm``/``tpm`` limits and enough concurrency and requests per round that the limits, not the
client, decide the pace. While it runs, the bench samples the generate process's RSS and the
records committed so far (lines of records.jsonl) every second.

Printed: wall time beside the time the limits allow (the larger of requests / rpm and tokens /
tpm, from the run's own counters in state.json; the token bucket starts full with a 10 s burst,
so a limit-bound run can beat it by up to 10 s), the RSS curve as a table, and checks of the
in-loop ROUGE-L filter against rouge-score: every ``too_similar`` drop in a sample of 300 is
confirmed (score above the threshold against the nearest kept task it names), and ``--check``
accepted tasks from the end of the run are compared with rouge-score against every task kept
before them (all below the threshold). The curve is saved to bench/results/generate_scale.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path("/tmp/datakit-bench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def write_config(path: Path, port: int, a) -> None:
    limits = f"rpm = {a.rpm}\n" + (f"tpm = {a.tpm}\n" if a.tpm else "")
    path.write_text(f"""concurrency = {a.concurrency}

[[teachers]]
name = "scripted"
base_url = "http://127.0.0.1:{port}/v1"
model = "fake"
{limits}
[generate]
num = {a.num}
requests_per_round = {a.requests_per_round}
rouge_tokenizer = "rouge"
""")


def run(a) -> dict:
    DATA.mkdir(parents=True, exist_ok=True)
    run_dir = DATA / f"generate_{a.num}"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    port = free_port()
    cfg = DATA / f"generate_{a.num}.toml"
    write_config(cfg, port, a)
    srv = subprocess.Popen([sys.executable, "-m", "datakit.teachers.fake_server", "--port", str(port),
                            "--latency", "0.2", "--lists", "varied"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    srv.stdout.readline()  # "fake OpenAI-compatible server on ..."
    curve = []
    try:
        t0 = time.perf_counter()
        gen = subprocess.Popen([sys.executable, "-m", "datakit", "generate", "--out", str(run_dir),
                                "--config", str(cfg)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
        records, seen = 0, 0
        rec_path = run_dir / "records.jsonl"
        while gen.poll() is None:
            time.sleep(1.0)
            if rec_path.exists():
                with open(rec_path, "rb") as f:
                    f.seek(seen)
                    chunk = f.read()
                records += chunk.count(b"\n")
                seen += len(chunk)
            rss = rss_mb(gen.pid)
            if rss:  # 0: the process has just exited
                curve.append((time.perf_counter() - t0, records, rss))
        wall = time.perf_counter() - t0
        err = gen.stderr.read().decode(errors="replace")
        if gen.returncode != 0:
            raise SystemExit(f"generate failed ({gen.returncode}): {err[-2000:]}")
    finally:
        srv.terminate()
        srv.wait()
    state = json.loads((run_dir / "state.json").read_text())
    return {"wall": wall, "curve": curve, "state": state, "run_dir": run_dir}


def rouge_checks(run_dir: Path, n_check: int, threshold: float = 0.7) -> str:
    from rouge_score import rouge_scorer

    from datakit.seeds import load_seeds
    from datakit.config import DEFAULT_SEEDS

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    tok = scorer._tokenizer
    kept = [(s.id, s.instruction) for s in load_seeds(str(DEFAULT_SEEDS))]
    recs = [json.loads(x) for x in open(run_dir / "records.jsonl")]
    kept += [(r["id"], r["instruction"]) for r in recs]
    # tasks that passed the filter but failed later still count as kept (see loop.py)
    rej = [json.loads(x) for x in open(run_dir / "rejected.jsonl")]
    kept += [(r["id"], r["instruction"]) for r in rej
             if r.get("reason") in ("teacher_error", "instance_unparsed", "copied_example")
             and "instance" in r.get("lineage", {})]
    text = dict(kept)
    rng = random.Random(0)
    drops = [r for r in rej if r.get("reason") == "too_similar"]
    sample = rng.sample(drops, min(300, len(drops)))
    from rouge_score.rouge_scorer import _score_lcs

    confirmed = 0
    for r in sample:
        v = next(f for f in r["filters"] if f["filter"] == "rouge_l")
        s = _score_lcs(tok.tokenize(text[v["detail"]["nearest"]]), tok.tokenize(r["instruction"])).fmeasure
        confirmed += s > threshold
    # accepted tasks near the end, against every task kept before them (ids sort in run order)
    order = sorted(kept, key=lambda x: (not x[0].startswith("g"), x[0]))
    seeds = [k for k in kept if not k[0].startswith("g")]
    gen = sorted(k for k in kept if k[0].startswith("g"))
    worst = 0.0
    t0 = time.perf_counter()
    for rid, inst in gen[-n_check:]:
        toks = tok.tokenize(inst)
        before = seeds + [g for g in gen if g[0] < rid]
        for _, other in before:
            worst = max(worst, _score_lcs(tok.tokenize(other), toks).fmeasure)
    del order
    return (f"ROUGE-L drops confirmed by rouge-score: {confirmed}/{len(sample)} "
            f"(of {len(drops):,} too_similar drops); {n_check} last accepted tasks vs every earlier "
            f"kept task ({len(gen) - 1:,}): highest rouge-score ROUGE-L F {worst:.4f} "
            f"(threshold {threshold}, {time.perf_counter() - t0:.0f} s)")


def plot(curve, wall: float, bound: float, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [c[0] for c in curve]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(t, [c[1] / 1000 for c in curve], color="tab:blue", label="records committed (k)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("records (thousands)", color="tab:blue")
    ax.axvline(bound, color="gray", linestyle="--", linewidth=1, label=f"rate-limit bound {bound:.0f} s")
    ax2 = ax.twinx()
    ax2.plot(t, [c[2] for c in curve], color="tab:red", label="RSS of datakit generate (MiB)")
    ax2.set_ylabel("RSS (MiB)", color="tab:red")
    ax2.set_ylim(0, max(c[2] for c in curve) * 1.2)
    fig.legend(loc="upper left", bbox_to_anchor=(0.1, 0.9))
    ax.set_title(f"datakit generate, {curve[-1][1]:,} records in {wall:.0f} s (scripted server, 2 cores)")
    fig.tight_layout()
    fig.savefig(dest, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--num", type=int, default=100_000)
    p.add_argument("--rpm", type=float, default=24_000)
    p.add_argument("--tpm", type=float, default=0)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--requests-per-round", type=int, default=64)
    p.add_argument("--check", type=int, default=5)
    a = p.parse_args()
    print(f"# bench_generate_scale  {time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()}  "
          f"{os.cpu_count()} cores  python {platform.python_version()}  load at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    res = run(a)
    st = res["state"]
    t = next(iter(st["teachers"].values()))
    tokens = t["prompt_tokens"] + t["completion_tokens"]
    bounds = {"rpm": t["requests"] / a.rpm * 60}
    if a.tpm:
        bounds["tpm"] = tokens / a.tpm * 60
    bound = max(bounds.values())
    wall = res["wall"]
    print(f"records {st['accepted']:,} in {st['round']:,} rounds; requests {t['requests']:,}, tokens "
          f"{tokens:,}; rejected {json.dumps(st['rejected'])}")
    print(f"wall {wall:.1f} s; rate limits allow {bound:.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in bounds.items())}); "
          f"wall / bound = {wall / bound:.3f}; load at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    curve = res["curve"]
    print("\n| seconds | records | RSS MiB |\n|---:|---:|---:|")
    step = max(1, len(curve) // 12)
    for c in curve[::step] + ([curve[-1]] if (len(curve) - 1) % step else []):
        print(f"| {c[0]:.0f} | {c[1]:,} | {c[2]:.0f} |")
    dest = ROOT / "bench" / "results" / "generate_scale.png"
    plot(curve, wall, bound, dest)
    dest.with_suffix(".json").write_text(json.dumps({"wall": wall, "bound": bound, "curve": curve}))
    print(f"\nplot: {dest.relative_to(ROOT)}")
    print(rouge_checks(res["run_dir"], a.check))


if __name__ == "__main__":
    main()
