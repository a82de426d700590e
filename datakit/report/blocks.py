"""The card as data: a title, a summary box, warnings and sections made of simple blocks
(paragraphs, notes, tables, images, examples) that :mod:`render` turns into Markdown and HTML.

Blocks are dicts: ``{"t": "p"|"note", "text"}``, ``{"t": "table", "head", "rows"}``,
``{"t": "img", "name", "alt"}``, ``{"t": "examples", "title", "items": [{"title", "fields"}]}``.
Chart PNGs are made here (``Card.images``: name -> bytes) from the same numbers as report.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Card:
    title: str
    summary: list[tuple[str, str]]
    warnings: list[str]
    sections: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)


def fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if pct and isinstance(v, (int, float)):
        return f"{v:.1%}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def usd(v: Any) -> str:
    return "n/a" if v is None else f"${v:,.4f}"


def p(text: str) -> dict[str, Any]:
    return {"t": "p", "text": text}


def note(text: str) -> dict[str, Any]:
    return {"t": "note", "text": text}


def table(head: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"t": "table", "head": head, "rows": [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]}


def img(card: Card, name: str, data: bytes, alt: str) -> dict[str, Any]:
    card.images[name] = data
    return {"t": "img", "name": name, "alt": alt}


def examples(title: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"t": "examples", "title": title, "items": items}


def not_run(what: str, how: str) -> dict[str, Any]:
    return note(f"not run: {what} (run `{how}`).")


def summary_pairs(rep: dict[str, Any]) -> list[tuple[str, str]]:
    s = rep["summary"]
    langs = ", ".join(f"{k} {v:.0%}" for k, v in list(s["languages"].items())[:3]) or "n/a"
    rows = [("accepted records", fmt(s["accepted_records"])),
            ("candidates proposed", fmt(s["candidates_proposed"])),
            ("acceptance rate", fmt(s["acceptance_rate"], pct=True)),
            ("languages", langs), ("classification tasks", fmt(s["classification_share"], pct=True)),
            ("records judged", fmt(s["records_judged"])),
            ("mean candidate score (1-10)", fmt(s["mean_candidate_score"])),
            ("judge position bias", fmt(s["position_bias_rate"], pct=True)),
            ("SFT rows / DPO pairs", f"{fmt(s['sft_rows'])} / {fmt(s['dpo_pairs'])}"),
            ("teacher requests / cost", f"{fmt(s['requests'])} / {usd(s['cost_usd'])}"),
            ("wall time (logged stages)", "n/a" if s["wall_s"] is None else f"{s['wall_s']:,.1f} s")]
    if s["validation_verdict"]:
        rows.append(("validation", s["validation_verdict"]))
    return rows
