"""Charts for the card: matplotlib with the Agg backend (no display, nothing fetched), one PNG
per chart, returned as bytes. Text in charts is ASCII only (DejaVu Sans, which matplotlib
ships, has no CJK glyphs): Chinese leading words are shown in a table instead."""

from __future__ import annotations

import io
from typing import Any, Sequence

from datakit.errors import UserError

BLUE, ORANGE, GREY, RED, GREEN = "#3b6ea8", "#e08a2c", "#9aa5b1", "#c0392b", "#2e8b57"
PALETTE = [BLUE, ORANGE, GREEN, "#8e5ea2", RED, "#17a2b8"]


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a one-line error saying how to get it."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("datakit report needs matplotlib: pip install 'datakit[train]' "
                        "(or pip install matplotlib==3.11.2)") from None
    matplotlib.use("Agg", force=True)
    import logging

    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.titlesize": 10, "axes.titleweight": "bold", "figure.dpi": 100,
                         "svg.fonttype": "none", "axes.grid": True, "grid.alpha": 0.25})
    return plt


def _png(fig) -> bytes:
    plt = pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _ascii(s: Any, n: int = 28) -> str:
    t = str(s).encode("ascii", "replace").decode("ascii")
    return t if len(t) <= n else t[: n - 1] + "~"


def hbar(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str = "",
         colors: Sequence[str] | None = None, size: tuple[float, float] = (7.2, 3.2)) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(size[0], max(size[1], 0.32 * len(labels) + 0.9)))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=colors or BLUE)
    ax.set_yticks(y, [_ascii(l, 34) for l in labels])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", alpha=0)
    top = max(values) if values else 1
    for yi, v in zip(y, values):
        ax.text(v + top * 0.01, yi, f"{v:,.0f}" if float(v).is_integer() else f"{v:,.3g}", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.15 if top else 1)
    return _png(fig)


def histograms(hists: dict[str, dict[str, Any]], title: str, xlabel: str,
               vline: float | None = None, size: tuple[float, float] = (7.2, 3.0)) -> bytes:
    """Several histograms (label -> histogram dict from stats.histogram) as stepped bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=size)
    for i, (label, h) in enumerate(hists.items()):
        if not h.get("n"):
            continue
        edges, counts = h["edges"], h["counts"]
        ax.stairs(counts, edges, fill=len(hists) == 1, alpha=0.55 if len(hists) == 1 else 1.0, lw=1.6,
                  color=PALETTE[i % len(PALETTE)], label=f"{_ascii(label)} (n={h['n']:,})")
    if vline is not None:
        ax.axvline(vline, color=RED, ls="--", lw=1.2, label=f"threshold {vline:g}")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def verbs(top: list[dict[str, Any]], title: str) -> bytes:
    """Leading verbs with their most common objects stacked in each bar."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.6, max(3.0, 0.3 * len(top) + 1.0)))
    y = list(range(len(top)))[::-1]
    for yi, v in zip(y, top):
        left = 0
        for k, (obj, n) in enumerate(v["objects"]):
            ax.barh(yi, n, left=left, color=PALETTE[k % len(PALETTE)], alpha=0.85, edgecolor="white")
            if n >= 0.12 * top[0]["n"]:
                ax.text(left + n / 2, yi, _ascii(obj, 12), ha="center", va="center", fontsize=7, color="white")
            left += n
        if v["n"] > left:
            ax.barh(yi, v["n"] - left, left=left, color=GREY, alpha=0.6, edgecolor="white")
    ax.set_yticks(y, [_ascii(v["verb"], 20) for v in top])
    ax.set_title(title)
    ax.set_xlabel("instructions (segments: most common objects; grey: other objects)")
    ax.grid(axis="y", alpha=0)
    return _png(fig)


def losses(runs: list[dict[str, Any]], title: str) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 3.2))
    for i, r in enumerate(runs):
        c = r["curves"]
        color = PALETTE[i % len(PALETTE)]
        if c["loss"]:
            ax.plot(c["steps"], c["loss"], color=color, lw=1.2, alpha=0.8, label=f"{_ascii(r['dir'])} train")
        if c["eval_loss"]:
            ax.plot(c["eval_steps"], c["eval_loss"], "o--", color=color, lw=1.4, ms=4, label=f"{_ascii(r['dir'])} eval")
        if r.get("eval_loss_base") is not None:
            ax.axhline(r["eval_loss_base"], color=color, ls=":", lw=1.2, label=f"{_ascii(r['dir'])} base eval")
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)
