"""Training data: read and check export rows, tokenize with the model's chat template, pack.

SFT rows are ``{"messages": [{"role", "content"}, ...], ...metadata}``; DPO rows are
``{"prompt": [messages], "chosen": [assistant message(s)], "rejected": [...]}`` (TRL style).
Both come as JSONL or Parquet (read through :mod:`datakit.records`).

Labels: only assistant tokens are trained. The conversation is rendered once with the chat
template; each assistant turn's character span is found by rendering the conversation up to
that turn with and without it, and a token is labelled when its characters fall inside such a
span (so multi-turn conversations train every assistant turn and nothing else).

Packing: examples are laid end to end into rows of ``max_len`` tokens; each keeps its own
position ids (restarting at 0) and its own attention block (see :mod:`datakit.train.attention`),
and the next-token target never crosses from one example into the next.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datakit.errors import UserError
from datakit.records import read_table

IGNORE = -100
ROLES = ("system", "user", "assistant")

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


# --------------------------------------------------------------------------- reading rows

def _check_messages(msgs: Any, path: str, line: int, name: str, *, assistant_only: bool = False) -> list[dict]:
    if not isinstance(msgs, list) or not msgs:
        raise UserError("expected a non-empty list of messages", path=path, line=line, field=name)
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise UserError("each message must be an object with role and content", path=path, line=line,
                            field=f"{name}[{i}]")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}, got {role!r}", path=path, line=line,
                            field=f"{name}[{i}].role")
        if assistant_only and role != "assistant":
            raise UserError(f"expected an assistant message, got {role!r}", path=path, line=line,
                            field=f"{name}[{i}].role")
        if not isinstance(content, str):
            raise UserError("content must be text", path=path, line=line, field=f"{name}[{i}].content")
        out.append({"role": role, "content": content})
    return out


def read_sft_rows(path: str | Path) -> list[list[dict]]:
    """The conversations of an SFT export; each must hold at least one assistant turn."""
    path = str(path)
    convs = []
    for line, row in enumerate(read_table(path), 1):
        if "messages" not in row:
            hint = " (this looks like a DPO file: use --method dpo)" if "chosen" in row else ""
            raise UserError("missing 'messages'" + hint, path=path, line=line, field="messages")
        msgs = _check_messages(row["messages"], path, line, "messages")
        if not any(m["role"] == "assistant" for m in msgs):
            raise UserError("no assistant message to train on", path=path, line=line, field="messages")
        convs.append(msgs)
    if not convs:
        raise UserError("no rows", path=path)
    return convs


def read_dpo_rows(path: str | Path) -> list[dict[str, list[dict]]]:
    """The preference pairs of a DPO export (prompt messages, chosen and rejected replies)."""
    path = str(path)
    pairs = []
    for line, row in enumerate(read_table(path), 1):
        for key in ("prompt", "chosen", "rejected"):
            if key not in row:
                hint = " (this looks like an SFT file: use --method sft)" if "messages" in row else ""
                raise UserError(f"missing '{key}'" + hint, path=path, line=line, field=key)
        prompt = row["prompt"]
        if isinstance(prompt, str):  # a bare prompt string is a single user turn
            prompt = [{"role": "user", "content": prompt}]
        pairs.append({
            "prompt": _check_messages(prompt, path, line, "prompt"),
            "chosen": _check_messages(row["chosen"], path, line, "chosen", assistant_only=True),
            "rejected": _check_messages(row["rejected"], path, line, "rejected", assistant_only=True),
        })
    if not pairs:
        raise UserError("no rows", path=path)
    return pairs


def split_eval(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """A fixed held-out share (at least one row when fraction > 0 and there are 2+ rows)."""
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_eval = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
    held = set(idx[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


# --------------------------------------------------------------------------- tokenizing

@dataclass
class Example:
    """One tokenized sequence: ids and a label flag per token (True = trained)."""

    ids: list[int]
    trained: list[bool]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class EncodeStats:
    examples: int = 0
    truncated: int = 0
    dropped_empty: int = 0  # nothing left to train on after truncation
    tokens: int = 0
    trained_tokens: int = 0
    lost_tokens: int = 0  # cut off by truncation

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give a tokenizer without a chat template the ChatML one; True when it already had one."""
    if getattr(tokenizer, "chat_template", None):
        return True
    tokenizer.chat_template = CHATML_TEMPLATE
    return False


def _render(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer: Any, messages: list[dict], first: int = 0) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns from message
    index ``first`` on (DPO trains only the reply after the prompt)."""
    text = _render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or i < first:
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = _render(tokenizer, messages[: i + 1])
        if not text.startswith(before) or not text.startswith(upto[: len(before)]):
            # a template that rewrites earlier turns (e.g. strips reasoning): fall back to
            # locating the reply's content in the final text after the previous span
            start = text.find(m["content"], spans[-1][1] if spans else 0)
            if start < 0:
                continue
            spans.append((start, start + len(m["content"])))
            continue
        end = len(upto) if text.startswith(upto) else len(before) + len(m["content"])
        spans.append((len(before), end))
    return text, spans


def encode(tokenizer: Any, messages: list[dict], first: int = 0) -> Example:
    """Tokenize a conversation; tokens inside assistant spans are trained."""
    text, spans = assistant_spans(tokenizer, messages, first)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    trained = []
    j = 0
    for (s, e) in enc["offset_mapping"]:
        while j < len(spans) and spans[j][1] <= s:
            j += 1
        trained.append(j < len(spans) and e > spans[j][0] and s < spans[j][1] and e > s)
    return Example(ids, trained)


def truncate(ex: Example, max_len: int, stats: EncodeStats) -> Example | None:
    stats.examples += 1
    if len(ex) > max_len:
        stats.truncated += 1
        stats.lost_tokens += len(ex) - max_len
        ex = Example(ex.ids[:max_len], ex.trained[:max_len])
    n_trained = sum(ex.trained[1:])  # the first token is never a target
    if n_trained == 0:
        stats.dropped_empty += 1
        return None
    stats.tokens += len(ex)
    stats.trained_tokens += n_trained
    return ex


def encode_sft(tokenizer: Any, convs: list[list[dict]], max_len: int) -> tuple[list[Example], EncodeStats]:
    stats = EncodeStats()
    out = []
    for msgs in convs:
        ex = truncate(encode(tokenizer, msgs), max_len, stats)
        if ex is not None:
            out.append(ex)
    return out, stats


@dataclass
class Pair:
    chosen: Example
    rejected: Example


def encode_dpo(tokenizer: Any, pairs: list[dict], max_len: int) -> tuple[list[Pair], EncodeStats]:
    stats = EncodeStats()
    out = []
    for p in pairs:
        n = len(p["prompt"])
        c = truncate(encode(tokenizer, p["prompt"] + p["chosen"], first=n), max_len, stats)
        r = truncate(encode(tokenizer, p["prompt"] + p["rejected"], first=n), max_len, stats)
        if c is not None and r is not None:
            out.append(Pair(c, r))
    return out, stats


# --------------------------------------------------------------------------- batches

@dataclass
class Batch:
    """A flat row of one or more sequences laid end to end (shape [1, T] once on a device).

    ``targets[t]`` is the token that position ``t`` must predict, or IGNORE; it never points
    across a sequence boundary. ``cu_seqlens`` are the sequence starts plus the total length.
    """

    input_ids: list[int]
    position_ids: list[int]
    targets: list[int]
    cu_seqlens: list[int]
    seq_index: list[int] = field(default_factory=list)  # per token: which sequence (for DPO sums)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_targets(self) -> int:
        return sum(1 for t in self.targets if t != IGNORE)


def make_batch(seqs: list[Example]) -> Batch:
    ids, pos, tgt, cu, sidx = [], [], [], [0], []
    for k, ex in enumerate(seqs):
        n = len(ex)
        ids.extend(ex.ids)
        pos.extend(range(n))
        tgt.extend(ex.ids[t + 1] if ex.trained[t + 1] else IGNORE for t in range(n - 1))
        tgt.append(IGNORE)
        cu.append(cu[-1] + n)
        sidx.extend([k] * n)
    return Batch(ids, pos, tgt, cu, sidx)


def pack(examples: list[Example], max_len: int) -> list[list[int]]:
    """Group example indexes into rows of at most ``max_len`` tokens (first fit, in order of
    decreasing length so rows fill well). Returns the groups; order is shuffled by the caller."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = len(examples[i])
        for r, free in enumerate(room):
            if free >= n:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(max_len - n)
    return rows


def budget_groups(order: list[int], sizes: list[int], budget: int) -> list[list[int]]:
    """Cut ``order`` into runs of consecutive items whose ``sizes`` (tokens) add up to at most
    ``budget``; an item larger than the budget goes alone. The items keep their order."""
    groups: list[list[int]] = []
    used = budget + 1
    for i in order:
        n = sizes[i]
        if used + n > budget:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += n
    return groups


def _epoch_orders(n: int, epochs: float, seed: int) -> list[list[int]]:
    """Item order of each epoch (epoch e shuffled with ``seed + e``); a fractional last epoch
    takes the start of its order (at least one item)."""
    full = int(epochs)
    frac = epochs - full
    orders = []
    e = 0
    while e < full or (e == full and frac > 0):
        order = list(range(n))
        random.Random(seed + e).shuffle(order)
        if e == full:
            order = order[: max(1, round(len(order) * frac))]
        orders.append(order)
        e += 1
    return orders


def _cut(order: list[int], sizes: list[int], batch_size: int, budget: int | None) -> list[list[int]]:
    if budget:
        return budget_groups(order, sizes, budget)
    return [order[s: s + batch_size] for s in range(0, len(order), batch_size)]


def sft_schedule(examples: list[Example], *, max_len: int, batch_size: int, pack_rows: bool,
                 epochs: float, seed: int, budget: int | None = None) -> list[list[int]]:
    """Micro-batches (lists of example indexes) for the whole run, in a fixed order for ``seed``:
    epoch e is shuffled with ``seed + e``, so a resumed run sees exactly the same batches.

    Packed: ``batch_size`` packed rows a micro-batch. Unpacked: consecutive examples of the
    epoch's order up to ``budget`` tokens a micro-batch (each still its own sequence), or
    ``batch_size`` examples when ``budget`` is None."""
    if pack_rows:
        groups = pack(examples, max_len)
        micro: list[list[int]] = []
        for order in _epoch_orders(len(groups), epochs, seed):
            for s in range(0, len(order), batch_size):
                micro.append([i for g in order[s: s + batch_size] for i in groups[g]])
        return micro
    sizes = [len(ex) for ex in examples]
    return [mb for order in _epoch_orders(len(examples), epochs, seed)
            for mb in _cut(order, sizes, batch_size, budget)]


def dpo_schedule(n_pairs: int, *, batch_size: int, epochs: float, seed: int,
                 sizes: list[int] | None = None, budget: int | None = None) -> list[list[int]]:
    """Micro-batches of pair indexes: consecutive pairs of each epoch's order up to ``budget``
    tokens (chosen + rejected, ``sizes``) a micro-batch, or ``batch_size`` pairs when
    ``budget`` is None."""
    if budget and sizes is None:
        raise ValueError("a token budget needs the pair sizes")
    return [mb for order in _epoch_orders(n_pairs, epochs, seed)
            for mb in _cut(order, sizes or [], batch_size, budget)]


def pair_sizes(pairs: list[Pair]) -> list[int]:
    return [len(p.chosen) + len(p.rejected) for p in pairs]


def eval_batches(items: list, sizes: list[int], *, batch_size: int, budget: int | None) -> list[list[int]]:
    """Evaluation micro-batches for DPO or unpacked SFT: the items in order, cut like training."""
    return _cut(list(range(len(items))), sizes, batch_size, budget)


def shard(batches: list, world: int, rank: int) -> list:
    """Process ``rank``'s share of one step's micro-batches (or of the eval batches) when ``world``
    processes train together: every ``world``-th one, from the ``rank``-th on. Shares differ by
    at most one and can be empty (a short last step, fewer eval batches than processes), so the
    caller must not let the number it got decide what it sends to the others."""
    return batches[rank::world]
