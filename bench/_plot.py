"""What the bench/plot_*.py scripts share: their two options and an offline matplotlib."""

from __future__ import annotations

import argparse
from pathlib import Path


def start(doc: str, default_out: str):
    """Parse ``--results DIR`` and ``--out FILE.png``; returns (results folder, out path, pyplot)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--results", default="bench/results")
    ap.add_argument("--out", default=default_out)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return Path(args.results), args.out, plt
