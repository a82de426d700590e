"""``datakit export``: records (a run directory or a record file) to trainer-ready files.

The steps, each a pure function except the last:

1. :func:`load_for_export`: a run directory is merged from ``records.jsonl``,
   ``candidates.jsonl`` and ``judgements.jsonl``; a file is read as records (for example a
   ``judged.jsonl`` snapshot). Only ``accepted`` records are exported.
2. :func:`select_sft` / :func:`select_dpo`: one item per record, or a drop reason.
   SFT takes the best-ranked judged candidate (or the record's own output when the record was
   not judged, or with ``response="output"``); DPO takes the pair of
   :func:`datakit.judge.pairs.build_pair`.
3. Filters: ``min_score`` (SFT: the response's score; DPO: the chosen response's score; an
   unscored item is dropped when a minimum is set), ``max_len`` tokens (with a named tokenizer).
4. :func:`split_items`: a fixed-seed train/eval split.
5. :func:`export`: rows in the requested style, written atomically (JSONL or Parquet by the
   file name), plus LLaMA-Factory's ``dataset_info.json`` or an axolotl snippet.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from datakit.errors import UserError
from datakit.export import formats as F
from datakit.judge.pairs import build_pair, candidate_score, check_tie_break
from datakit.records import Record, atomic_write_json, atomic_write_text, read_records, write_table

FORMATS = ("sft", "dpo")
STYLES = ("trl", "llamafactory", "axolotl")
SUFFIXES = (".jsonl", ".parquet")


@dataclass
class ExportOptions:
    format: str = "sft"
    style: str = "trl"
    system: str | None = None
    text: bool = False
    min_score: float | None = None
    min_margin: float = 1.0
    max_len: int | None = None
    tokenizer: str | None = None
    eval_fraction: float = 0.0
    seed: int = 0
    name: str | None = None
    response: str = "best"  # SFT: "best" judged candidate, or the record's own "output"
    records: str | None = None  # a run directory: only the records in this curated file (ids)
    tie_break: str | None = None  # DPO pairs the judge cannot separate: none, temperature, teacher:NAME
    reviewed_only: bool = False  # only records a person accepted (RUN/reviews.jsonl)


@dataclass
class Item:
    """One exportable example in neutral form, before it gets a style."""

    rec: Record
    prompt: list[dict[str, str]]
    responses: list[str]  # SFT: [output]; DPO: [chosen, rejected]
    meta: dict[str, Any]
    score: float | None

    def conversations(self) -> list[list[dict[str, str]]]:
        return [self.prompt + [{"role": "assistant", "content": r}] for r in self.responses]


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)
    n_records: int = 0
    n_train: int = 0
    n_eval: int = 0
    dropped: Counter = field(default_factory=Counter)
    dataset_info: Path | None = None
    snippet: str | None = None


# --------------------------------------------------------------------------- loading

def load_for_export(path: str | Path, min_margin: float = 1.0, records: str | Path | None = None,
                    tie_break: str | None = None, reviewed_only: bool = False) -> list[Record]:
    """Accepted records of a run directory (merged) or a record file, with the human verdicts
    of the run they belong to applied (:mod:`datakit.reviews`)."""
    from datakit.reviews import apply_reviews, reviews_for

    path = Path(path)
    reviews = reviews_for([path])
    if reviewed_only and not reviews:
        raise UserError("no human verdicts: --reviewed-only needs a run directory (or a file in one) with "
                        "reviews.jsonl (review it with `datakit view`)", path=str(path), field="--reviewed-only")
    return apply_reviews(_load(path, min_margin, records, tie_break), reviews, reviewed_only)


def _load(path: Path, min_margin: float, records: str | Path | None, tie_break: str | None) -> list[Record]:
    if path.is_dir():
        from datakit.judge.store import merge_run
        from datakit.judge.work import selected_ids

        if not (path / "records.jsonl").exists():
            raise UserError("not a run directory (no records.jsonl)", path=str(path))
        return merge_run(path, min_margin, selected_ids(records) if records else None, tie_break)
    if records:
        raise UserError("--records selects records of a run directory; SOURCE is a file", field="--records")
    if not path.exists():
        raise UserError("file not found", path=str(path))
    return [r for r in read_records(path) if r.status == "accepted"]


# --------------------------------------------------------------------------- selection

def _cand_by_id(rec: Record, cid: str | None) -> dict[str, Any] | None:
    for c in rec.candidates or []:
        if c.get("id") == cid:
            return c
    return None


def select_conversation(rec: Record, opts: ExportOptions) -> Item | str:
    """The SFT item of a multi-turn record (``messages``): the whole conversation, the last
    assistant turn as the response; its score is the record's judge score when it has one."""
    bad = F.check_conversation(rec.extra["messages"])
    if bad:
        return bad
    msgs = F.conversation_messages(rec.extra["messages"], opts.system)
    if not all(m["content"].strip() for m in msgs if m["role"] == "assistant"):
        return "no_response"
    score = (rec.judge or {}).get("score")
    meta = {"id": rec.id, "response_id": "messages", "turns": sum(m["role"] == "user" for m in msgs),
            "teacher": None, "model": None, "score": score}
    return Item(rec, msgs[:-1], [msgs[-1]["content"]], meta, score)


def select_sft(rec: Record, opts: ExportOptions) -> Item | str:
    """The SFT item of a record, or the reason it has none."""
    if "messages" in rec.extra:
        return select_conversation(rec, opts)
    output, score, meta = None, None, {"id": rec.id}
    ranking = (rec.judge or {}).get("ranking") or []
    if opts.response == "best" and ranking:
        best = _cand_by_id(rec, ranking[0])
        if best is not None:
            output, score = best.get("output"), candidate_score(best)
            meta.update(response_id=best.get("id"), teacher=best.get("teacher"), model=best.get("model"))
    if output is None:
        output = rec.output
        cand = _cand_by_id(rec, "output")
        score = candidate_score(cand) if cand else None
        lin = rec.lineage or {}
        meta.update(response_id="output", teacher=lin.get("teacher"), model=lin.get("model"))
    if not (output or "").strip():
        return "no_response"
    meta["score"] = score
    return Item(rec, F.prompt_messages(rec.instruction, rec.input, opts.system), [output], meta, score)


def _human_dpo(rec: Record, pair: dict[str, Any], opts: ExportOptions) -> Item | str:
    """The pair a person chose in ``datakit view`` (it overrides the judge's)."""
    ch, rj = _cand_by_id(rec, pair["chosen"]), _cand_by_id(rec, pair["rejected"])
    if not (ch and rj and (ch.get("output") or "").strip() and (rj.get("output") or "").strip()):
        return "no_response"
    if ch["output"] == rj["output"]:
        return "identical_outputs"
    cs, rs = candidate_score(ch), candidate_score(rj)
    meta = {"id": rec.id, "chosen_id": ch["id"], "rejected_id": rj["id"], "chosen_score": cs, "rejected_score": rs,
            "margin": None if cs is None or rs is None else round(cs - rs, 4), "chosen_model": ch.get("model"),
            "rejected_model": rj.get("model"), "basis": "human"}
    return Item(rec, F.prompt_messages(rec.instruction, rec.input, opts.system), [ch["output"], rj["output"]], meta, cs)


def select_dpo(rec: Record, opts: ExportOptions) -> Item | str:
    if "messages" in rec.extra:
        return "multi_turn"  # preference pairs are single-turn for now
    from datakit.reviews import human_pair

    human = human_pair(rec)
    if human is not None:
        return _human_dpo(rec, human, opts)
    pairwise = (rec.judge or {}).get("pairwise") or []
    if not rec.candidates or not any(c.get("judge") for c in rec.candidates) and not pairwise:
        return "not_judged"
    d = build_pair(rec.candidates, pairwise, opts.min_margin, opts.tie_break)
    if not d.kept:
        return d.reason or "no_pair"
    ch, rj = _cand_by_id(rec, d.chosen), _cand_by_id(rec, d.rejected)
    meta = {"id": rec.id, "chosen_id": d.chosen, "rejected_id": d.rejected,
            "chosen_score": d.chosen_score, "rejected_score": d.rejected_score, "margin": d.margin,
            "chosen_model": ch.get("model"), "rejected_model": rj.get("model"), "basis": d.basis}
    return Item(rec, F.prompt_messages(rec.instruction, rec.input, opts.system),
                [ch["output"], rj["output"]], meta, d.chosen_score)


def select_items(records: list[Record], opts: ExportOptions,
                 tokenizer_loader: Callable[[str], Any] | None = None) -> tuple[list[Item], Counter]:
    """Items that pass every filter, and the count of drops by reason."""
    dropped: Counter = Counter()
    items: list[Item] = []
    pick = select_sft if opts.format == "sft" else select_dpo
    for rec in records:
        it = pick(rec, opts)
        if isinstance(it, str):
            dropped[it] += 1
            continue
        if opts.min_score is not None:
            if it.score is None:
                dropped["unscored"] += 1
                continue
            if it.score < opts.min_score:
                dropped["below_min_score"] += 1
                continue
        items.append(it)
    if opts.max_len is not None and items:
        from datakit.export.tokens import conversation_lengths, load_tokenizer

        tok = (tokenizer_loader or load_tokenizer)(opts.tokenizer)
        convs = [c for it in items for c in it.conversations()]
        lengths = conversation_lengths(tok, convs)
        kept, pos = [], 0
        for it in items:
            n = len(it.responses)
            longest = max(lengths[pos:pos + n])
            pos += n
            if longest > opts.max_len:
                dropped["too_long"] += 1
            else:
                it.meta["n_tokens"] = longest
                kept.append(it)
        items = kept
    return items, dropped


def split_items(items: list[Item], eval_fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """A fixed-seed split: order items by sha256(seed:id), the first ``round(f*n)`` are eval
    (at least 1 and at most n-1 when f > 0 and n >= 2). Train and eval keep input order.
    Depends only on the seed and the ids, not on the order of the input."""
    if eval_fraction <= 0 or len(items) < 2:
        return list(items), []
    n = len(items)
    k = min(n - 1, max(1, round(eval_fraction * n)))
    order = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}:{items[i].rec.id}".encode()).hexdigest())
    eval_idx = set(order[:k])
    return [it for i, it in enumerate(items) if i not in eval_idx], [items[i] for i in sorted(eval_idx)]


# --------------------------------------------------------------------------- styling

def to_row(it: Item, opts: ExportOptions) -> dict[str, Any]:
    r = it.rec
    if opts.format == "sft" and "messages" in r.extra:
        msgs = it.conversations()[0]
        if opts.style == "llamafactory":
            return F.sft_row_sharegpt_conversation(msgs, meta=it.meta)
        return F.sft_row_conversation(msgs, with_text=opts.text, meta=it.meta)
    if opts.format == "sft":
        if opts.style == "llamafactory":
            return F.sft_row_sharegpt(r.instruction, r.input, it.responses[0], system=opts.system, meta=it.meta)
        return F.sft_row(r.instruction, r.input, it.responses[0], system=opts.system,
                         with_text=opts.text, meta=it.meta)
    if opts.style == "llamafactory":
        return F.dpo_row_sharegpt(r.instruction, r.input, it.responses[0], it.responses[1],
                                  system=opts.system, meta=it.meta)
    return F.dpo_row_trl(r.instruction, r.input, it.responses[0], it.responses[1],
                         system=opts.system, meta=it.meta)


# --------------------------------------------------------------------------- writing

def validate_options(opts: ExportOptions) -> None:
    if opts.format not in FORMATS:
        raise UserError(f"unknown format '{opts.format}' (choose from {', '.join(FORMATS)})", field="--format")
    if opts.style not in STYLES:
        raise UserError(f"unknown style '{opts.style}' (choose from {', '.join(STYLES)})", field="--style")
    if opts.style == "axolotl" and opts.format != "sft":
        raise UserError("--style axolotl is for --format sft; use --style trl for DPO", field="--style")
    if opts.text and opts.style == "llamafactory":
        raise UserError("--text is for the messages styles (trl, axolotl)", field="--text")
    if not 0 <= opts.eval_fraction < 1:
        raise UserError("must be at least 0 and below 1", field="--eval-fraction")
    if opts.max_len is not None:
        if opts.max_len < 1:
            raise UserError("must be a positive number of tokens", field="--max-len")
        if not opts.tokenizer:
            raise UserError("--max-len needs --tokenizer (a folder, a .gguf file, a cached model id, or 'smollm2')",
                            field="--tokenizer")
    if opts.min_margin < 0:
        raise UserError("must be 0 or more", field="--min-margin")
    if opts.response not in ("best", "output"):
        raise UserError("must be 'best' or 'output'", field="--response")
    try:
        opts.tie_break = check_tie_break(opts.tie_break)
    except ValueError as e:
        raise UserError(str(e), field="--tie-break") from None


def output_paths(out: Path, opts: ExportOptions) -> tuple[Path, Path]:
    """(train file, eval file). LLaMA-Factory accepts a folder (file named after the dataset)."""
    name = opts.name or f"datakit_{opts.format}"
    if opts.style == "llamafactory" and out.suffix.lower() not in SUFFIXES:
        if out.exists() and not out.is_dir():
            raise UserError("exists and is not a folder", path=str(out), field="--out")
        out = out / f"{name}.jsonl"
    if out.suffix.lower() not in SUFFIXES:
        raise UserError("output file must end in .jsonl or .parquet", path=str(out), field="--out")
    if out.is_dir():
        raise UserError("is a folder, expected a file name", path=str(out), field="--out")
    return out, out.with_name(out.stem + ".eval" + out.suffix)


def _write_dataset_info(folder: Path, entries: dict[str, Any]) -> Path:
    path = folder / "dataset_info.json"
    info: dict[str, Any] = {}
    if path.exists():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"existing file is not valid JSON ({getattr(e, 'msg', e)})", path=str(path)) from None
        if not isinstance(info, dict):
            raise UserError("existing file is not a JSON object", path=str(path))
    info.update(entries)
    atomic_write_json(path, info)
    return path


def export(source: str | Path | list[Record], out: str | Path, opts: ExportOptions,
           tokenizer_loader: Callable[[str], Any] | None = None) -> ExportResult:
    """Export records to ``out`` (see the module docstring). Raises UserError when nothing is left."""
    validate_options(opts)
    train_path, eval_path = output_paths(Path(out), opts)
    records = source if isinstance(source, list) else load_for_export(
        source, opts.min_margin, opts.records, opts.tie_break, opts.reviewed_only)
    res = ExportResult(n_records=len(records))
    items, res.dropped = select_items(records, opts, tokenizer_loader)
    if not items:
        why = ", ".join(f"{k}={v}" for k, v in res.dropped.most_common()) or "no accepted records"
        hint = " (run `datakit judge` first)" if res.dropped.get("not_judged") else ""
        raise UserError(f"nothing to export from {len(records)} records ({why}){hint}")
    train, ev = split_items(items, opts.eval_fraction, opts.seed)
    write_table(train_path, [to_row(it, opts) for it in train])
    res.files.append(train_path)
    if ev:
        write_table(eval_path, [to_row(it, opts) for it in ev])
        res.files.append(eval_path)
    elif eval_path.exists():
        eval_path.unlink()  # a stale eval file from an earlier export would mislead
    res.n_train, res.n_eval = len(train), len(ev)
    if opts.style == "llamafactory":
        name = opts.name or f"datakit_{opts.format}"
        folder = train_path.parent
        entries = {name: F.llamafactory_entry(train_path.name, ranking=opts.format == "dpo")}
        if ev:
            entries[f"{name}_eval"] = F.llamafactory_entry(eval_path.name, ranking=opts.format == "dpo")
        res.dataset_info = _write_dataset_info(folder, entries)
    elif opts.style == "axolotl":
        res.snippet = F.axolotl_snippet(str(train_path.resolve()), str(eval_path.resolve()) if ev else None)
        snip = train_path.with_name(train_path.stem + ".axolotl.yml")
        atomic_write_text(snip, res.snippet)
        res.files.append(snip)
    return res
