"""``datakit evolve`` (Evol-Instruct) and ``datakit converse`` (multi-turn conversations): each
reads a run and writes a derived run directory (see :mod:`datakit.generate.derived`)."""

from __future__ import annotations

import asyncio
import shlex
import sys

import click

from datakit.cli.common import config_from_options, console, pairs_table, stage, table, teacher_options


def _command() -> str:
    return "datakit " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _report(title: str, summary, st) -> None:
    st.counts = {"accepted": summary.accepted, "rounds": summary.rounds, "rejected": dict(summary.rejected),
                 "resumed_from_round": summary.resumed_from_round}
    st.usage_from(summary.teachers)
    tot = {k: sum(t.get(k, 0) for t in summary.totals.values())
           for k in ("requests", "cache_hits", "failures", "cost")}
    rows = [("run directory", summary.run_dir), ("source", summary.source),
            ("accepted records", summary.accepted), ("rounds", summary.rounds)]
    if summary.resumed_from_round:
        rows.append(("resumed after round", summary.resumed_from_round))
    rows += [("requests (paid)", tot["requests"]), ("cache hits", tot["cache_hits"]),
             ("failed requests", tot["failures"]), ("cost (USD)", f"{tot['cost']:.4f}"),
             ("wall time (this session)", f"{summary.seconds:.1f} s")]
    rows += [(f"rejected: {reason}", n) for reason, n in summary.rejected.most_common()]
    console.print(pairs_table(f"{title}: summary (whole run)", rows))
    if summary.teachers:
        console.print(table("teachers (this session)", summary.teachers))


def _on_status(msg: str) -> None:
    console.print(f"[dim]{msg}[/dim]")


@click.command()
@click.argument("source", type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), help="Run directory to write (default SOURCE/evolve). "
              "Rerun the same command to resume; a larger --rounds continues.")
@click.option("--rounds", type=int, default=3, show_default=True, help="Rounds of evolution.")
@click.option("--mutations", default="depth,breadth", show_default=True,
              help="Families (depth, breadth) or in-depth methods (constraints, deepen, concretise, "
                   "reasoning, complicate_input), comma-separated.")
@click.option("--parent-threshold", type=float, default=0.9, show_default=True,
              help="ROUGE-L F to the parent above which an evolution adds nothing (no_change).")
@click.option("--limit", type=int, help="Evolve only the first N accepted records of SOURCE.")
@click.option("--seed", "rng_seed", type=int, help="Random seed for the choice of mutation (default 0).")
@teacher_options
def evolve(source, out, rounds, mutations, parent_threshold, limit, rng_seed, config_path, base_url, model,
           api_key_env, concurrency):
    """Evol-Instruct: rewrite the accepted tasks of SOURCE (a run) to be harder or new."""
    from datakit.generate.derived import default_out
    from datakit.generate.evolve import EvolveOptions, evolve as run_evolve

    cfg = config_from_options(config_path, base_url, model, api_key_env, concurrency, {"generate.seed": rng_seed})
    opts = EvolveOptions(rounds=rounds, mutations=mutations, parent_threshold=parent_threshold, limit=limit)
    out = out or default_out(source, "evolve")
    with stage("evolve", [source], [out]) as st:
        summary = asyncio.run(run_evolve(cfg, source, opts, out=out, command=_command(), on_status=_on_status))
        _report("evolve", summary, st)


@click.command()
@click.argument("source", type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), help="Run directory to write (default SOURCE/converse). "
              "Rerun the same command to resume.")
@click.option("--turns", type=int, default=3, show_default=True, help="User turns per conversation, the first included.")
@click.option("--limit", type=int, help="Only the first N accepted records of SOURCE.")
@click.option("--system", help="A system message to open every conversation.")
@click.option("--batch", type=int, default=32, show_default=True, help="Conversations committed together (one round).")
@teacher_options
def converse(source, out, turns, limit, system, batch, config_path, base_url, model, api_key_env, concurrency):
    """Multi-turn conversations: a simulated user follows up on each accepted task of SOURCE."""
    from datakit.generate.converse import ConverseOptions, converse as run_converse
    from datakit.generate.derived import default_out

    cfg = config_from_options(config_path, base_url, model, api_key_env, concurrency)
    opts = ConverseOptions(turns=turns, limit=limit, system=system, batch=batch)
    out = out or default_out(source, "converse")
    with stage("converse", [source], [out]) as st:
        summary = asyncio.run(run_converse(cfg, source, opts, out=out, command=_command(), on_status=_on_status))
        _report("converse", summary, st)


COMMANDS = [evolve, converse]
