"""Write the card: report.json (every number), card.md with PNGs beside it, and card.html, one
self-contained file (charts as data: URIs, inline CSS, no script, nothing fetched). Every file
is written atomically."""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from datakit.records import atomic_write_bytes, atomic_write_text
from datakit.report import sections_pipeline as sp
from datakit.report import sections_results as sr
from datakit.report.blocks import Card, summary_pairs
from datakit.report.collect import collect
from datakit.report.files import CARD_DIR, Progress
from datakit.report.style import CSS


@dataclass
class ReportResult:
    out: Path
    report: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def build_card(rep: dict[str, Any]) -> Card:
    card = Card(title=f"Data card: {rep['run']}", summary=summary_pairs(rep), warnings=list(rep["warnings"]))
    for make in (sp.funnel, sp.data, sr.judge, sr.reviews, sr.lineage_cost, sr.validation):
        card.sections.append(make(rep, card))
    return card


def _md_cell(s: Any) -> str:
    return " ".join(str(s).split()).replace("|", "\\|") or " "


def _md_block(b: dict[str, Any]) -> str:
    t = b["t"]
    if t == "p":
        return b["text"]
    if t == "note":
        return f"> {b['text']}"
    if t == "img":
        return f"![{b['alt']}]({b['name']})"
    if t == "table":
        head = "| " + " | ".join(_md_cell(h) for h in b["head"]) + " |"
        sep = "|" + "|".join("---" for _ in b["head"]) + "|"
        return "\n".join([head, sep] + ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b["rows"]])
    lines = [f"<details><summary>{html.escape(b['title'], quote=False)}</summary>", ""]
    for it in b["items"]:
        lines.append(f"**{html.escape(it['title'], quote=False)}**")
        lines.append("")
        lines += [f"- *{k}*: {html.escape(_md_cell(v), quote=False)}" for k, v in it["fields"]]
        lines.append("")
    return "\n".join(lines + ["</details>"])


def to_markdown(card: Card) -> str:
    parts = [f"# {card.title}", ""]
    if card.warnings:
        parts += ["> **Warnings**", ">"] + [f"> - {w}" for w in card.warnings]
    parts += ["", "| key number | value |", "|---|---|"] + [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in card.summary]
    for s in card.sections:
        parts += ["", f"## {s['title']}", ""]
        for b in s["blocks"]:
            parts += [_md_block(b), ""]
    return "\n".join(parts).rstrip() + "\n"


def _html_block(b: dict[str, Any], images: dict[str, bytes]) -> str:
    e, t = html.escape, b["t"]
    if t == "p":
        return f"<p>{e(b['text'])}</p>"
    if t == "note":
        return f'<p class="note">{e(b["text"])}</p>'
    if t == "img":
        data = base64.b64encode(images[b["name"]]).decode("ascii")
        return f'<figure><img alt="{e(b["alt"])}" src="data:image/png;base64,{data}"></figure>'
    if t == "table":
        head = "".join(f"<th>{e(str(h))}</th>" for h in b["head"])
        rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b["rows"])
        return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
    items = "".join(f'<div class="ex"><div class="ex-title">{e(it["title"])}</div><dl>'
                    + "".join(f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in it["fields"]) + "</dl></div>"
                    for it in b["items"])
    return f"<details><summary>{e(b['title'])}</summary>{items}</details>"


def to_html(card: Card) -> str:
    e = html.escape
    warn = "".join(f'<li>{e(w)}</li>' for w in card.warnings)
    box = "".join(f"<div class=\"kv\"><span>{e(k)}</span><b>{e(v)}</b></div>" for k, v in card.summary)
    nav = " · ".join(f'<a href="#{s["id"]}">{e(s["title"])}</a>' for s in card.sections)
    body = "".join(f'<section id="{s["id"]}"><h2>{e(s["title"])}</h2>'
                   + "".join(_html_block(b, card.images) for b in s["blocks"]) + "</section>" for s in card.sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(card.title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{e(card.title)}</h1>"
            + (f'<ul class="warnings">{warn}</ul>' if warn else "")
            + f'<div class="summary">{box}</div><nav>{nav}</nav>{body}'
            f'<footer>Made by datakit report. Numbers: report.json.</footer></main></body></html>\n')


def build_report(run: str | Path, out: str | Path | None = None, progress: Progress | None = None,
                 status: Callable[[str], None] | None = None) -> ReportResult:
    """Read ``run`` and write card.html, card.md, report.json and the PNGs into ``out``
    (default ``RUN/card``)."""
    t0 = time.monotonic()
    run = Path(run)
    from datakit.report.plots import pyplot

    pyplot()  # fail early, in one line, when matplotlib is missing
    rep = collect(run, progress, status)
    (status or (lambda _m: None))("drawing charts and writing the card")
    out = Path(out) if out is not None else run / CARD_DIR
    card = build_card(rep)
    rep["images"] = sorted(card.images)
    res = ReportResult(out=out, report=rep)
    for name, data in sorted(card.images.items()):
        atomic_write_bytes(out / name, data)
        res.files.append(out / name)
    atomic_write_text(out / "card.md", to_markdown(card))
    atomic_write_text(out / "card.html", to_html(card))
    atomic_write_text(out / "report.json", json.dumps(rep, ensure_ascii=False, indent=1, default=str) + "\n")
    res.files += [out / "card.html", out / "card.md", out / "report.json"]
    res.seconds = time.monotonic() - t0
    return res
