"""The data card: ``datakit report RUN`` turns a run directory into card.html, card.md,
report.json and PNG charts.

Modules, in the order the data flows:

* :mod:`files`      streaming JSONL reader, run-directory detection, artefact discovery;
* :mod:`stages`     the stage log ``stages.jsonl`` (wall time, usage, curation/export counts);
* :mod:`text`       tokenizer-free length counts, language guess, leading verb/object heuristics;
* :mod:`funnel`, :mod:`shape`, :mod:`judging`, :mod:`lineage`, :mod:`validation`
                    one accumulator per card section, fed one record at a time;
* :mod:`collect`    reads the run once into plain numbers (the content of report.json);
* :mod:`plots`      matplotlib (Agg) PNGs from those numbers;
* :mod:`blocks`     the card as a list of sections and blocks (tables, images, notes);
* :mod:`render`     blocks to Markdown and to one self-contained HTML file, written atomically.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ReportResult", "build_report"]


def __getattr__(name: str) -> Any:  # lazy: importing the package does not load matplotlib
    if name in __all__:
        from datakit.report import render

        return getattr(render, name)
    raise AttributeError(name)
