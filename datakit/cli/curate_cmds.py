"""CLI commands for curation: ``filter`` (rules + ROUGE-L novelty) and ``dedup`` (MinHash/LSH,
decontamination). Thin: options -> datakit.curate.dedup -> rich progress and summary."""

from __future__ import annotations

import click

from datakit.cli.common import stage
from datakit.errors import UserError


def _fields(value: str) -> tuple[str, ...]:
    out = tuple(f.strip() for f in value.split(",") if f.strip())
    if not out:
        raise UserError("--fields needs at least one field name")
    return out


class _Greedy(click.Option):
    """An option that takes every following argument up to the next option, so that a shell
    glob works: ``--against eval/*.jsonl``."""

    def add_to_parser(self, parser, ctx):
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            # click's parser keeps its options in private dicts (pinned click version): fail
            # loudly if that moves, rather than silently taking one file of a glob.
            if not hasattr(parser, "_long_opt") or not hasattr(parser, "_short_opt"):
                raise RuntimeError("click's OptionParser no longer has _long_opt/_short_opt: "
                                   "update _Greedy for this click version")
            opt = parser._long_opt.get(name) or parser._short_opt.get(name)
            if opt is None:
                raise RuntimeError(f"click did not register {name} where _Greedy expects it")
            orig = opt.process

            def process(value, state, orig=orig):
                orig(value, state)
                while state.rargs and not state.rargs[0].startswith("-"):
                    orig(state.rargs.pop(0), state)

            opt.process = process


def _progress(total: int, label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    p = Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 transient=True)
    task = p.add_task(label, total=total)
    return p, task


def _log_counts(st, result, written, reviewed=None) -> None:
    s = result.summary()
    st.outputs = [str(p) for p in written]
    st.counts = {"in": s["documents_in"], "kept": s["kept"], "removed": s["reasons"],
                 "clusters": s["clusters"], "against": s["against"], "reviews": reviewed or {}}


def _summary(title: str, result, written, reviewed=None) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result.summary()
    t = Table(title=title, show_header=False)
    t.add_row("documents in", str(s["documents_in"]))
    if title.startswith("dedup"):
        t.add_row("clusters found", str(s["clusters"]))
    t.add_row("kept", str(s["kept"]))
    t.add_row("removed", str(s["removed"]))
    for reason, n in sorted(s["reasons"].items()):
        t.add_row(f"  {reason}", str(n))
    for f, n in s["against"].items():
        t.add_row(f"  matched {f}", str(n))
    for k, n in sorted((reviewed or {}).items()):
        t.add_row(f"{k.replace('_', ' ')} (reviews.jsonl, before {title.split()[0]})", str(n))
    for p in written:
        t.add_row("wrote", str(p))
    Console(stderr=True).print(t)


@click.command("filter")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", required=True, help="Output file (.jsonl or .parquet) or folder/.")
@click.option("--rouge-l", "rouge_l", type=float, default=0.7, show_default=True,
              help="Drop a record whose ROUGE-L F against an earlier kept one is above this.")
@click.option("--tokenizer", type=click.Choice(["rouge", "cjk"]), default="rouge", show_default=True,
              help="'rouge' = rouge-score's (exact parity, drops non-ASCII); 'cjk' = zh by characters.")
@click.option("--fields", default="instruction", show_default=True,
              help="Comma-separated fields compared (e.g. instruction,input).")
@click.option("--rules/--no-rules", default=True, show_default=True,
              help="Apply the rule filters (length, blacklist, language, repeats, non-printable).")
@click.option("--min-words", type=int, default=3, show_default=True)
@click.option("--max-words", type=int, default=150, show_default=True)
@click.option("--language", type=click.Choice(["zh", "en"]), default=None,
              help="Require this script share in the instruction.")
def filter_cmd(inputs, out, rouge_l, tokenizer, fields, rules, min_words, max_words, language):
    """Rule filters and the greedy ROUGE-L novelty filter over record files, in input order."""
    from datakit.curate.dedup import filter_rows, load_inputs, write_outputs
    from datakit.curate.rules import RulesConfig

    flds = _fields(fields)
    data = load_inputs(inputs, flds)
    cfg = RulesConfig(min_words=min_words, max_words=max_words, language=language) if rules else None
    with stage("filter", list(inputs), [out]) as st:
        p, task = _progress(len(data.rows), "filter")
        with p:
            result = filter_rows(data.rows, threshold=rouge_l, tokenizer=tokenizer, fields=flds,
                                 rules=cfg, progress=lambda k: p.update(task, completed=k))
        written = write_outputs(data, result, out, "filter")
        _log_counts(st, result, written, data.reviewed)
    _summary("filter", result, written, data.reviewed)


@click.command("dedup")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", required=True, help="Output file (.jsonl or .parquet) or folder/.")
@click.option("--against", multiple=True, cls=_Greedy, help="Remove records near-duplicating items of these "
              "files (eval sets, seeds). Repeat or give several after one --against.")
@click.option("--threshold", type=float, default=0.7, show_default=True,
              help="Estimated Jaccard at or above which two records are duplicates.")
@click.option("--num-perm", type=int, default=128, show_default=True)
@click.option("--shingle", type=click.Choice(["word", "char"]), default="word", show_default=True)
@click.option("--ngram", type=int, default=None, help="Shingle size [default: 3 words / 5 chars].")
@click.option("--fields", default="instruction", show_default=True,
              help="Comma-separated fields compared (e.g. instruction,input,output).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="'ray' connects to RAY_ADDRESS, else starts a local Ray.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Confirm each LSH candidate pair with the exact Jaccard of its shingle sets.")
def dedup_cmd(inputs, out, against, threshold, num_perm, shingle, ngram, fields, engine, seed, verify):
    """Near-duplicate removal with MinHash/LSH, and decontamination with --against."""
    from datakit.curate.dedup import AGAINST_FALLBACK, dedup_rows, load_inputs, write_outputs
    from datakit.curate.minhash import MinHashConfig

    flds = _fields(fields)
    cfg = MinHashConfig(num_perm=num_perm, threshold=threshold, shingle=shingle, ngram=ngram,
                        seed=seed, verify=verify)
    cfg.validate()
    data = load_inputs(inputs, flds)
    ag = None
    if against:
        ag = load_inputs(list(against), flds, role="--against", fallback=flds + AGAINST_FALLBACK)
    with stage("dedup", list(inputs), [out]) as st:
        p, task = _progress(len(data.rows), "dedup")
        with p:
            def step(what: str, k: int) -> None:
                p.update(task, completed=k, description=f"dedup: {what}")

            result = dedup_rows(data.rows, cfg=cfg, fields=flds, against=ag, engine=engine,
                                progress=step)
        written = write_outputs(data, result, out, "dedup")
        _log_counts(st, result, written, data.reviewed)
    _summary(f"dedup ({engine})", result, written, data.reviewed)


COMMANDS = [filter_cmd, dedup_cmd]
